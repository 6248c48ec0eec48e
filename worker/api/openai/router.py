"""Thin OpenAI-compatible routes: parse → OpenAIImages → respond."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from PIL import Image
from starlette.datastructures import FormData, UploadFile

from worker import imaging
from worker.api.openai.protocol import ImageEditRequest, ImageGenerationRequest
from worker.api.openai.serving import OpenAIImages
from worker.api.routes import SSE_HEADERS, State
from worker.errors import InvalidRequest

router = APIRouter()
FILE_FIELDS = ("image", "image[]", "mask")


def openai_images(state: State) -> OpenAIImages:
    """The OpenAI service over this app's state (a FastAPI dependency)."""
    return OpenAIImages(state)


Images = Annotated[OpenAIImages, Depends(openai_images)]


@router.get("/v1/models")
async def models(images: Images) -> dict[str, Any]:
    """The loaded model."""
    return images.models()


@router.post("/v1/images/generations", response_model=None)
async def generations(body: ImageGenerationRequest, request: Request, images: Images) -> Response | dict[str, Any]:
    """Text-to-image, OpenAI style."""
    job = await images.submit("txt2img", body)
    return await _answer(images, job, body, request, "image_generation")


@router.post("/v1/images/edits", response_model=None)
async def edits(request: Request, images: Images) -> Response | dict[str, Any]:
    """Image edits (multipart): with a mask, transparent pixels are repainted; without one, img2img."""
    limits = images.state.settings.limits
    form = await request.form(max_files=4, max_fields=64, max_part_size=limits.max_body_bytes)
    body = ImageEditRequest(**_fields(form))
    image = await _image(form, limits.max_upload_pixels)
    mask = await _mask(form, limits.max_upload_pixels)
    job = await images.submit("inpaint" if mask is not None else "img2img", body, image, mask)
    return await _answer(images, job, body, request, "image_edit")


@router.get("/v1/files/{file_id}")
async def files(file_id: str, images: Images) -> FileResponse:
    """An image written for a `url` response (or under --output-dir)."""
    path = images.state.engine.store.path(file_id)
    return FileResponse(path, media_type=imaging.MIME_TYPES[path.suffix[1:]])


async def _answer(
    images: OpenAIImages, job: Any, body: ImageGenerationRequest | ImageEditRequest, request: Request, kind: str
) -> Response | dict[str, Any]:
    if body.stream:
        return StreamingResponse(images.stream(job, body, kind), media_type="text/event-stream", headers=SSE_HEADERS)
    await images.state.service.wait(job, request.is_disconnected)
    return await images.response(job, body, str(request.base_url))


def _fields(form: FormData) -> dict[str, Any]:
    fields: dict[str, Any] = {k: v for k, v in form.items() if k not in FILE_FIELDS and isinstance(v, str)}
    if "nvext" in fields:
        try:
            fields["nvext"] = json.loads(fields["nvext"])
        except json.JSONDecodeError:
            raise InvalidRequest("nvext must be a JSON object", field="nvext") from None
    return fields


async def _image(form: FormData, max_pixels: int) -> Image.Image:
    uploads = [u for key in ("image", "image[]") for u in form.getlist(key) if isinstance(u, UploadFile)]
    if len(uploads) != 1:
        raise InvalidRequest(f"send exactly one image (got {len(uploads)})", field="image")
    return imaging.open_upload(await uploads[0].read(), "image", max_pixels).convert("RGB")


async def _mask(form: FormData, max_pixels: int) -> Image.Image | None:
    upload = form.get("mask")
    if not isinstance(upload, UploadFile):
        return None
    mask = imaging.open_upload(await upload.read(), "mask", max_pixels)
    if "A" not in mask.getbands():
        raise InvalidRequest(
            "mask must have an alpha channel: fully transparent pixels mark the area to edit", field="mask"
        )
    # OpenAI's convention (transparent = edit) → ours (white = repaint)
    return mask.getchannel("A").point(lambda alpha: 255 if alpha == 0 else 0)
