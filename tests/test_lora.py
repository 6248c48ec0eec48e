"""Per-request LoRA: each job gets exactly its LoRAs, a job without any gets the base model bit for bit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import make_tiny_models
import numpy as np
import pytest

from tests.support import app_client, decode, pixels, worker_settings
from worker.backends.cpu import CpuBackend

JSON = {"Accept": "application/json"}
BODY = {"prompt": "a cat", "steps": 3, "seed": 9, "width": 64, "height": 64}


@pytest.fixture(scope="module")
def lora_dir(tiny_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("loras")
    make_tiny_models.make_lora(tiny_model("sd15"), folder / "ink.safetensors", seed=1)
    make_tiny_models.make_lora(tiny_model("sd15"), folder / "glow.safetensors", seed=2)
    make_tiny_models.make_lora(tiny_model("sdxl"), folder / "xl-style.safetensors", seed=3)
    (folder / "notes.txt").write_text("not a LoRA")
    return folder


@pytest.fixture(scope="module")
def lora_backend(tiny_model: Any, lora_dir: Path) -> CpuBackend:
    backend = CpuBackend(worker_settings("sd15", tiny_model("sd15"), lora_dir=lora_dir))
    backend.load()
    return backend


@pytest.fixture
async def client(lora_backend: CpuBackend, tiny_model: Any, lora_dir: Path) -> AsyncIterator[Any]:
    async with app_client(worker_settings("sd15", tiny_model("sd15"), lora_dir=lora_dir), lora_backend) as client:
        yield client


async def generate(client: Any, **extra: Any) -> np.ndarray:
    response = await client.post("/execute", json={**BODY, **extra}, headers=JSON)
    assert response.status_code == 200, response.text
    return pixels(decode(response.json()["image"]))


async def test_lora_changes_the_image_and_the_next_job_is_the_base_again(client: Any) -> None:
    base = await generate(client)
    ink = await generate(client, loras=[{"name": "ink", "weight": 1.0}])
    after = await generate(client)
    assert not np.array_equal(ink, base)
    assert np.array_equal(after, base), "a job without LoRAs must get the base model byte for byte"
    assert np.array_equal(await generate(client, loras=[{"name": "ink"}]), ink), "cached adapter, same result"


async def test_weight_zero_is_the_base_and_two_loras_combine(client: Any) -> None:
    base = await generate(client)
    assert np.array_equal(await generate(client, loras=[{"name": "glow", "weight": 0.0}]), base)
    ink = await generate(client, loras=[{"name": "ink"}])
    glow = await generate(client, loras=[{"name": "glow"}])
    both = await generate(client, loras=[{"name": "ink"}, {"name": "glow", "weight": 1.0}])
    assert not np.array_equal(both, ink) and not np.array_equal(both, glow)
    half = await generate(client, loras=[{"name": "ink", "weight": 0.5}])
    assert not np.array_equal(half, ink) and not np.array_equal(half, base)


async def test_listing_refresh_and_refusals(client: Any, lora_dir: Path, tiny_model: Any) -> None:
    listed = {item["name"]: item for item in (await client.get("/v1/loras")).json()["loras"]}
    assert set(listed) == {"ink", "glow", "xl-style"}
    assert listed["ink"]["compatible"] and listed["ink"]["cross_attention_dim"] == 32
    assert listed["ink"]["size"] == (lora_dir / "ink.safetensors").stat().st_size
    assert not listed["xl-style"]["compatible"]

    wrong = await client.post("/execute", json={**BODY, "loras": [{"name": "xl-style"}]}, headers=JSON)
    assert wrong.status_code == 422 and wrong.json()["error"]["field"] == "loras.0.name"
    assert "cross-attention width" in wrong.json()["error"]["message"]
    for name in ("../ink", "/etc/passwd", "nope"):
        escaped = await client.post("/execute", json={**BODY, "loras": [{"name": name}]}, headers=JSON)
        assert escaped.status_code == 422 and "available: glow, ink, xl-style" in escaped.json()["error"]["message"]

    make_tiny_models.make_lora(tiny_model("sd15"), lora_dir / "fresh.safetensors", seed=4)
    assert "fresh" not in {item["name"] for item in (await client.get("/v1/loras")).json()["loras"]}
    refreshed = (await client.post("/v1/loras/refresh")).json()["loras"]
    assert "fresh" in {item["name"] for item in refreshed}
    assert (await client.post("/execute", json={**BODY, "loras": [{"name": "fresh"}]}, headers=JSON)).status_code == 200


async def test_loras_without_a_lora_dir_are_refused(client_for: Any) -> None:
    async with client_for("sd15") as client:
        response = await client.post("/execute", json={**BODY, "loras": [{"name": "ink"}]}, headers=JSON)
        assert (await client.get("/v1/loras")).json() == {"loras": []}
    assert response.status_code == 422 and "--lora-dir" in response.json()["error"]["message"]
