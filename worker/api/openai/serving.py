"""The OpenAI Images service: maps OpenAI requests onto the native service and engine, and jobs onto
OpenAI's response and stream shapes."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from PIL import Image
from starlette.concurrency import run_in_threadpool

from worker.api.openai.protocol import ImageEditRequest, ImageRequest
from worker.api.schemas import GenerationBody, Img2ImgBody, InpaintBody
from worker.api.sse import KEEPALIVE
from worker.api.state import WorkerState
from worker.engine.job import Job
from worker.engine.request import Task
from worker.errors import ModelNotFound

log = logging.getLogger(__name__)
QUALITY_STEPS = {"low": 0.5, "high": 1.5, "hd": 1.5}  # × the family's default steps
EVENT_QUALITY = {"standard": "auto", "hd": "high"}  # OpenAI's event schema knows only low/medium/high/auto
NO_USAGE = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0,
            "input_tokens_details": {"image_tokens": 0, "text_tokens": 0}}  # fmt: skip


class OpenAIImages:
    """Generations and edits on the worker's engine."""

    def __init__(self, state: WorkerState) -> None:
        self.state = state

    def models(self) -> dict[str, Any]:
        """`GET /v1/models`: the one loaded model."""
        backend = self.state.backend
        created = int(time.time() - (time.monotonic() - self.state.started_at))
        return {"object": "list", "data": [
            {"id": backend.family.name, "object": "model", "created": created, "owned_by": "sd-worker",
             "root": backend.model_ref}
        ]}  # fmt: skip

    def check_model(self, model: str | None) -> None:
        """Only the loaded model (by family name or reference) may be asked for."""
        backend = self.state.backend
        if model is not None and model not in (backend.family.name, backend.model_ref):
            raise ModelNotFound(
                f"the model {model!r} is not served here; this worker serves {backend.family.name!r}", field="model"
            )

    async def submit(
        self, task: Task, request: ImageRequest, image: Image.Image | None = None, mask: Image.Image | None = None
    ) -> Job:
        """Validate, map onto the native request, and queue the job."""
        self.state.require_ready()
        self.check_model(request.model)
        body = self._body(task, request)
        service = self.state.service
        native = await run_in_threadpool(service.resolve, task, body, (image, mask) if task != "txt2img" else None)
        native = dataclasses.replace(
            native, output_compression=request.output_compression, previews=request.partial_images * request.stream
        )
        job = service.engine.submit(native)
        if request.user is not None:
            log.info("job %s for user %r", job.id, request.user)  # OpenAI's end-user id, for tracing abuse
        return job

    async def response(self, job: Job, request: ImageRequest, base_url: str) -> dict[str, Any]:
        """The `ImagesResponse` of a completed job (files are written off the event loop for `url`)."""
        assert job.result is not None
        result = job.result
        items: list[dict[str, Any]] = []
        for index, (data, seed) in enumerate(zip(result["images"], result["seeds"], strict=True)):
            item: dict[str, Any] = {"revised_prompt": request.prompt, "seed": seed}
            if request.response_format == "url":
                file_id = await run_in_threadpool(self._file_for, job, index, data)
                item["url"] = self.state.engine.store.url(file_id, base_url)
            else:
                item["b64_json"] = data
            items.append(item)
        return {
            "created": int(job.created_at), "data": items, "seeds": result["seeds"],
            "output_format": result["format"], "size": f"{result['width']}x{result['height']}",
            "quality": EVENT_QUALITY.get(request.quality, request.quality), "background": "opaque",
        }  # fmt: skip

    async def stream(self, job: Job, request: ImageRequest, kind: str) -> AsyncIterator[bytes]:
        """OpenAI's image SSE events: `<kind>.partial_image` per preview, `<kind>.completed` per image."""
        quality = EVENT_QUALITY.get(request.quality, request.quality)
        common = {"background": "opaque", "quality": quality}
        partial = 0
        try:
            async for event in job.events.follow(self.state.settings.keepalive_seconds):
                if event is None:
                    yield KEEPALIVE
                elif event.name == "preview":
                    yield _frame(f"{kind}.partial_image", {
                        "type": f"{kind}.partial_image", "b64_json": event.data["image"],
                        "partial_image_index": partial, "created_at": int(time.time()), "size": request.size,
                        "output_format": "jpeg", **common,
                    })  # fmt: skip
                    partial += 1
                elif event.name == "complete":
                    size = f"{event.data['width']}x{event.data['height']}"
                    for data, seed in zip(event.data["images"], event.data["seeds"], strict=True):
                        yield _frame(f"{kind}.completed", {
                            "type": f"{kind}.completed", "b64_json": data, "created_at": int(time.time()),
                            "size": size, "output_format": event.data["format"], "usage": NO_USAGE, "seed": seed,
                            **common,
                        })  # fmt: skip
                elif event.name == "error":
                    error = {"message": event.data["message"], "type": "server_error", "code": event.data["code"]}
                    yield _frame("error", {"type": "error", "error": {**error, "param": None}})
        finally:
            if not job.status.final:
                self.state.engine.cancel(job, "client disconnected")

    def _body(self, task: Task, request: ImageRequest) -> GenerationBody:
        family = self.state.backend.family
        steps = request.extension("num_inference_steps")
        if steps is None and request.quality in QUALITY_STEPS:
            steps = max(1, round(family.steps * QUALITY_STEPS[request.quality]))
        size = request.dimensions()
        fields: dict[str, Any] = {
            "prompt": request.prompt, "negative_prompt": request.extension("negative_prompt"), "steps": steps,
            "guidance_scale": request.extension("guidance_scale"), "seed": request.extension("seed"),
            "num_samples": request.n, "output_format": request.output_format,
            "prompt_syntax": bool(request.extension("prompt_syntax")),
            "width": size[0] if size else None, "height": size[1] if size else None,
        }  # fmt: skip
        strength = request.strength if isinstance(request, ImageEditRequest) else None
        if task == "img2img":
            return Img2ImgBody(**fields, image="(multipart)", strength=strength or 0.8)
        if task == "inpaint":
            return InpaintBody(**fields, image="(multipart)", mask="(multipart)", strength=strength or 1.0)
        return GenerationBody(**fields)

    def _file_for(self, job: Job, index: int, data: str) -> str:
        assert job.result is not None
        files: list[str] = job.result.get("files", [])
        if index < len(files):
            return files[index]
        return self.state.engine.store.save(job.id, index, job.result["format"], base64.b64decode(data))


def _frame(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
