"""The first hour's mistakes: each answer says what to do instead, and the next valid request succeeds."""

from __future__ import annotations

from typing import Any

from tests.support import app_client
from worker.config import Settings

JSON = {"Accept": "application/json"}
OK = {"prompt": "a cat", "steps": 2, "width": 64, "height": 64}
# other servers' names for our fields (A1111, diffusers, OpenAI) → ours
SPELLINGS = {
    "num_steps": "steps",
    "num_inference_steps": "steps",
    "cfg_scale": "guidance_scale",
    "sampler_name": "scheduler",
    "batch_size": "num_samples",
    "denoising_strength": "strength",
    "init_images": "image",
    "n": "num_samples",
}


async def test_every_unknown_field_is_named_at_once_with_ours(client_for: Any) -> None:
    async with client_for("sd15") as client:
        wrong = {"prompt": "a cat", "promt": "typo", "width": 64, "height": 64, **dict.fromkeys(SPELLINGS, 2)}
        response = await client.post("/execute", json=wrong, headers=JSON)
        assert response.status_code == 422
        error = response.json()["error"]
        for theirs, ours in SPELLINGS.items():
            assert f"unknown field '{theirs}' (did you mean '{ours}'?)" in error["message"]
        assert "unknown field 'promt' (did you mean 'prompt'?)" in error["message"]
        assert error["field"] == "promt"
        assert (await client.post("/execute", json=OK, headers=JSON)).status_code == 200


async def test_unknown_fields_and_bad_values_come_in_one_answer(client_for: Any) -> None:
    async with client_for("sd15") as client:
        response = await client.post("/execute", json={**OK, "steps": 0, "cfg_scale": 7}, headers=JSON)
        message = response.json()["error"]["message"]
        assert response.status_code == 422
        assert "steps: Input should be greater than or equal to 1" in message
        assert "unknown field 'cfg_scale' (did you mean 'guidance_scale'?)" in message


async def test_a_body_without_a_json_content_type_says_which_header_to_send(client_for: Any) -> None:
    body = b'{"prompt": "a cat", "steps": 2, "width": 64, "height": 64}'
    async with client_for("sd15") as client:
        # curl -d sends application/x-www-form-urlencoded unless told otherwise
        for content_type in ("application/x-www-form-urlencoded", None):
            headers = {**JSON, **({"Content-Type": content_type} if content_type else {})}
            response = await client.post("/execute", content=body, headers=headers)
            assert response.status_code == 415, response.text
            error = response.json()["error"]
            assert error["code"] == "unsupported_media_type"
            assert "Content-Type: application/json" in error["message"]
        fixed = await client.post("/execute", content=body, headers={**JSON, "Content-Type": "application/json"})
        assert fixed.status_code == 200


async def test_an_empty_body_shows_what_to_send(client_for: Any) -> None:
    async with client_for("sd15") as client:
        response = await client.post("/execute", headers={**JSON, "Content-Type": "application/json"})
        assert response.status_code == 400
        assert 'send a JSON object such as {"prompt":' in response.json()["error"]["message"]


async def test_the_wrong_method_names_the_right_one(client_for: Any) -> None:
    async with client_for("sd15") as client:
        response = await client.get("/execute")
        assert response.status_code == 405
        assert response.headers["allow"] == "POST"
        assert response.json()["error"]["message"] == "GET is not allowed on /execute; use POST"
        assert (await client.post("/execute", json=OK, headers=JSON)).status_code == 200


async def test_openai_routes_suggest_openai_names_in_openai_shape(client_for: Any) -> None:
    async with client_for("sd15") as client:
        body = {"prompt": "a cat", "size": "64x64", "steps": 2}
        response = await client.post("/v1/images/generations", json=body)
        error = response.json()["error"]
        assert "unknown field 'steps' (did you mean 'num_inference_steps'?)" in error["message"]
        assert response.status_code == 400 and error["type"] == "invalid_request_error"
        fixed_body = {"prompt": "a cat", "size": "64x64", "num_inference_steps": 2}
        fixed = await client.post("/v1/images/generations", json=fixed_body)
        assert fixed.status_code == 200, fixed.text


async def test_a_size_past_the_family_maximum_states_its_native_size(client_for: Any) -> None:
    async with client_for("sd15") as client:  # the tiny model stands in for v1-5: 512² native, 1024² at most
        response = await client.post("/execute", json={**OK, "width": 1536, "height": 1024}, headers=JSON)
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["field"] == "width"
        assert error["message"] == "1536x1024 is too big: the v1-5 model draws at 512×512 (max 1024×1024)"
        openai = await client.post("/v1/images/generations", json={"prompt": "a cat", "size": "1792x1024"})
        assert openai.json()["error"] == {
            "message": "1792x1024 is too big: the v1-5 model draws at 512×512 (max 1024×1024)",
            "type": "invalid_request_error",
            "param": "size",
            "code": "invalid_request",
        }
        assert (await client.post("/execute", json=OK, headers=JSON)).status_code == 200


async def test_the_demo_model_refuses_sizes_it_cannot_draw_and_says_its_own(demo_model_backend: Any) -> None:
    async with app_client(Settings(), demo_model_backend) as client:
        response = await client.post("/execute", json={"prompt": "a red circle", "width": 512, "height": 512})
        assert response.status_code == 422
        assert "the demo model draws at 64×64 (max 128×128)" in response.json()["error"]["message"]
        # 1024x1024 is what most OpenAI-style clients send by default
        openai = await client.post("/v1/images/generations", json={"prompt": "a red circle", "size": "1024x1024"})
        assert openai.status_code == 400 and openai.json()["error"]["param"] == "size"
        assert "the demo model draws at 64×64 (max 128×128)" in openai.json()["error"]["message"]
        body = {"prompt": "a red circle", "steps": 2, "width": 128, "height": 128}
        largest = await client.post("/execute", json=body, headers=JSON)
        assert largest.status_code == 200 and largest.json()["width"] == 128
