"""Split serving: a text-encoder worker's embeddings drive a denoiser worker to the very pixels of one worker."""

from __future__ import annotations

import base64
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
import zstandard
from mini_hive import create_hive

from tests.support import (
    ARCH_FAMILY,
    app_client,
    b64_png,
    centre_mask,
    decode,
    init_image,
    live_server,
    pixels,
    serve_app,
    wait_for,
    worker_processes,
    worker_settings,
)
from worker.backends.cpu import CpuBackend
from worker.client import WorkerClient, WorkerRequestError, generate_split
from worker.pipelines import envelope

JSON = {"Accept": "application/json"}
# per arch: a request without negative prompt at the family's guidance, and one with a negative prompt and CFG on
CASES: dict[str, list[dict[str, Any]]] = {
    "sd15": [{}, {"negative_prompt": "blurry, dark"}],
    "sdxl": [{}, {"negative_prompt": "blurry, dark"}],
    "sd3": [{}, {"negative_prompt": "blurry, dark"}],
    "zimage": [{}, {"negative_prompt": "blurry, dark", "guidance_scale": 2.0}],  # turbo default 0 runs no CFG
}
SMALL = {"width": 32, "height": 32, "steps": 2, "seed": 7, "num_samples": 2}


@pytest.fixture(scope="session")
def split_backend(tiny_model: Callable[[str], Path]) -> Callable[[str, str], CpuBackend]:
    """(arch, components) → a loaded CPU backend with only those components (one per pair per session)."""
    loaded: dict[tuple[str, str], CpuBackend] = {}

    def get(arch: str, components: str) -> CpuBackend:
        if (arch, components) not in loaded:
            backend = CpuBackend(worker_settings(arch, tiny_model(arch), components=components))
            backend.load()
            loaded[arch, components] = backend
        return loaded[arch, components]

    return get


@pytest.fixture
def split_client(
    split_backend: Callable[[str, str], CpuBackend], tiny_model: Callable[[str], Path]
) -> Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]:
    """`async with split_client("sd15", "denoiser") as client:` — an app on a backend with those components."""

    def make(arch: str, components: str, **overrides: Any) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        settings = worker_settings(arch, tiny_model(arch), components=components, **overrides)
        return app_client(settings, split_backend(arch, components))

    return make


def same_pixels(a: dict[str, Any], b: dict[str, Any]) -> bool:
    images = zip(a["images"], b["images"], strict=True)
    return all(np.array_equal(pixels(decode(x)), pixels(decode(y))) for x, y in images)


@contextmanager
def split_workers(
    arch: str, tiny_model: Callable[[str], Path], split_backend: Callable[[str, str], CpuBackend], processes: bool
) -> Iterator[tuple[str, str]]:
    """URLs of a text-encoder and a denoiser worker: real CLI processes, or apps on in-process backends."""
    common = ["--sd-version", ARCH_FAMILY[arch], "--model-path", str(tiny_model(arch))]
    if processes:
        encoder_args, denoiser_args = [*common, "--components", "text-encoder"], [*common, "--components", "denoiser"]
        with worker_processes(encoder_args, denoiser_args) as [(_, encoder_url), (_, denoiser_url)]:
            yield encoder_url, denoiser_url
        return
    settings = {c: worker_settings(arch, tiny_model(arch), components=c) for c in ("text-encoder", "denoiser")}
    with (
        live_server(settings["text-encoder"], split_backend(arch, "text-encoder")) as encoder_url,
        live_server(settings["denoiser"], split_backend(arch, "denoiser")) as denoiser_url,
    ):
        yield encoder_url, denoiser_url


# In-process servers by default, which check the same pixels for a fraction of the time; `-m slow` (CI's second
# pass) runs every arch as two real `sd-worker --components` processes (each pays the torch and diffusers imports).
SPLIT_CASES = [
    *((arch, False) for arch in ("sd15", "sdxl", "sd3", "zimage")),
    *(pytest.param(arch, True, marks=pytest.mark.slow) for arch in ("sd15", "sdxl", "sd3", "zimage")),
]


