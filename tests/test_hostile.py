"""Hostile input, one place: what a worker on a shared network gets, and the bounded answer to each.

Other suites cover more of the same with the same real clients: bounds and bad values (`test_validation.py`,
`test_fuzz.py`), overload and cancellation (`test_cancel.py`, `test_engine.py`), auth (`test_auth.py`),
observability (`test_observability.py`). This file adds the cases that need crafted payloads.
"""

from __future__ import annotations

import io
import os
import time
from typing import Any

import numpy as np
from PIL import Image

from tests.support import b64_png, decode, live_server, worker_settings

JSON = {"Accept": "application/json"}
OK = {"prompt": "a cat", "steps": 2, "scheduler": "ddim"}


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def png_bomb(side: int = 14000) -> bytes:
    """A small PNG file that decodes to side × side pixels (14000: 196 MP, 588 MB as RGB)."""
    buffer = io.BytesIO()
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # PIL's own guard would refuse to make it
    try:
        Image.new("1", (side, side)).save(buffer, "PNG", optimize=True)
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    return buffer.getvalue()


async def test_decompression_bomb_is_refused_from_its_header(client_for: Any) -> None:
    bomb = png_bomb()
    assert len(bomb) < 1_000_000
    import base64

    body = {**OK, "image": base64.b64encode(bomb).decode()}
    async with client_for("sd15") as client:
        before = rss_mb()
        start = time.perf_counter()
        response = await client.post("/img2img", json=body, headers=JSON)
        elapsed = time.perf_counter() - start
        growth = rss_mb() - before
    assert response.status_code == 413 and response.json()["error"]["field"] == "image"
    assert "196000000 pixels" in response.json()["error"]["message"]
    assert elapsed < 1.0, f"took {elapsed:.2f}s"
    assert growth < 100, f"RSS grew {growth:.0f} MB: the pixels were decoded"


async def test_an_image_over_the_upload_cap_is_refused_by_our_own_check(client_for: Any) -> None:
    import base64

    body = {**OK, "image": base64.b64encode(png_bomb(7000)).decode()}  # 49 MP: under PIL's guard, over 40 MP
    async with client_for("sd15") as client:
        response = await client.post("/img2img", json=body, headers=JSON)
    assert response.status_code == 413
    assert response.json()["error"]["message"] == "image is 7000x7000 (49000000 pixels); the limit is 40000000"


async def test_exif_orientation_is_applied(client_for: Any) -> None:
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buffer, "JPEG", exif=exif)
    import base64

    body = {**OK, "image": base64.b64encode(buffer.getvalue()).decode(), "strength": 0.5}
    async with client_for("sd15") as client:
        result = (await client.post("/img2img", json=body, headers=JSON)).json()
    assert (result["width"], result["height"]) == (48, 64), "the displayed (rotated) size is what gets generated"


async def test_alpha_in_an_init_image_is_dropped_deliberately(client_for: Any) -> None:
    rgba = Image.new("RGBA", (64, 64), (10, 200, 10, 0))  # fully transparent green
    async with client_for("sd15") as client:
        response = await client.post(
            "/inpaint", json={**OK, "image": b64_png(rgba), "mask": b64_png(Image.new("L", (64, 64), 0))}, headers=JSON
        )
    # an all-black mask keeps every pixel: the colour channels come back, the alpha channel does not
    out = np.asarray(decode(response.json()["image"]))
    assert out.shape == (64, 64, 3) and (out == (10, 200, 10)).all()


def test_multipart_field_count_and_part_size_are_bounded(backend_for: Any, tiny_model: Any) -> None:
    import httpx

    settings = worker_settings("sd15", tiny_model("sd15"))
    settings.limits.max_body_bytes = 256 * 1024
    png = io.BytesIO()
    Image.new("RGB", (64, 64)).save(png, "PNG")
    with live_server(settings, backend_for("sd15")) as url:
        many = {f"field{i}": "x" for i in range(100)} | {"prompt": "a cat"}
        too_many = httpx.post(f"{url}/v1/images/edits", data=many, files={"image": ("a.png", png.getvalue())})
        big = httpx.post(
            f"{url}/v1/images/edits", data={"prompt": "a" * (300 * 1024)}, files={"image": ("a.png", png.getvalue())}
        )
        health = httpx.get(f"{url}/health")
    assert too_many.status_code == 400 and "fields" in too_many.text.lower()
    assert big.status_code == 413
    assert health.status_code == 200
