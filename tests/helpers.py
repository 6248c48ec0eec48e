"""Test inputs and decoding helpers shared by the test modules."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


def init_image(size: int = 64) -> Image.Image:
    """A deterministic, structured RGB picture (gradients and a block), for img2img/inpaint."""
    y, x = np.mgrid[0:size, 0:size]
    rgb = np.stack([x * 255 // size, y * 255 // size, (x + y) * 127 // size], axis=-1).astype(np.uint8)
    rgb[size // 4 : size // 2, size // 4 : size // 2] = (250, 30, 30)
    return Image.fromarray(rgb, "RGB")


def centre_mask(size: int = 64) -> Image.Image:
    """White (repaint) square in the centre, black elsewhere."""
    mask = np.zeros((size, size), np.uint8)
    mask[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 255
    return Image.fromarray(mask, "L")


def b64_png(image: Image.Image, fmt: str = "PNG") -> str:
    """An image as base64 text, as clients send it."""
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def decode(data: str) -> Image.Image:
    """base64 from a response → PIL image (fully loaded)."""
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return image


def pixels(image: Image.Image) -> np.ndarray:
    """RGB pixel array, for byte-for-byte comparisons."""
    return np.asarray(image.convert("RGB"))
