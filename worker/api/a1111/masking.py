"""A1111's image preparation for img2img and inpainting (`modules/masking.py`, `images.resize_image`):
crop-and-resize, masked-area fill, and "inpaint only masked" (crop around the mask, inpaint at full size, paste
back). Runs in the API layer on PIL images, off the event loop."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

from PIL import Image, ImageFilter, ImageOps

from worker import imaging

Box = tuple[int, int, int, int]


def crop_resize(image: Image.Image, width: int, height: int) -> Image.Image:
    """resize_mode 1: scale to cover width×height, then crop the centre."""
    scale = max(width / image.width, height / image.height)
    size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    resized = image.resize(size, Image.Resampling.LANCZOS)
    left, top = (resized.width - width) // 2, (resized.height - height) // 2
    return resized.crop((left, top, left + width, top + height))


def fill(image: Image.Image, mask: Image.Image) -> Image.Image:
    """inpainting_fill 0: the masked area painted with blurred colours of its surroundings."""
    masked = Image.new("RGBa", image.size)
    masked.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    filled = Image.new("RGBA", image.size)
    for radius, repeats in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        blurred = masked.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            filled.alpha_composite(blurred)
    return filled.convert("RGB")


def crop_region(mask: Image.Image, padding: int, width: int, height: int) -> Box:
    """The box around the mask's white pixels, padded, grown to the width:height aspect within the image."""
    box = mask.getbbox()
    if box is None:
        return 0, 0, mask.width, mask.height
    x1, y1 = max(box[0] - padding, 0), max(box[1] - padding, 0)
    x2, y2 = min(box[2] + padding, mask.width), min(box[3] + padding, mask.height)
    if (x2 - x1) / (y2 - y1) > width / height:
        y1, y2 = _grow(y1, y2, round((x2 - x1) * height / width), mask.height)
    else:
        x1, x2 = _grow(x1, x2, round((y2 - y1) * width / height), mask.width)
    return x1, y1, x2, y2


def _grow(start: int, end: int, wanted: int, limit: int) -> tuple[int, int]:
    """Widen [start, end) to `wanted` around its centre, shifted to stay inside [0, limit)."""
    extra = max(wanted - (end - start), 0)
    start, end = start - extra // 2, end + extra - extra // 2
    if end > limit:
        start, end = start - (end - limit), limit
    if start < 0:
        start, end = 0, min(end - start, limit)
    return start, end


@dataclass(frozen=True)
class OnlyMasked:
    """inpaint_full_res: the region inpainted at full size, and what pasting it back needs."""

    region: Box
    original: Image.Image  # the init image at the output size
    mask: Image.Image  # the full-size mask, blurred as the job's

    @classmethod
    def prepare(
        cls, image: Image.Image, mask: Image.Image, blur: int, padding: int
    ) -> tuple[OnlyMasked, Image.Image, Image.Image]:
        """(plan, the region's image, the region's mask), both scaled up to the image's size."""
        blurred = imaging.blur_mask(mask, blur)
        region = crop_region(blurred, padding, image.width, image.height)
        size = image.size
        crop = image.crop(region).resize(size, Image.Resampling.LANCZOS)
        crop_mask = mask.crop(region).resize(size, Image.Resampling.LANCZOS)
        return cls(region, image, blurred), crop, crop_mask

    def paste(self, data: bytes, png_level: int) -> bytes:
        """A generated region image (encoded, with metadata) pasted back into the original, re-encoded."""
        encoded = Image.open(io.BytesIO(data))
        encoded.load()
        x1, y1, x2, y2 = self.region
        canvas = self.original.convert("RGB")
        canvas.paste(encoded.convert("RGB").resize((x2 - x1, y2 - y1), Image.Resampling.LANCZOS), (x1, y1))
        result = imaging.composite(self.original, canvas, self.mask)
        infotext = str(encoded.info.get("parameters", ""))
        echo = json.loads(str(encoded.info.get("sd-worker", "{}")))
        fmt = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}.get(encoded.format or "PNG", "png")
        if fmt != "png":
            infotext, _, payload = (imaging.read_user_comment(encoded) or "").partition("\nsd-worker: ")
            echo = json.loads(payload or "{}")
        return imaging.encode_image(result, fmt, infotext, echo, png_level=png_level)
