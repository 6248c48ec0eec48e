"""The OpenAI Images API, driven by the official `openai` client against a real uvicorn on loopback."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from tests.support import b64_png, decode, init_image, live_server, pixels, png_bytes, worker_settings

NV = {"num_inference_steps": 3, "seed": 5}


@pytest.fixture
def server(backend_for: Any, tiny_model: Any, tmp_path: Path) -> Iterator[str]:
    settings = worker_settings("sd15", tiny_model("sd15"), output_dir=tmp_path / "out")
    with live_server(settings, backend_for("sd15")) as url:
        yield url


@pytest.fixture
def client(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)


def test_generate_returns_n_images_of_the_size_with_their_seeds(client: openai.OpenAI) -> None:
    result = client.images.generate(model="v1-5", prompt="a cat", n=2, size="64x48", extra_body={"nvext": NV})
    images = [decode(item.b64_json or "") for item in result.data]
    assert [image.size for image in images] == [(64, 48), (64, 48)]
    assert result.model_extra is not None and result.model_extra["seeds"] == [5, 6]
    assert result.data[0].revised_prompt == "a cat"


def test_same_seed_same_pixels_through_both_apis(client: openai.OpenAI, server: str) -> None:
    result = client.images.generate(prompt="a red cat", size="64x64", extra_body={"nvext": NV})
    native = httpx.post(
        f"{server}/execute",
        json={"prompt": "a red cat", "width": 64, "height": 64, "steps": 3, "seed": 5},
        headers={"Accept": "application/json"},
        timeout=60,
    )
    assert np.array_equal(pixels(decode(result.data[0].b64_json or "")), pixels(decode(native.json()["image"])))
    # top-level extensions (what clients send through extra_body without nvext) work the same
    flat = client.images.generate(prompt="a red cat", size="64x64", extra_body=NV)
    assert np.array_equal(pixels(decode(flat.data[0].b64_json or "")), pixels(decode(native.json()["image"])))


def test_url_response_points_at_a_file_on_this_worker(client: openai.OpenAI, tmp_path: Path) -> None:
    result = client.images.generate(
        prompt="a cat", size="64x64", response_format="url", output_format="webp", extra_body={"nvext": NV}
    )
    url = result.data[0].url or ""
    fetched = httpx.get(url)
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(fetched.content)).size == (64, 64)
    assert (tmp_path / "out" / url.rsplit("/", 1)[1]).is_file()


def test_edit_with_a_mask_keeps_unmasked_pixels(client: openai.OpenAI) -> None:
    source = init_image()
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (16, 16, 48, 48))  # transparent = edit
    result = client.images.edit(
        image=("in.png", png_bytes(source)), mask=("mask.png", png_bytes(mask)), prompt="a cat", extra_body=NV
    )
    out, original = pixels(decode(result.data[0].b64_json or "")), pixels(source)
    keep = np.ones((64, 64), bool)
    keep[16:48, 16:48] = False
    assert out.shape == (64, 64, 3)
    assert np.array_equal(out[keep], original[keep])
    assert not np.array_equal(out[~keep], original[~keep])


def test_edit_without_a_mask_is_img2img(client: openai.OpenAI, server: str) -> None:
    result = client.images.edit(
        image=("in.png", png_bytes(init_image())), prompt="a cat", extra_body={**NV, "strength": 0.6}
    )
    native = httpx.post(
        f"{server}/img2img",
        json={"prompt": "a cat", "image": b64_png(init_image()), "steps": 3, "seed": 5, "strength": 0.6},
        headers={"Accept": "application/json"},
    )
    assert np.array_equal(pixels(decode(result.data[0].b64_json or "")), pixels(decode(native.json()["image"])))


def test_streaming_sends_partial_images_then_the_completed_image(client: openai.OpenAI) -> None:
    stream = client.images.generate(
        prompt="a cat",
        size="64x64",
        stream=True,
        partial_images=2,
        extra_body={"nvext": {"num_inference_steps": 6, "seed": 1}},
    )
    events = list(stream)
    kinds = [event.type for event in events]
    assert kinds == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    assert [e.partial_image_index for e in events[:2]] == [0, 1]  # type: ignore[union-attr]
    assert Image.open(io.BytesIO(base64.b64decode(events[0].b64_json))).format == "JPEG"
    assert decode(events[-1].b64_json).size == (64, 64)


def test_models_lists_the_loaded_model(client: openai.OpenAI) -> None:
    ids = [model.id for model in client.models.list()]
    assert ids[0] == "v1-5" and ids[2:] == ["dall-e-2", "dall-e-3", "gpt-image-1", "gpt-image-1-mini"]


def test_errors_have_openai_shape(client: openai.OpenAI, server: str) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.images.generate(model="stable-cascade", prompt="a cat")
    assert missing.value.code == "model_not_found" and missing.value.param == "model"
    body = httpx.post(f"{server}/v1/images/generations", json={"prompt": "a cat", "size": "big"}).json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["param"] == "size" and body["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as size_error:
        client.images.generate(prompt="a cat", size="60x60")  # not a multiple of 8
    assert size_error.value.param == "size"
    no_alpha = png_bytes(Image.new("RGB", (64, 64)))
    with pytest.raises(openai.BadRequestError) as mask_error:
        client.images.edit(image=("in.png", png_bytes(init_image())), mask=("m.png", no_alpha), prompt="x")
    assert mask_error.value.param == "mask"


def test_no_request_field_can_write_outside_the_output_dir(client: openai.OpenAI, server: str, tmp_path: Path) -> None:
    hostile = "../../../escaped"
    client.images.generate(prompt=hostile, user=hostile, size="64x64", response_format="url", extra_body=NV)
    client.images.edit(image=(hostile, png_bytes(init_image())), prompt=hostile, response_format="url", extra_body=NV)
    for path in ("/v1/files/..%2F..%2Fescaped", "/v1/files/%2Fetc%2Fpasswd", "/v1/files/..", "/v1/files/x.png"):
        assert httpx.get(f"{server}{path}").status_code == 404
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and all(p.parent == tmp_path / "out" for p in written)
    assert not list(tmp_path.parent.rglob("escaped*"))


def test_output_url_uploads_through_fsspec_and_returns_that_url(
    backend_for: Any, tiny_model: Any, tmp_path: Path
) -> None:
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    settings = worker_settings("sd15", tiny_model("sd15"), output_url=f"file://{bucket}")
    with live_server(settings, backend_for("sd15")) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        result = client.images.generate(prompt="a cat", size="64x64", response_format="url", extra_body=NV)
    location = result.data[0].url or ""
    assert location.startswith(f"file://{bucket}/")
    assert Image.open(location.removeprefix("file://")).size == (64, 64)


def test_quality_and_compression_change_what_is_made(client: openai.OpenAI) -> None:
    def size_of(**kwargs: Any) -> int:
        result = client.images.generate(
            prompt="a cat", size="64x64", output_format="jpeg", extra_body={"nvext": {"seed": 5}}, **kwargs
        )
        return len(base64.b64decode(result.data[0].b64_json or ""))

    assert size_of(output_compression=90) < size_of(output_compression=0)
    low = client.images.generate(prompt="a cat", size="64x64", quality="low", extra_body={"nvext": {"seed": 5}})
    high = client.images.generate(prompt="a cat", size="64x64", quality="high", extra_body={"nvext": {"seed": 5}})
    steps = [decode(r.data[0].b64_json or "").info["parameters"].split("Steps: ")[1].split(",")[0] for r in (low, high)]
    assert steps == ["15", "45"]  # half and 1.5x the family's 30 default steps
