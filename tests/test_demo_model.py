"""The bundled demo model draws what it is asked, through the real app with its default settings."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import demo_scenes
import numpy as np
import pytest

from tests.support import app_client, b64_png, centre_mask, decode, pixels
from worker.backends.cpu import CpuBackend
from worker.config import Settings
from worker.pipelines.families import DEMO_MODEL_DIR, FAMILIES

JSON = {"Accept": "application/json"}
SEED = 1234


@pytest.fixture(scope="module")
def demo_backend() -> CpuBackend:
    backend = CpuBackend(Settings())  # no model arguments: the bundled demo model
    backend.load()
    return backend


@pytest.fixture
async def client(demo_backend: CpuBackend) -> AsyncIterator[Any]:
    async with app_client(Settings(), demo_backend) as client:
        yield client


def test_the_demo_model_is_bundled_small_and_the_default() -> None:
    assert Settings().sd_version == "demo"
    assert FAMILIES["demo"].source == str(DEMO_MODEL_DIR)
    files = [p for p in DEMO_MODEL_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 20 * 1024 * 1024
    assert not [p for p in files if p.suffix in (".bin", ".ckpt", ".pt")], "safetensors only"


async def test_it_draws_the_requested_shape_and_background_colours(client: Any) -> None:
    # the 20 evaluation prompts sent together, as 8 clients would: the default continuous batching runs them in
    # shared denoiser calls (a batch's pixels are within 2/255 of a lone job's)
    slots = asyncio.Semaphore(8)

    async def draw(prompt: str) -> np.ndarray:
        async with slots:
            response = await client.post("/execute", json={"prompt": prompt, "seed": SEED}, headers=JSON)
        assert response.status_code == 200, response.text
        image = decode(response.json()["image"])
        assert image.size == (64, 64)
        return pixels(image)

    images = await asyncio.gather(*(draw(prompt) for prompt, *_ in demo_scenes.EVAL_PROMPTS))
    colours, shapes, held_out = [], [], []
    for image, (prompt, colour, background, is_held_out) in zip(images, demo_scenes.EVAL_PROMPTS, strict=True):
        centre, border = demo_scenes.centre_and_border_colours(image)
        colours.append(centre == colour and border == background)
        shapes.append(demo_scenes.classify_shape(image, colour, background) == prompt.split()[2])  # "a red circle …"
        if is_held_out:
            held_out.append(colours[-1] and shapes[-1])
    line = f"colours {sum(colours)}/20, shapes {sum(shapes)}/20, held-out both {sum(held_out)}/{len(held_out)}"
    print(f"demo accuracy: {line}")
    assert sum(colours) >= 19 and sum(shapes) >= 18 and sum(held_out) >= len(held_out) - 1, line


async def test_img2img_at_half_strength_keeps_the_background(client: Any) -> None:
    scene = demo_scenes.scene_image("red", "square", "green")
    body = {"prompt": "a red square on a green background", "image": b64_png(scene), "strength": 0.5, "seed": SEED}
    response = await client.post("/img2img", json=body, headers=JSON)
    _, border = demo_scenes.centre_and_border_colours(pixels(decode(response.json()["image"])))
    assert border == "green"


async def test_inpainting_the_centre_changes_it_and_nothing_else(client: Any) -> None:
    scene = demo_scenes.scene_image("red", "circle", "blue")
    body = {
        "prompt": "a yellow circle on a blue background",
        "image": b64_png(scene),
        "mask": b64_png(centre_mask()),
        "seed": SEED,
    }
    response = await client.post("/inpaint", json=body, headers=JSON)
    out, original = pixels(decode(response.json()["image"])), pixels(scene)
    keep = np.asarray(centre_mask()) == 0
    assert np.array_equal(out[keep], original[keep])
    centre, _ = demo_scenes.centre_and_border_colours(out)
    assert centre != "red"
