"""rbee Gen C jobs in process: LoRA `path`s resolve only inside --lora-dir, and a job through the rbee API equals
the same job through the native API byte for byte."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import make_tiny_models
import numpy as np
import pytest

from tests.rbee_peers import operation
from tests.support import app_client, decode, parse_sse, pixels, worker_settings
from worker.backends.cpu import CpuBackend

JSON = {"Accept": "application/json"}
JOB = {"prompt": "a cat", "steps": 3, "seed": 9, "width": 64, "height": 64}


@pytest.fixture(scope="module")
def lora_dir(tiny_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("rbee-loras")
    make_tiny_models.make_lora(tiny_model("sd15"), folder / "ink.safetensors", seed=1)
    outside = tmp_path_factory.mktemp("elsewhere") / "secret.safetensors"
    shutil.copy(folder / "ink.safetensors", outside)
    (folder / "escape.safetensors").symlink_to(outside)  # listed by name, but its path leads out of the folder
    (folder / "sub").mkdir()
    shutil.copy(folder / "ink.safetensors", folder / "sub" / "deep.safetensors")
    return folder


def settings_for(tiny_model: Any, lora_dir: Path) -> Any:
    return worker_settings("sd15", tiny_model("sd15"), lora_dir=lora_dir, api_key="k")


@pytest.fixture(scope="module")
def backend(tiny_model: Any, lora_dir: Path) -> CpuBackend:
    backend = CpuBackend(settings_for(tiny_model, lora_dir))
    backend.load()
    return backend


@pytest.fixture
async def client(backend: CpuBackend, tiny_model: Any, lora_dir: Path) -> AsyncIterator[Any]:
    async with app_client(settings_for(tiny_model, lora_dir), backend) as client:
        client.headers["Authorization"] = "Bearer k"
        yield client


async def rbee_image(client: Any, **fields: Any) -> np.ndarray:
    created = await client.post("/v1/jobs", json=operation("image_generation", guidance_scale=7.5, **JOB, **fields))
    assert created.status_code == 200, created.text
    stream = await client.get(created.json()["sse_url"])
    events = parse_sse(stream.text)
    assert events[-1][0] == "complete", events[-1]
    return pixels(decode(events[-1][1]["image"]))


async def native_image(client: Any, **fields: Any) -> np.ndarray:
    response = await client.post("/execute", json={**JOB, "guidance_scale": 7.5, **fields}, headers=JSON)
    assert response.status_code == 200, response.text
    return pixels(decode(response.json()["image"]))


async def test_lora_paths_resolve_inside_the_lora_dir_only(client: Any, lora_dir: Path) -> None:
    with_lora = await rbee_image(client, loras=[{"path": "ink.safetensors", "strength": 0.8}])
    assert np.array_equal(with_lora, await native_image(client, loras=[{"name": "ink", "weight": 0.8}]))
    full_path = await rbee_image(client, loras=[{"path": str(lora_dir / "ink.safetensors"), "strength": 0.8}])
    assert np.array_equal(full_path, with_lora)
    assert not np.array_equal(await rbee_image(client), with_lora), "the LoRA changes the image"
    for path in ("/etc/passwd", "../ink.safetensors", str(lora_dir / ".." / "ink.safetensors"),
                 "escape.safetensors", "sub/deep.safetensors", "ink"):  # fmt: skip
        answer = await client.post("/v1/jobs", json=operation("image_generation", **JOB, loras=[{"path": path}]))
        assert answer.status_code == 422, (path, answer.text)
        error = answer.json()["error"]
        assert error["field"] == "loras.0.path" and "inside the LoRA folder" in error["message"], (path, error)
    answer = await client.post("/v1/jobs", json=operation("image_generation", **JOB,
                                                          loras=[{"path": "missing.safetensors"}]))  # fmt: skip
    assert answer.status_code == 422 and "available: escape, ink" in answer.json()["error"]["message"]


async def test_health_for_rbee_needs_no_key_and_jobs_do(client: Any) -> None:
    health = await client.get("/v1/health", headers={"Authorization": ""})
    assert health.status_code == 200 and health.json()["status"] == "healthy"
    assert health.json()["vram_bytes"] > 0
    refused = await client.post("/v1/jobs", json=operation("image_generation", **JOB), headers={"Authorization": ""})
    assert refused.status_code == 401