@pytest.mark.parametrize(("arch", "processes"), SPLIT_CASES)
def test_two_workers_make_the_pixels_of_one_all_worker(
    arch: str,
    processes: bool,
    tiny_model: Callable[[str], Path],
    backend_for: Callable[[str], CpuBackend],
    split_backend: Callable[[str, str], CpuBackend],
) -> None:
    """A text-encoder worker + a denoiser worker = one `all` worker, byte for byte."""
    settings = worker_settings(arch, tiny_model(arch))
    with (
        split_workers(arch, tiny_model, split_backend, processes) as (encoder_url, denoiser_url),
        live_server(settings, backend_for(arch)) as all_url,
        WorkerClient(encoder_url) as encoder,
        WorkerClient(denoiser_url) as denoiser,
        WorkerClient(all_url) as one,
    ):
        assert encoder.health()["capabilities"] == ["encode"]
        assert denoiser.health()["capabilities"] == ["txt2img", "img2img", "inpaint", "prompt_embeds"]
        for case in CASES[arch]:
            params = {**SMALL, "guidance_scale": case.get("guidance_scale")}
            expected = one.generate(prompt="a red circle", negative_prompt=case.get("negative_prompt"), **params)
            split = generate_split(encoder, denoiser, "a red circle", case.get("negative_prompt"), **params)
            assert split.seeds == expected.seeds == [7, 8]
            assert same_pixels(split.payload, expected.payload), f"{arch} {case}: split pixels differ"
            # the `all` worker takes the envelope too, with the same result
            packed = encoder.encode(
                "a red circle", case.get("negative_prompt"), guidance_scale=params["guidance_scale"]
            )
            assert same_pixels(one.generate(prompt_embeds=packed, **params).payload, expected.payload)


def test_a_text_encoder_worker_registers_with_the_encode_capability(
    tiny_model: Callable[[str], Path], split_backend: Callable[[str, str], CpuBackend]
) -> None:
    hive_app = create_hive()
    with serve_app(hive_app) as hive_url:
        callback = f"{hive_url}/v1/register"
        settings = worker_settings("sd15", tiny_model("sd15"), components="text-encoder", callback_url=callback)
        with live_server(settings, split_backend("sd15", "text-encoder")):
            wait_for(lambda: bool(hive_app.state.hive.registrations), what="registration")
    assert hive_app.state.hive.registrations[0]["capabilities"] == ["encode"]


async def test_img2img_and_inpaint_take_prompt_embeds(split_client: Any, client_for: Any) -> None:
    image, mask = b64_png(init_image(32)), b64_png(centre_mask(32))
    params = {"width": 32, "height": 32, "steps": 4, "seed": 3}
    async with client_for("sd15") as one, split_client("sd15", "denoiser") as denoiser:
        envelope_ = (await one.post("/encode", json={"prompt": "a cat"})).json()
        for route, extra in (("/img2img", {"image": image}), ("/inpaint", {"image": image, "mask": mask})):
            expected = await one.post(route, json={"prompt": "a cat", **extra, **params}, headers=JSON)
            split = await denoiser.post(route, json={"prompt_embeds": envelope_, **extra, **params}, headers=JSON)
            assert split.status_code == 200, split.text
            assert same_pixels(split.json(), expected.json()), route


def test_envelope_round_trips_every_dtype() -> None:
    tensors = {"prompt_embeds": torch.randn(1, 77, 32), "pooled_prompt_embeds": torch.randn(1, 16)}
    for dtype, torch_dtype in envelope.TORCH_DTYPES.items():
        packed = envelope.pack(tensors, "xl", dtype)
        assert len(packed["embedding_id"]) == 32
        assert packed["uncompressed_size"] == (77 * 32 + 16) * torch_dtype.itemsize
        raw = zstandard.ZstdDecompressor().decompress(base64.b64decode(packed["data"]))
        assert zlib.crc32(raw) == packed["checksum"]
        assert packed == envelope.pack(tensors, "xl", dtype), "the id is a content hash"


