"""Thin OpenAI-compatible routes: parse → OpenAIImages (`to_params()` → engine) → respond."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from starlette.datastructures import FormData, UploadFile

from worker import imaging
from worker.api import serving
from worker.api.openai.protocol import ImageEditRequest, ImageGenerationRequest
from worker.api.openai.serving import OpenAIImages
from worker.api.sse import SSE_HEADERS
from worker.api.state import State
from worker.engine.job import Job
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
    image = await _image(form)
    mask = await _mask(form)
    job = await images.submit("inpaint" if mask is not None else "img2img", body, image, mask)
    return await _answer(images, job, body, request, "image_edit")


@router.get("/v1/files/{file_id}")
async def files(file_id: str, images: Images) -> FileResponse:
    """An image written for a `url` response (or under --output-dir)."""
    path = images.state.engine.store.path(file_id)
    return FileResponse(path, media_type=imaging.MIME_TYPES[path.suffix[1:]])


async def _answer(
    images: OpenAIImages, job: Job, body: ImageGenerationRequest | ImageEditRequest, request: Request, kind: str
) -> Response | dict[str, Any]:
    if body.stream:
        return StreamingResponse(images.stream(job, body, kind), media_type="text/event-stream", headers=SSE_HEADERS)
    result = await serving.wait(images.state.engine, job, request.is_disconnected)
    return await images.response(job, result, body, str(request.base_url))


def _fields(form: FormData) -> dict[str, Any]:
    fields: dict[str, Any] = {k: v for k, v in form.items() if k not in FILE_FIELDS and isinstance(v, str)}
    if "nvext" in fields:
        try:
            fields["nvext"] = json.loads(fields["nvext"])
        except json.JSONDecodeError:
            raise InvalidRequest("nvext must be a JSON object", field="nvext") from None
    return fields


async def _image(form: FormData) -> bytes:
    uploads = [u for key in ("image", "image[]") for u in form.getlist(key) if isinstance(u, UploadFile)]
    if len(uploads) != 1:
        raise InvalidRequest(f"send exactly one image (got {len(uploads)})", field="image")
    return await uploads[0].read()


async def _mask(form: FormData) -> bytes | None:
    upload = form.get("mask")
    return await upload.read() if isinstance(upload, UploadFile) else None
