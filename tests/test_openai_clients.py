"""OpenAI clients as they are written: DALL·E names and defaults, ignored knobs, 400s with OpenAI's parameter
names, multipart `nvext[...]`, per-image partials, `X-Job-Id`, DALL·E 2 edits, and litellm — each driven by the
client library itself against a real uvicorn on loopback."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from tests.support import decode, init_image, live_server, pixels, png_bytes, worker_settings

NV = {"num_inference_steps": 3, "seed": 5}
ALIASES = ["dall-e-2", "dall-e-3", "gpt-image-1", "gpt-image-1-mini"]


@pytest.fixture(scope="module")
def server(backend_for: Any, tiny_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = worker_settings(
        "sd15", tiny_model("sd15"), served_model_name=["house-style", "sd15-tiny"],
        state_dir=tmp_path_factory.mktemp("state"),
    )  # fmt: skip
    with live_server(settings, backend_for("sd15")) as url:
        yield url


@pytest.fixture(scope="module")
def client(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)


def test_the_model_answers_to_its_names_and_the_openai_ones(client: openai.OpenAI, tiny_model: Any) -> None:
    ids = [model.id for model in client.models.list()]
    assert ids == ["v1-5", str(tiny_model("sd15")), *ALIASES, "house-style", "sd15-tiny"]
    assert client.models.retrieve("dall-e-3").id == "dall-e-3"
    for name in ("v1-5", "house-style", "gpt-image-1-mini"):
        assert client.images.generate(model=name, prompt="a cat", size="64x64", extra_body=NV).data
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("gpt-5")
    assert "house-style" in missing.value.message and "dall-e-3" in missing.value.message
    with pytest.raises(openai.NotFoundError) as unknown:
        client.images.generate(model="stable-cascade", prompt="a cat")
    assert unknown.value.code == "model_not_found" and "gpt-image-1" in unknown.value.message


def test_dall_e_names_answer_with_urls_as_openai_does(client: openai.OpenAI) -> None:
    for model in ("dall-e-3", "dall-e-2"):
        result = client.images.generate(model=model, prompt="a cat", size="64x64", extra_body={"nvext": NV})
        assert result.data[0].b64_json is None and result.data[0].url
        fetched = httpx.get(result.data[0].url)
        assert fetched.status_code == 200 and Image.open(io.BytesIO(fetched.content)).size == (64, 64)
    for model in ("gpt-image-1", None):
        kwargs = {"model": model} if model else {}
        result = client.images.generate(prompt="a cat", size="64x64", extra_body={"nvext": NV}, **kwargs)
        assert result.data[0].url is None and result.data[0].b64_json


def test_knobs_that_cannot_be_honoured_are_accepted_and_named(client: openai.OpenAI) -> None:
    raw = client.images.with_raw_response.generate(
        prompt="a cat", size="64x64", style="vivid", moderation="low", background="transparent",
        extra_body={"nvext": NV},
    )  # fmt: skip
    assert raw.http_response.status_code == 200
    assert raw.headers["x-ignored-params"] == "style, moderation, background"
    plain = client.images.with_raw_response.generate(
        prompt="a cat", size="64x64", background="opaque", extra_body={"nvext": NV}
    )
    assert "x-ignored-params" not in plain.headers
    edit = client.images.with_raw_response.edit(
        image=("in.png", png_bytes(init_image())), prompt="a cat", input_fidelity="high", extra_body={"nvext": NV}
    )
    assert edit.headers["x-ignored-params"] == "input_fidelity"


def test_bad_values_are_400_with_openai_parameter_names(client: openai.OpenAI, server: str) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"n": 9}, "n"),
        ({"n": 0}, "n"),
        ({"size": "60x60"}, "size"),
        ({"size": "big"}, "size"),
        ({"extra_body": {"nvext": {"num_inference_steps": 500}}}, "nvext.num_inference_steps"),
        ({"extra_body": {"nvext": {"guidance_scale": -1}}}, "nvext.guidance_scale"),
    ]
    for kwargs, param in cases:
        with pytest.raises(openai.BadRequestError) as refused:
            client.images.generate(prompt="a cat", **kwargs)
        assert refused.value.param == param, (kwargs, refused.value.message)
        assert refused.value.type == "invalid_request_error"
    assert httpx.get(f"{server}/health").status_code == 200  # and the worker serves on


def test_edits_take_nvext_from_extra_body(client: openai.OpenAI) -> None:
    source = ("in.png", png_bytes(init_image()))
    nested = client.images.edit(image=source, prompt="a cat", extra_body={"nvext": NV, "strength": 0.5})
    flat = client.images.edit(image=source, prompt="a cat", extra_body={**NV, "strength": 0.5})
    assert nested.model_extra is not None and nested.model_extra["seeds"] == [5]
    assert (
        pixels(decode(nested.data[0].b64_json or "")).tobytes() == pixels(decode(flat.data[0].b64_json or "")).tobytes()
    )
    with pytest.raises(openai.BadRequestError) as unknown:
        client.images.edit(image=source, prompt="a cat", extra_body={"nvext": {"sed": 5}})
    assert unknown.value.param == "nvext.sed"


def test_streams_send_every_images_partials_with_the_real_size(client: openai.OpenAI) -> None:
    stream = client.images.generate(
        prompt="a cat", size="64x48", n=2, stream=True, partial_images=2,
        extra_body={"nvext": {"num_inference_steps": 6, "seed": 1}},
    )  # fmt: skip
    events = list(stream)
    partials = [e for e in events if e.type == "image_generation.partial_image"]
    completed = [e for e in events if e.type == "image_generation.completed"]
    assert len(partials) == 4 and len(completed) == 2
    assert {e.size for e in [*partials, *completed]} == {"64x48"}
    assert sorted(e.partial_image_index for e in partials) == [0, 0, 1, 1]  # type: ignore[union-attr]
    first, second = (decode(e.b64_json) for e in partials[-2:])
    assert first.size == (64, 48) and not np.array_equal(pixels(first), pixels(second))


def test_every_openai_response_names_its_job(client: openai.OpenAI, server: str) -> None:
    generated = client.images.with_raw_response.generate(prompt="a cat", size="64x64", extra_body={"nvext": NV})
    edited = client.images.with_raw_response.edit(
        image=("in.png", png_bytes(init_image())), prompt="a cat", extra_body={"nvext": NV}
    )
    with httpx.stream("POST", f"{server}/v1/images/generations",
                      json={"prompt": "a cat", "size": "64x64", "stream": True, **NV}) as streamed:  # fmt: skip
        streamed.read()
    for response in (generated.http_response, edited.http_response, streamed):
        job_id = response.headers["x-job-id"]
        assert httpx.get(f"{server}/v1/jobs/{job_id}").json()["status"] == "completed"


def test_an_rgba_image_without_a_mask_is_edited_where_it_is_transparent(client: openai.OpenAI) -> None:
    source = init_image().convert("RGBA")
    alpha = Image.new("L", (64, 64), 255)
    alpha.paste(0, (16, 16, 48, 48))  # DALL·E 2: the transparent area is what gets repainted
    source.putalpha(alpha)
    result = client.images.edit(image=("in.png", png_bytes(source)), prompt="a cat", extra_body={"nvext": NV})
    out, original = pixels(decode(result.data[0].b64_json or "")), pixels(source)
    keep = np.ones((64, 64), bool)
    keep[16:48, 16:48] = False
    assert np.array_equal(out[keep], original[keep])
    assert not np.array_equal(out[~keep], original[~keep])


def test_nvext_webhook_url_is_refused_when_webhooks_are_off(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.images.generate(prompt="a cat", extra_body={"nvext": {"webhook_url": "http://127.0.0.1:9/x"}})
    assert refused.value.param == "nvext.webhook_url" and "--webhook-allow" in refused.value.message


def test_litellm_image_generation(server: str) -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch at import
    import litellm

    common: dict[str, Any] = {"prompt": "a cat", "size": "64x64", "api_base": f"{server}/v1", "api_key": "unused"}
    as_url = litellm.image_generation(model="openai/dall-e-3", **common, extra_body={"nvext": NV})
    fetched = httpx.get(as_url.data[0].url)
    assert fetched.status_code == 200 and Image.open(io.BytesIO(fetched.content)).size == (64, 64)
    as_b64 = litellm.image_generation(model="openai/gpt-image-1", **common, extra_body={"nvext": NV})
    assert (
        pixels(decode(as_b64.data[0].b64_json)).tobytes() == pixels(Image.open(io.BytesIO(fetched.content))).tobytes()
    )
