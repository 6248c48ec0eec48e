"""Bad input → a 4xx JSON error naming the field; the next valid request still succeeds."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from PIL import Image

from tests.support import b64_png, centre_mask, init_image

JSON = {"Accept": "application/json"}
OK = {"prompt": "a cat", "steps": 2, "width": 64, "height": 64}
IMAGE = b64_png(init_image())
MASK = b64_png(centre_mask())


def gif() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "GIF")
    return base64.b64encode(buffer.getvalue()).decode()


CASES: list[tuple[str, str, dict[str, Any], int, str | None]] = [
    ("width not a multiple of 8", "/execute", {**OK, "width": 60}, 422, "width"),
    ("height not a multiple of 8", "/execute", {**OK, "height": 100}, 422, "height"),
    ("steps 0", "/execute", {**OK, "steps": 0}, 422, "steps"),
    ("steps 10,000", "/execute", {**OK, "steps": 10_000}, 422, "steps"),
    ("unknown scheduler", "/execute", {**OK, "scheduler": "k_lms_turbo"}, 422, "scheduler"),
    ("flow scheduler on a UNet family", "/execute", {**OK, "scheduler": "flow_euler"}, 422, "scheduler"),
    ("prompt of 100,000 chars", "/execute", {**OK, "prompt": "a" * 100_000}, 422, "prompt"),
    ("missing prompt", "/execute", {"steps": 2}, 422, "prompt"),
    ("num_samples 9", "/execute", {**OK, "num_samples": 9}, 422, "num_samples"),
    ("seed 2^32", "/execute", {**OK, "seed": 2**32}, 422, "seed"),
    ("too many pixels", "/execute", {**OK, "width": 4096, "height": 4096}, 422, "width"),
    # the tiny UNet downsamples once: an 8-px side leaves 1×1 latents its GroupNorm cannot take (a 500 before)
    ("width below what the UNet can run", "/execute", {**OK, "width": 8, "guidance_scale": 1.0}, 422, "width"),
    ("A1111 size below it", "/sdapi/v1/txt2img", {**OK, "height": 8, "cfg_scale": 1.0}, 422, "height"),
    ("unknown field", "/execute", {**OK, "sampler_name": "Euler"}, 422, "sampler_name"),
    ("bad output format", "/execute", {**OK, "output_format": "bmp"}, 422, "output_format"),
    ("string for steps", "/execute", {**OK, "steps": "many"}, 422, "steps"),
    ("broken base64", "/img2img", {**OK, "image": "not base64!!"}, 400, "image"),
    ("not an image", "/img2img", {**OK, "image": base64.b64encode(b"hello").decode()}, 415, "image"),
    ("GIF image", "/img2img", {**OK, "image": gif()}, 415, "image"),
    ("strength 0", "/img2img", {**OK, "image": IMAGE, "strength": 0}, 422, "strength"),
    ("strength 1.5", "/img2img", {**OK, "image": IMAGE, "strength": 1.5}, 422, "strength"),
    ("strength too small for the steps", "/img2img", {**OK, "image": IMAGE, "strength": 0.1}, 422, "strength"),
    ("missing image", "/img2img", OK, 422, "image"),
    ("mask of another size", "/inpaint", {**OK, "image": IMAGE, "mask": b64_png(centre_mask(32))}, 422, "mask"),
    ("missing mask", "/inpaint", {**OK, "image": IMAGE}, 422, "mask"),
]


@pytest.mark.parametrize(("route", "body", "status", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_bad_input_is_a_clear_error_and_the_worker_keeps_serving(
    client_for: Any, route: str, body: dict[str, Any], status: int, field: str | None
) -> None:
    async with client_for("sd15") as client:
        response = await client.post(route, json=body, headers=JSON)
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["field"] == field
        assert error["code"] in ("invalid_request", "unsupported_media_type")
        assert "Traceback" not in response.text
        follow_up = await client.post("/execute", json=OK, headers=JSON)
        assert follow_up.status_code == 200


async def test_broken_json_is_a_400(client_for: Any) -> None:
    async with client_for("sd15") as client:
        response = await client.post("/execute", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"


async def test_oversized_body_is_refused_before_reading(client_for: Any) -> None:
    async with client_for("sd15") as client:
        headers = {"Content-Type": "application/json", "Content-Length": str(64 * 1024 * 1024)}
        response = await client.post("/execute", content=b"{}", headers=headers)
    assert response.status_code == 413


def test_chunked_oversized_body_is_refused_as_it_arrives(backend_for: Any, tiny_model: Any) -> None:
    import httpx

    from tests.support import live_server, worker_settings

    settings = worker_settings("sd15", tiny_model("sd15"))
    settings.limits.max_body_bytes = 64 * 1024
    sent = 0

    def chunks() -> Any:
        nonlocal sent
        yield b'{"prompt": "'
        for _ in range(4096):  # up to 4 MB, far past the 64 KB limit
            sent += 1024
            yield b"a" * 1024
        yield b'"}'

    with live_server(settings, backend_for("sd15")) as url:
        response = httpx.post(f"{url}/execute", content=chunks(), headers={"Content-Type": "application/json"})
        follow_up = httpx.post(f"{url}/execute", json={**OK}, headers=JSON, timeout=60)
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"
    assert follow_up.status_code == 200


async def test_image_bigger_than_the_upload_cap_is_refused(client_for: Any) -> None:
    big = Image.new("RGB", (4000, 3000))
    async with client_for("sd15") as client:
        client_settings_cap = {**OK, "image": b64_png(big)}
        response = await client.post("/img2img", json=client_settings_cap, headers=JSON)
    # 12 MP is under the default 40 MP cap: it is accepted and resized to the request's size.
    assert response.status_code == 200


async def test_unknown_job_and_route(client_for: Any) -> None:
    async with client_for("sd15") as client:
        assert (await client.get("/v1/jobs/nope")).status_code == 404
        missing = await client.get("/no-such-route")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
