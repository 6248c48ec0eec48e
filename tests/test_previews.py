"""Live previews: `preview_every` sends small JPEGs in step order; cheap projection by default, VAE on request."""

from __future__ import annotations

import base64
import io
from typing import Any

from PIL import Image

from tests.support import app_client, decode, parse_sse, worker_settings
from worker.backends.cpu import CpuBackend
from worker.imaging import preview_jpeg

BODY = {"prompt": "a cat", "steps": 20, "seed": 3, "width": 64, "height": 64, "scheduler": "ddim", "preview_every": 5}


def previews_of(text: str) -> list[dict[str, Any]]:
    return [data for name, data in parse_sse(text) if name == "preview"]


async def test_preview_every_5_of_20_steps_sends_4_jpegs_in_step_order(client_for: Any) -> None:
    async with client_for("sd15") as client:
        events = parse_sse((await client.post("/execute", json=BODY)).text)
    previews = [data for name, data in events if name == "preview"]
    assert [p["step"] for p in previews] == [5, 10, 15, 20]
    for preview in previews:
        image = Image.open(io.BytesIO(base64.b64decode(preview["image"])))
        assert image.format == "JPEG" and image.size == (64, 64)
    names = [name for name, _ in events]
    assert names.index("complete") > max(i for i, name in enumerate(names) if name == "preview")


async def test_no_previews_unless_asked(client_for: Any) -> None:
    async with client_for("sd15") as client:
        assert previews_of((await client.post("/execute", json={**BODY, "preview_every": 0})).text) == []


async def test_vae_previews_show_the_image_being_made(tiny_model: Any) -> None:
    settings = worker_settings("sd15", tiny_model("sd15"), preview_decoder="vae")
    backend = CpuBackend(settings)
    backend.load()
    async with app_client(settings, backend) as client:
        events = parse_sse((await client.post("/execute", json=BODY)).text)
    last_preview = previews_of_events(events)[-1]
    final = decode(events[-1][1]["image"])
    # after the last step the latents are the final ones: the preview is that very image, as a small JPEG
    assert last_preview["step"] == 20
    assert last_preview["image"] == preview_jpeg(final)


def previews_of_events(events: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [data for name, data in events if name == "preview"]
