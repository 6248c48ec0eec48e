"""Decode and validate uploaded images and masks; composite inpaint results; encode outputs with metadata."""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageFilter, ImageOps, PngImagePlugin, UnidentifiedImageError

from worker.errors import BadRequest, InvalidRequest, PayloadTooLarge, UnsupportedMediaType

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")
PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
MIME_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
EXIF_IFD = 0x8769
EXIF_USER_COMMENT = 0x9286
PNG_COMPRESS_LEVEL = 1  # default of --png-compression: a 1024² PNG in tens of ms rather than hundreds


def b64decode_field(data: str, field: str) -> bytes:
    """Base64 (with or without a `data:` URL prefix) → bytes, or a 400 naming the field."""
    if data.startswith("data:"):
        _, _, data = data.partition(",")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{field} is not valid base64", field=field) from None


def open_upload(raw: bytes, field: str, max_pixels: int) -> Image.Image:
    """Open PNG/JPEG/WebP bytes, checking the format and the pixel count from the header before decoding."""
    try:
        image = Image.open(io.BytesIO(raw))
    except Image.DecompressionBombError as exc:  # PIL's own guard fires first for the very largest claims
        raise PayloadTooLarge(f"{field} is too large: {exc}; the limit is {max_pixels} pixels", field=field) from None
    except (UnidentifiedImageError, OSError):
        raise UnsupportedMediaType(f"{field} is not a readable image; send PNG, JPEG or WebP", field=field) from None
    if image.format not in ACCEPTED_FORMATS:
        raise UnsupportedMediaType(f"{field} is {image.format}; send PNG, JPEG or WebP", field=field)
    width, height = image.size
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"{field} is {width}x{height} ({width * height} pixels); the limit is {max_pixels}", field=field
        )
    try:
        image.load()
    except (OSError, Image.DecompressionBombError, SyntaxError):
        raise BadRequest(f"{field} could not be decoded", field=field) from None
    return ImageOps.exif_transpose(image)


def alpha_mask(mask: Image.Image, field: str) -> Image.Image:
    """A mask in OpenAI's convention (fully transparent = edit) as ours (white = repaint)."""
    if "A" not in mask.getbands():
        raise InvalidRequest(
            f"{field} must have an alpha channel: fully transparent pixels mark the area to edit", field=field
        )
    return mask.getchannel("A").point(lambda alpha: 255 if alpha == 0 else 0)


def fit_image(image: Image.Image, width: int, height: int) -> Image.Image:
    """Resize `image` to exactly width×height (Lanczos) unless it already is."""
    if image.size == (width, height):
        return image
    return image.resize((width, height), Image.Resampling.LANCZOS)


def check_mask_size(image: Image.Image, mask: Image.Image) -> None:
    """The mask must cover the image pixel for pixel."""
    if mask.size != image.size:
        raise InvalidRequest(
            f"mask is {mask.size[0]}x{mask.size[1]} but image is {image.size[0]}x{image.size[1]}; "
            "they must be the same size",
            field="mask",
        )


def blur_mask(mask: Image.Image, radius: int) -> Image.Image:
    """Feather the mask edge by `radius` pixels (0 = unchanged)."""
    return mask.filter(ImageFilter.GaussianBlur(radius)) if radius > 0 else mask


def composite(original: Image.Image, generated: Image.Image, mask: Image.Image) -> Image.Image:
    """Blend `generated` over `original` by `mask`: where the mask is 0 the original pixels come back as-is."""
    alpha = np.asarray(mask.convert("L"), dtype=np.uint16)[..., None]
    src = np.asarray(original.convert("RGB"), dtype=np.uint16)
    gen = np.asarray(generated.convert("RGB"), dtype=np.uint16)
    out = (src * (255 - alpha) + gen * alpha + 127) // 255
    return Image.fromarray(out.astype(np.uint8), "RGB")


def encode_image(
    image: Image.Image,
    fmt: str,
    infotext: str,
    request_json: dict[str, Any],
    compression: int | None = None,
    png_level: int = PNG_COMPRESS_LEVEL,
) -> bytes:
    """PNG with `parameters` + `sd-worker` text chunks, or JPEG/WebP with the same in EXIF UserComment.

    `compression` (0-100, OpenAI's `output_compression`) sets PNG's zlib level or JPEG/WebP's quality (100 - c);
    without it PNGs use `png_level` (the worker's --png-compression).
    """
    buffer = io.BytesIO()
    payload = json.dumps(request_json, separators=(",", ":"), sort_keys=True)
    if fmt == "png":
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", infotext)
        info.add_text("sd-worker", payload)
        level = png_level if compression is None else round(compression * 9 / 100)
        image.save(buffer, "PNG", pnginfo=info, compress_level=level)
    else:
        exif = Image.Exif()
        comment = f"{infotext}\nsd-worker: {payload}"
        exif.get_ifd(EXIF_IFD)[EXIF_USER_COMMENT] = b"UNICODE\x00" + comment.encode("utf-16-be")
        quality = 90 if compression is None else max(1, 100 - compression)
        image.save(buffer, PIL_FORMATS[fmt], quality=quality, exif=exif)
    return buffer.getvalue()


def read_user_comment(image: Image.Image) -> str | None:
    """The text of an EXIF UserComment written by `encode_image` (for tests and clients)."""
    raw = image.getexif().get_ifd(EXIF_IFD).get(EXIF_USER_COMMENT)
    if not isinstance(raw, bytes) or not raw.startswith(b"UNICODE\x00"):
        return None
    return raw[8:].decode("utf-16-be")


def infotext(
    *,
    prompt: str,
    negative_prompt: str | None,
    steps: int,
    sampler: str,
    guidance: float,
    seed: int,
    width: int,
    height: int,
    model: str,
    strength: float | None = None,
    extra: Sequence[tuple[str, str]] = (),
) -> str:
    """AUTOMATIC1111's `parameters` format, so tools that read A1111 PNGs read ours (`extra`: more fields)."""
    lines = [prompt]
    if negative_prompt:
        lines.append(f"Negative prompt: {negative_prompt}")
    fields = [
        f"Steps: {steps}",
        f"Sampler: {sampler}",
        f"CFG scale: {guidance:g}",
        f"Seed: {seed}",
        f"Size: {width}x{height}",
        f"Model: {model}",
    ]
    if strength is not None:
        fields.append(f"Denoising strength: {strength:g}")
    fields.extend(f"{name}: {_quote(value)}" for name, value in extra)
    lines.append(", ".join(fields))
    return "\n".join(lines)


def _quote(value: str) -> str:
    """An infotext value, JSON-quoted when it holds a separator (A1111's `infotext_utils.quote`)."""
    return json.dumps(value, ensure_ascii=False) if any(c in value for c in ',\n:"') else value


def to_base64(data: bytes) -> str:
    """Bytes → plain base64 text (no data: prefix)."""
    return base64.b64encode(data).decode("ascii")


PREVIEW_SIDE = 256  # live previews are thumbnails; OpenAI partial images keep the output size


def preview_bytes(image: Image.Image, max_side: int = PREVIEW_SIDE) -> bytes:
    """A small JPEG of an intermediate image (for `Preview` events)."""
    small = image.copy()
    small.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    small.convert("RGB").save(buffer, "JPEG", quality=75)
    return buffer.getvalue()


def preview_jpeg(image: Image.Image, max_side: int = PREVIEW_SIDE) -> str:
    """The same small JPEG, base64, as a `preview` event carries it."""
    return to_base64(preview_bytes(image, max_side))
