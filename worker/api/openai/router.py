"""Thin OpenAI-compatible routes: parse → OpenAIImages (`to_params()` → engine) → respond."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.datastructures import FormData, UploadFile

from worker import imaging
from worker.api import serving
from worker.api.errors import error_response
from worker.api.openai.protocol import ImageEditRequest, ImageGenerationRequest
from worker.api.openai.serving import OpenAIImages
from worker.api.sse import SSE_HEADERS
from worker.api.state import State
from worker.engine.job import Job
from worker.errors import InvalidRequest, WorkerError

router = APIRouter()
FILE_FIELDS = ("image", "image[]", "mask")
NESTED = re.compile(r"^nvext\[(\w+)\]$")  # how the SDKs flatten extra_body={"nvext": {...}} into a form


def openai_images(state: State) -> OpenAIImages:
    """The OpenAI service over this app's state (a FastAPI dependency)."""
    return OpenAIImages(state)


Images = Annotated[OpenAIImages, Depends(openai_images)]


@router.get("/v1/models")
async def models(images: Images) -> dict[str, Any]:
    """The loaded model, under every name it answers to."""
    return images.served.listing()


@router.get("/v1/models/{model:path}")
async def model(model: str, images: Images) -> dict[str, Any]:
    """One of those names (404 listing them for any other)."""
    return images.served.card(model)


@router.post("/v1/images/generations", response_model=None)
async def generations(body: ImageGenerationRequest, request: Request, images: Images) -> Response:
    """Text-to-image, OpenAI style."""
    job = await images.submit("txt2img", body)
    return await _answer(images, job, body, request, "image_generation")


@router.post("/v1/images/edits", response_model=None)
async def edits(request: Request, images: Images) -> Response:
    """Image edits (multipart): with a mask, its transparent pixels are repainted; without one, the image's own
    transparent pixels (DALL·E 2), or img2img for an opaque image."""
    limits = images.state.settings.limits
    form = await request.form(max_files=4, max_fields=64, max_part_size=limits.max_body_bytes)
    body = ImageEditRequest(**_fields(form))
    image = await _image(form)
    task, mask = await images.edit_task(image, await _mask(form))
    job = await images.submit(task, body, image, mask)
    return await _answer(images, job, body, request, "image_edit")


@router.get("/v1/files/{file_id}")
async def files(file_id: str, images: Images) -> FileResponse:
    """An image written for a `url` response (or under --output-dir)."""
    path = images.state.engine.store.path(file_id)
    return FileResponse(path, media_type=imaging.MIME_TYPES[path.suffix[1:]])


async def _answer(
    images: OpenAIImages, job: Job, body: ImageGenerationRequest | ImageEditRequest, request: Request, kind: str
) -> Response:
    """The stream or the JSON answer, naming the job (`X-Job-Id`) and the knobs that were ignored."""
    headers = {"X-Job-Id": job.id}
    if body.ignored:
        headers["X-Ignored-Params"] = ", ".join(body.ignored)
    if body.stream:
        stream = images.stream(job, body, kind)
        return StreamingResponse(stream, media_type="text/event-stream", headers={**SSE_HEADERS, **headers})
    try:
        result = await serving.wait(images.state.engine, job, request.is_disconnected)
    except WorkerError as exc:
        failed = error_response(exc.status, exc.code, exc.message, openai=True)
        failed.headers.update(headers)
        return failed
    return JSONResponse(await images.response(job, result, body, str(request.base_url)), headers=headers)


def _fields(form: FormData) -> dict[str, Any]:
    """The form's text fields; `nvext` as JSON text or as the `nvext[key]` fields SDKs send for nested dicts."""
    fields: dict[str, Any] = {}
    nested: dict[str, str] = {}
    for key, value in form.multi_items():
        if key in FILE_FIELDS or not isinstance(value, str):
            continue
        if (match := NESTED.match(key)) is not None:
            nested[match.group(1)] = value
        else:
            fields[key] = value
    if "nvext" in fields:
        try:
            fields["nvext"] = json.loads(fields["nvext"])
        except json.JSONDecodeError:
            raise InvalidRequest("nvext must be a JSON object", field="nvext") from None
    if nested:
        if not isinstance(fields.get("nvext", {}), dict):
            raise InvalidRequest("nvext must be a JSON object", field="nvext")
        fields["nvext"] = {**fields.get("nvext", {}), **nested}
    return fields


async def _image(form: FormData) -> bytes:
    uploads = [u for key in ("image", "image[]") for u in form.getlist(key) if isinstance(u, UploadFile)]
    if len(uploads) != 1:
        raise InvalidRequest(f"send exactly one image (got {len(uploads)})", field="image")
    return await uploads[0].read()


async def _mask(form: FormData) -> bytes | None:
    upload = form.get("mask")
    return await upload.read() if isinstance(upload, UploadFile) else None
