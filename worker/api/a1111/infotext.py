"""`/sdapi/v1/png-info`: read an image's infotext back, and parse it as A1111's
`infotext_utils.parse_generation_parameters` does (prompt, negative prompt, then `Key: value` pairs)."""

from __future__ import annotations

import contextlib
import io
import json
import re
from typing import Any

from PIL import Image

from worker import imaging
from worker.errors import UnsupportedMediaType

PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
SIZE = re.compile(r"^(\d+)x(\d+)$")
OWN_CHUNK = "sd-worker"


def read(data: str, max_pixels: int) -> dict[str, Any]:
    """A1111's `PNGInfoResponse` for a base64 image (PNG text chunk, or JPEG/WebP EXIF UserComment)."""
    raw = imaging.b64decode_field(data.strip(), "image")
    try:
        image = Image.open(io.BytesIO(raw))
    except Exception:
        raise UnsupportedMediaType("image is not a readable image; send PNG, JPEG or WebP", field="image") from None
    if image.width * image.height > max_pixels:
        return {"info": "", "items": {}, "parameters": {}}
    items = {k: v for k, v in image.info.items() if isinstance(k, str) and isinstance(v, str)}
    geninfo = items.pop("parameters", None)
    if geninfo is None and (comment := imaging.read_user_comment(image)) is not None:
        geninfo, _, payload = comment.partition(f"\n{OWN_CHUNK}: ")
        if payload:
            items[OWN_CHUNK] = payload
    geninfo = geninfo or ""
    return {"info": geninfo, "items": items, "parameters": parse(geninfo) if geninfo else {}}


def parse(text: str) -> dict[str, Any]:
    """Infotext → {"Prompt", "Negative prompt", key: value…}; "Size: 64x64" gives "Size-1" and "Size-2"."""
    *lines, last = text.strip().split("\n")
    if len(PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt: list[str] = []
    negative: list[str] = []
    for line in (line.strip() for line in lines):
        if line.startswith("Negative prompt:"):
            negative.append(line[len("Negative prompt:") :].strip())
        elif negative:
            negative.append(line)
        else:
            prompt.append(line)
    result: dict[str, Any] = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in PARAM.findall(last):
        if len(value) > 1 and value[0] == value[-1] == '"':
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(value)
        size = SIZE.match(value)
        if size is not None:
            result[f"{key}-1"], result[f"{key}-2"] = size.group(1), size.group(2)
        else:
            result[key] = value
    return result
