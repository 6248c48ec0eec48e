"""Device backends: the resolver, dtype defaults, option checks, flash attention, memory options and OOMs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.support import app_client, decode, parse_sse, pixels, worker_settings
from worker.backends import attention
from worker.backends.cpu import CpuBackend
from worker.backends.dtypes import resolve_dtype
from worker.backends.resolver import create_backend, resolve_device
from worker.config import Settings
from worker.errors import ConfigError
from worker.pipelines.families import FAMILIES

JSON = {"Accept": "application/json"}
SMALL = {"width": 64, "height": 64, "steps": 3, "prompt": "a cat", "seed": 1}


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"), [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")]
)
def test_auto_prefers_cuda_then_mps_then_cpu(
    monkeypatch: pytest.MonkeyPatch, cuda: bool, mps: bool, expected: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert resolve_device("auto") == expected
    assert resolve_device("cpu") == "cpu"


@pytest.mark.parametrize(
    ("device", "family", "given", "expected"),
    [
        ("cpu", "v1-5", {}, "fp32"),
        ("cpu", "3-medium", {}, "fp32"),
        ("cpu", "xl", {"dtype": "bf16"}, "bf16"),
        ("cuda", "v1-5", {}, "fp16"),
        ("cuda", "xl", {}, "fp16"),
        ("cuda", "3.5-large", {}, "bf16"),
        ("cuda", "z-image-turbo", {}, "bf16"),
        ("cuda", "3-medium", {"use_f16": True}, "fp16"),
        ("cuda", "v1-5", {"dtype": "fp32"}, "fp32"),
        ("mps", "v1-5", {}, "fp16"),
        ("mps", "z-image-turbo", {}, "fp16"),
    ],
)
def test_dtype_defaults_per_device_and_family(device: Any, family: str, given: dict[str, Any], expected: str) -> None:
    assert resolve_dtype(device, FAMILIES[family], Settings(**given)) == expected


def test_fp16_on_cpu_is_refused_with_the_reason() -> None:
    with pytest.raises(ConfigError, match="20x slower"):
        resolve_dtype("cpu", FAMILIES["v1-5"], Settings(use_f16=True))


def test_offload_on_cpu_is_refused() -> None:
    with pytest.raises(ConfigError, match="--offload needs an accelerator"):
        CpuBackend(Settings(offload="model"))


def test_cuda_and_mps_say_clearly_when_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="--device cuda: no CUDA device is visible"):
        create_backend(Settings(device="cuda"))
    with pytest.raises(ConfigError, match="--device mps: Metal is not available"):
        create_backend(Settings(device="mps"))
    assert isinstance(create_backend(Settings(device="auto")), CpuBackend)


@pytest.mark.parametrize(
    ("arch", "expected"), [("sd15", "sdpa-flash"), ("sd3", "sdpa-flash"), ("zimage", "_native_flash")]
)
async def test_flash_attention_is_used_and_reported(arch: str, expected: str, tiny_model: Any) -> None:
    settings = worker_settings(arch, tiny_model(arch), use_flash_attn="require")
    backend = CpuBackend(settings)
    backend.load()
    async with app_client(settings, backend) as client:
        health = (await client.get("/health")).json()
        response = await client.post("/execute", json=SMALL, headers=JSON)
    assert health["attention_backend"] == expected
    assert response.status_code == 200


def test_flash_attention_that_cannot_run_falls_back_or_fails_when_required(
    monkeypatch: pytest.MonkeyPatch, tiny_model: Any
) -> None:
    # "flash" needs the flash-attn package, which is not installed here: diffusers refuses it for real.
    monkeypatch.setattr(attention, "transformer_candidates", lambda: ["flash"])
    relaxed = CpuBackend(worker_settings("zimage", tiny_model("zimage"), use_flash_attn="auto"))
    relaxed.load()
    assert relaxed.attention_backend == "sdpa"
    strict = CpuBackend(worker_settings("zimage", tiny_model("zimage"), use_flash_attn="require"))
    with pytest.raises(ConfigError, match="--use-flash-attn=require: no flash attention kernel runs on cpu"):
        strict.load()


def test_vae_tiling_and_slicing_options(tiny_model: Any) -> None:
    backend = CpuBackend(worker_settings("sd15", tiny_model("sd15"), vae_tiling=True, vae_slicing=True))
    backend.load()
    vae = backend.model.base.vae
    assert vae.use_tiling and vae.use_slicing


async def test_out_of_memory_mid_job_fails_that_job_and_the_next_one_succeeds(
    client_for: Any, backend_for: Any
) -> None:
    denoiser = backend_for("sd15").model.denoiser
    calls = 0

    def oom_at_step_3(*_: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise torch.OutOfMemoryError("injected: tried to allocate 20.00 GiB")

    handle = denoiser.register_forward_pre_hook(oom_at_step_3)
    try:
        async with client_for("sd15") as client:
            events = parse_sse((await client.post("/execute", json={**SMALL, "steps": 6})).text)
            after = await client.post("/execute", json=SMALL, headers=JSON)
    finally:
        handle.remove()
    assert events[-1][0] == "error" and events[-1][1]["code"] == "out_of_memory"
    assert [data["step"] for name, data in events if name == "progress"] == [1, 2]
    assert after.status_code == 200


async def test_vae_decode_out_of_memory_is_retried_once_with_tiling(client_for: Any, backend_for: Any) -> None:
    vae = backend_for("sd15").model.base.vae
    seen_tiling: list[bool] = []

    def oom_first_time(*_: Any) -> None:
        seen_tiling.append(vae.use_tiling)
        if len(seen_tiling) == 1:
            raise torch.OutOfMemoryError("injected decode OOM")

    handle = vae.decoder.register_forward_pre_hook(oom_first_time)
    try:
        async with client_for("sd15") as client:
            response = await client.post("/execute", json=SMALL, headers=JSON)
    finally:
        handle.remove()
    assert response.status_code == 200, response.text
    assert seen_tiling == [False, True]
    assert not vae.use_tiling, "tiling is only for the retry"


async def test_health_reports_memory_and_where_components_live(client_for: Any) -> None:
    async with client_for("sd15") as client:
        health = (await client.get("/health")).json()
    assert health["memory"]["allocated"] > 0 and health["memory"]["total"] > health["memory"]["allocated"]
    unet = health["components"]["unet"]
    assert unet["device"] == "cpu" and unet["dtype"] == "float32" and unet["bytes"] > 0
    assert set(health["components"]) >= {"unet", "vae", "text_encoder"}


@pytest.mark.cuda
async def test_cuda_backend_generates_in_fp16(tiny_model: Any, tmp_path: Path) -> None:
    settings = worker_settings("sd15", tiny_model("sd15"), device="cuda")
    backend = create_backend(settings)
    backend.load()
    assert backend.dtype == "fp16" and backend.device == "cuda:0"
    async with app_client(settings, backend) as client:  # type: ignore[arg-type]
        health = (await client.get("/health")).json()
        response = await client.post("/execute", json=SMALL, headers=JSON)
    assert response.status_code == 200
    assert health["components"]["unet"]["device"] == "cuda:0"
    assert health["memory"]["allocated"] > 0


async def test_compile_warms_up_at_the_default_size_before_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    # Fast form: torch.compile is replaced by a recorder of what the compiled denoiser is called with (tracing alone
    # costs a minute on 2 cores), on the demo model (64² default); `pytest -m slow` runs the real compiler below.
    # A call unlike every warm-up call (another shape, or a timestep of another shape or dtype) would recompile.
    calls: list[tuple[Any, ...]] = []

    def compile_recording(module: torch.nn.Module, **_: Any) -> None:
        call = module._call_impl

        def recorded(*args: Any, **kwargs: Any) -> Any:
            sample = args[0] if args else kwargs["sample"]
            timestep = torch.as_tensor(args[1] if len(args) > 1 else kwargs["timestep"])
            calls.append((tuple(sample.shape), tuple(timestep.shape), timestep.dtype, tuple(sorted(kwargs))))
            return call(*args, **kwargs)

        module._compiled_call_impl = recorded

    monkeypatch.setattr(torch.nn.Module, "compile", compile_recording)
    settings = Settings(compile=True)  # the bundled demo model, with the default continuous batching
    backend = CpuBackend(settings)
    backend.load()  # /ready says yes only after this
    warmed = set(calls)
    latent = 64 // backend.model.base.vae_scale_factor
    assert {shape for shape, *_ in warmed} == {(2, 4, latent, latent)}, "warmed at the family's 64²"
    async with app_client(settings, backend) as client:
        response = await client.post("/execute", json={"steps": 2, "prompt": "a red circle", "seed": 1}, headers=JSON)
    assert response.status_code == 200 and (response.json()["width"], response.json()["height"]) == (64, 64)
    assert len(calls) > len(warmed) and set(calls) <= warmed, "a default-size request needs no new graph"


@pytest.mark.slow
async def test_compile_serves_the_same_image_with_real_kernels(tiny_model: Any, backend_for: Any) -> None:
    from torch._dynamo.utils import counters

    counters.clear()
    settings = worker_settings("sd15", tiny_model("sd15"), compile=True)
    backend = CpuBackend(settings)
    backend.load()  # compiles during the warm-up, before /ready could say yes
    graphs = counters["stats"]["unique_graphs"]
    assert backend.model.denoiser._compiled_call_impl is not None and graphs > 0
    body = {"steps": 2, "prompt": "a cat", "seed": 1}  # the family's default size: the one warmed up
    try:
        async with app_client(settings, backend) as client:
            compiled = (await client.post("/execute", json=body, headers=JSON)).json()
        assert counters["stats"]["unique_graphs"] == graphs, "the first request compiled again"
    finally:
        torch._dynamo.reset()
    async with app_client(worker_settings("sd15", tiny_model("sd15")), backend_for("sd15")) as client:
        eager = (await client.post("/execute", json=body, headers=JSON)).json()
    difference = np.abs(pixels(decode(compiled["image"])).astype(int) - pixels(decode(eager["image"])).astype(int))
    assert difference.mean() < 2.0  # fused kernels may round differently, never draw differently
