"""Loading: diffusers folder, single .safetensors file, the HF cache offline, and clear startup errors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import make_tiny_models
import numpy as np
import pytest
from PIL import Image

from tests.support import app_client, cli, decode, free_port, pixels, worker_settings
from worker.backends.cpu import CpuBackend
from worker.config import Settings
from worker.errors import ModelLoadError

BODY = {"prompt": "a cat", "steps": 3, "seed": 7, "width": 64, "height": 64}
JSON = {"Accept": "application/json"}


async def generate(settings: Settings, backend: CpuBackend) -> np.ndarray:
    async with app_client(settings, backend) as client:
        response = await client.post("/execute", json=BODY, headers=JSON)
        assert response.status_code == 200, response.text
        return pixels(decode(response.json()["image"]))


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
async def test_single_safetensors_file_gives_the_same_images_as_the_folder(
    arch: str, tiny_model: Any, backend_for: Any, tmp_path: Path
) -> None:
    folder = tiny_model(arch)
    checkpoint = make_tiny_models.export_single_file(folder, tmp_path / f"{arch}.safetensors")
    settings = worker_settings(arch, checkpoint, model_config_path=folder)
    single = CpuBackend(settings)
    single.load()
    assert type(single.model.base).__name__ == type(backend_for(arch).model.base).__name__
    from_file = await generate(settings, single)
    from_folder = await generate(worker_settings(arch, folder), backend_for(arch))
    assert np.array_equal(from_file, from_folder)


def test_pickle_checkpoints_are_refused_naming_the_flag_that_allows_them(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(b"not loaded")
    with pytest.raises(ModelLoadError, match=r"only \.safetensors .* pass --allow-pickle to load it anyway"):
        CpuBackend(Settings(sd_version="v1-5", model_path=checkpoint)).load()


async def test_a_ckpt_loads_with_allow_pickle_and_gives_the_folder_images(
    tiny_model: Any, backend_for: Any, tmp_path: Path
) -> None:
    import torch
    from safetensors.torch import load_file

    folder = tiny_model("sd15")
    single = make_tiny_models.export_single_file(folder, tmp_path / "sd15.safetensors")
    checkpoint = tmp_path / "v1-5-pruned-emaonly.ckpt"
    torch.save({"state_dict": load_file(single)}, checkpoint)  # the layout of the original SD1.5 .ckpt
    settings = worker_settings("sd15", checkpoint, model_config_path=folder, allow_pickle=True)
    backend = CpuBackend(settings)
    backend.load()
    from_ckpt = await generate(settings, backend)
    from_folder = await generate(worker_settings("sd15", folder), backend_for("sd15"))
    assert np.array_equal(from_ckpt, from_folder)


class _RunsCode:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.mkdir, (os.environ["SD_WORKER_TEST_MARKER"],))


def test_allow_pickle_still_refuses_a_pickle_that_runs_code(
    tiny_model: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    marker = tmp_path / "code-ran"
    monkeypatch.setenv("SD_WORKER_TEST_MARKER", str(marker))
    checkpoint = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": _RunsCode()}}, checkpoint)
    settings = worker_settings("sd15", checkpoint, model_config_path=tiny_model("sd15"), allow_pickle=True)
    with pytest.raises(ModelLoadError, match="could not load"):
        CpuBackend(settings).load()
    assert not marker.exists(), "weights_only=True: nothing but tensors is unpickled"


def test_a_folder_of_another_family_is_refused(tiny_model: Any) -> None:
    with pytest.raises(ModelLoadError, match="holds a StableDiffusionPipeline, but --sd-version xl expects"):
        CpuBackend(Settings(sd_version="xl", model_path=tiny_model("sd15"))).load()


def test_missing_folder_names_what_was_looked_for(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"no diffusers model at .*model_index\.json"):
        CpuBackend(Settings(sd_version="v1-5", model_path=tmp_path / "nowhere")).load()


def test_family_default_source_loads_from_the_hf_cache_offline(tiny_model: Any, tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    repo = cache / "models--stable-diffusion-v1-5--stable-diffusion-v1-5"
    revision = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(tiny_model("sd15"), repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    out = tmp_path / "out.png"
    result = cli(
        "generate",
        "a cat",
        "-o",
        str(out),
        "--sd-version",
        "v1-5",
        "--steps",
        "2",
        "--width",
        "64",
        "--height",
        "64",
        "--seed",
        "3",
        env={"HF_HUB_CACHE": str(cache)},
    )
    assert result.returncode == 0, result.stderr
    assert Image.open(out).size == (64, 64)
    assert "seed 3" in result.stderr


def test_a_missing_hub_model_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    # fast form (in-process); `-m slow` checks that a real `sd-worker` exits 1 with it and no traceback
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    expected = (
        r"model 'stabilityai/stable-diffusion-xl-base-1.0' not found in the Hugging Face cache \(HF_HUB_OFFLINE is "
        r"set\); pass --model-path to a local diffusers folder or \.safetensors file"
    )
    with pytest.raises(ModelLoadError, match=expected):
        CpuBackend(Settings(sd_version="xl")).load()


@pytest.mark.slow
def test_missing_hub_model_is_one_clear_startup_error(tmp_path: Path) -> None:
    result = cli("--sd-version", "xl", "--port", str(free_port()), env={"HF_HUB_CACHE": str(tmp_path)})
    assert result.returncode == 1
    assert "model 'stabilityai/stable-diffusion-xl-base-1.0' not found in the Hugging Face cache" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_sd_version_is_refused(tmp_path: Path) -> None:
    result = cli("--sd-version", "v9", "--port", str(free_port()))
    assert result.returncode == 2
    assert "unknown sd-version 'v9'; valid: demo, v1-5" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("components", ["text-encoder", "denoiser"])
def test_a_single_file_keeps_only_the_components_asked_for(components: str, tiny_model: Any, tmp_path: Path) -> None:
    folder = tiny_model("sdxl")
    checkpoint = make_tiny_models.export_single_file(folder, tmp_path / "sdxl.safetensors")
    backend = CpuBackend(worker_settings("sdxl", checkpoint, model_config_path=folder, components=components))
    backend.load()
    loaded = set(backend.info()["components"])
    text = {"text_encoder", "text_encoder_2"}
    assert loaded == text if components == "text-encoder" else loaded == {"unet", "vae"}