def tampered(envelope_: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**envelope_, **changes}


def flip_byte(envelope_: dict[str, Any]) -> dict[str, Any]:
    raw = bytearray(zstandard.ZstdDecompressor().decompress(base64.b64decode(envelope_["data"])))
    raw[len(raw) // 2] ^= 0x01  # one bit of one float, recompressed: only the checksum can tell
    return tampered(envelope_, data=base64.b64encode(zstandard.ZstdCompressor().compress(bytes(raw))).decode())


def truncate(envelope_: dict[str, Any]) -> dict[str, Any]:
    data = base64.b64decode(envelope_["data"])
    return tampered(envelope_, data=base64.b64encode(data[: len(data) // 2]).decode())


def claim_huge(envelope_: dict[str, Any]) -> dict[str, Any]:
    """A declared shape that would need 16 GB: refused from the numbers alone, nothing is decompressed."""
    tensors = {name: {**spec} for name, spec in envelope_["tensors"].items()}
    tensors["prompt_embeds"]["shape"] = [1, 131_072_000, 32]
    size = sum(4 * int(np.prod(spec["shape"])) for spec in tensors.values())
    return tampered(envelope_, tensors=tensors, uncompressed_size=size)


def zstd_bomb(envelope_: dict[str, Any]) -> dict[str, Any]:
    """Honest headers over data that inflates to 256 MB: decompression stops one byte past the claim."""
    compressor = zstandard.ZstdCompressor().compressobj()
    chunk = bytes(1 << 20)
    data = b"".join(compressor.compress(chunk) for _ in range(256)) + compressor.flush()
    return tampered(envelope_, data=base64.b64encode(data).decode())


def wrong_width(envelope_: dict[str, Any]) -> dict[str, Any]:
    tensors = {name: {**spec, "shape": [1, 77 * 2, 16]} for name, spec in envelope_["tensors"].items()}
    return tampered(envelope_, tensors=tensors)


def unknown_tensor(envelope_: dict[str, Any]) -> dict[str, Any]:
    renamed = {"prompt_embeds": "pooled_prompt_embeds"}
    tensors = {renamed.get(name, name): spec for name, spec in envelope_["tensors"].items()}
    return tampered(envelope_, tensors=tensors)


TAMPERS: list[tuple[Callable[[dict[str, Any]], dict[str, Any]], str, str]] = [
    (flip_byte, "prompt_embeds.checksum", "checksum does not match"),
    (truncate, "prompt_embeds.data", ""),
    (lambda e: tampered(e, model_type="xl"), "prompt_embeds.model_type", "'xl'"),
    (claim_huge, "prompt_embeds.uncompressed_size", "the limit is"),
    (lambda e: tampered(e, uncompressed_size=e["uncompressed_size"] + 4), "prompt_embeds.uncompressed_size", "take"),
    (zstd_bomb, "prompt_embeds.data", "more than"),
    (wrong_width, "prompt_embeds.tensors.prompt_embeds.shape", "[1, N, 32]"),
    (unknown_tensor, "prompt_embeds.tensors.pooled_prompt_embeds.shape", "unknown tensor"),
    (lambda e: tampered(e, data="not base64!"), "prompt_embeds.data", "base64"),
]


async def test_tampered_envelopes_are_refused_with_the_field_and_the_worker_keeps_serving(split_client: Any) -> None:
    body = {**SMALL, "num_samples": 1}
    async with split_client("sd15", "all") as client:
        good = (await client.post("/encode", json={"prompt": "a cat"})).json()
        for tamper, field, words in TAMPERS:
            response = await client.post("/execute", json={"prompt_embeds": tamper(good), **body}, headers=JSON)
            error = response.json()["error"]
            assert response.status_code == 422, (tamper, response.text)
            assert error["field"] == field and words in error["message"], (tamper, error)
        # without the negatives, CFG (the family's 7.5) cannot run; a wrong dtype is a schema error
        only = tampered(good, tensors={"prompt_embeds": good["tensors"]["prompt_embeds"]})
        response = await client.post("/execute", json={"prompt_embeds": only, **body}, headers=JSON)
        assert response.status_code == 422 and "uncompressed_size" in response.json()["error"]["field"]
        positive = (await client.post("/encode", json={"prompt": "a cat", "guidance_scale": 1.0})).json()
        response = await client.post("/execute", json={"prompt_embeds": positive, **body}, headers=JSON)
        error = response.json()["error"]
        assert response.status_code == 422 and "missing negative_prompt_embeds" in error["message"], error
        bad_dtype = tampered(good, tensors={k: {**v, "dtype": "f64"} for k, v in good["tensors"].items()})
        response = await client.post("/execute", json={"prompt_embeds": bad_dtype, **body}, headers=JSON)
        assert response.status_code == 422 and "dtype" in response.json()["error"]["field"]
        both = {"prompt": "a cat", "prompt_embeds": good, **body}
        response = await client.post("/execute", json=both, headers=JSON)
        assert response.status_code == 422 and response.json()["error"]["field"] == "prompt"
        assert (await client.post("/execute", json={"prompt_embeds": good, **body}, headers=JSON)).status_code == 200


async def test_each_component_mode_refuses_what_it_cannot_do(split_client: Any) -> None:
    async with split_client("sd15", "text-encoder") as encoder, split_client("sd15", "denoiser") as denoiser:
        response = await encoder.post("/execute", json={"prompt": "a cat"}, headers=JSON)
        assert response.status_code == 400 and "serves /encode only" in response.json()["error"]["message"]
        response = await denoiser.post("/encode", json={"prompt": "a cat"})
        assert response.status_code == 400 and "no text encoder" in response.json()["error"]["message"]
        response = await denoiser.post("/execute", json={"prompt": "a cat"}, headers=JSON)
        assert response.status_code == 422 and response.json()["error"]["field"] == "prompt"
        response = await denoiser.post("/v1/images/generations", json={"prompt": "a cat"})
        assert response.status_code == 400  # OpenAI answers every invalid value with 400
        health = (await encoder.get("/health")).json()
        assert set(health["components"]) == {"text_encoder"}, "no UNet/VAE in a text-encoder worker's memory"
        assert "text_encoder" not in (await denoiser.get("/health")).json()["components"]


async def test_encode_offers_smaller_dtypes(split_client: Any) -> None:
    async with split_client("sd15", "text-encoder") as encoder:
        sizes = {}
        for dtype in ("f32", "f16", "bf16"):
            packed = (await encoder.post("/encode", json={"prompt": "a cat", "dtype": dtype})).json()
            assert {spec["dtype"] for spec in packed["tensors"].values()} == {dtype}
            sizes[dtype] = packed["uncompressed_size"]
        default = (await encoder.post("/encode", json={"prompt": "a cat"})).json()
        assert default["tensors"]["prompt_embeds"]["dtype"] == "f32", "lossless: the text encoder's own dtype"
    assert sizes["f32"] == 2 * sizes["f16"] == 2 * sizes["bf16"]


def test_the_client_raises_the_worker_error(split_backend: Any, tiny_model: Any) -> None:
    settings = worker_settings("sd15", tiny_model("sd15"), components="denoiser")
    with (
        live_server(settings, split_backend("sd15", "denoiser")) as url,
        WorkerClient(url) as client,
        pytest.raises(WorkerRequestError) as caught,
    ):
        client.generate(prompt="a cat")
    assert (caught.value.status, caught.value.field) == (422, "prompt")
