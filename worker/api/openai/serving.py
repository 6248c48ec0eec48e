"""The OpenAI Images service: submits OpenAI requests to the engine through their `to_params()`, and serializes
jobs into OpenAI's response and stream shapes."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from starlette.concurrency import run_in_threadpool

from worker import imaging
from worker.api import serving
from worker.api.openai.models import ServedModels
from worker.api.openai.protocol import ImageRequest
from worker.api.sse import frame, stream_job
from worker.api.state import WorkerState
from worker.engine.events import Completed, Entry, Failed, Preview
from worker.engine.job import Job
from worker.engine.protocol import Task
from worker.webhooks.sender import Delivery

log = logging.getLogger(__name__)
EVENT_QUALITY = {"standard": "auto", "hd": "high"}  # OpenAI's event schema knows only low/medium/high/auto
NO_USAGE = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0,
            "input_tokens_details": {"image_tokens": 0, "text_tokens": 0}}  # fmt: skip


class OpenAIImages:
    """Generations and edits on the worker's engine."""

    def __init__(self, state: WorkerState) -> None:
        self.state = state

    @property
    def served(self) -> ServedModels:
        """The names the loaded model answers to."""
        backend, settings = self.state.backend, self.state.settings
        created = int(time.time() - (time.monotonic() - self.state.started_at))
        return ServedModels(backend.family.name, backend.model_ref, settings.served_model_name, created)

    async def submit(
        self, task: Task, request: ImageRequest, image: bytes | None = None, mask: bytes | None = None
    ) -> Job:
        """Validate, map onto neutral params, and queue the job (`mask` in OpenAI's convention); follow its
        webhook, if it asked for one."""
        self.state.require_ready()
        self.served.check(request.model)
        webhook = request.extension("webhook_url")
        await self.state.tracker.check_webhook(webhook, "nvext.webhook_url")
        steps = self.state.backend.family.steps
        job = await serving.submit(self.state.engine, functools.partial(request.to_params, task, steps, image, mask))
        self.state.tracker.follow(job, Delivery(webhook) if webhook else None)
        if request.user is not None:
            log.info("job %s for user %r", job.id, request.user)  # OpenAI's end-user id, for tracing abuse
        if request.ignored:
            log.info("job %s: ignoring %s (cannot be honoured)", job.id, ", ".join(request.ignored))
        return job

    async def edit_task(self, image: bytes, mask: bytes | None) -> tuple[Task, bytes | None]:
        """Inpaint with a mask; without one, DALL·E 2's rule: an image with transparent pixels is repainted
        there (its own alpha is the mask), an opaque one is img2img."""
        if mask is not None:
            return "inpaint", mask
        limit = self.state.settings.limits.max_upload_pixels
        transparent = await run_in_threadpool(_has_transparency, image, limit)
        return ("inpaint", image) if transparent else ("img2img", None)

    async def response(self, job: Job, result: Completed, request: ImageRequest, base_url: str) -> dict[str, Any]:
        """The `ImagesResponse` of a completed job (base64 and files off the event loop)."""
        return await run_in_threadpool(self._response, job, result, request, base_url)

    def _response(self, job: Job, result: Completed, request: ImageRequest, base_url: str) -> dict[str, Any]:
        store = self.state.engine.store
        items: list[dict[str, Any]] = []
        for index, (data, seed) in enumerate(zip(result.images, result.seeds, strict=True)):
            item: dict[str, Any] = {"revised_prompt": request.prompt, "seed": seed}
            if request.answer_format == "url":
                file_id = result.files[index] if index < len(result.files) else None
                file_id = file_id or store.save(job.id, index, result.format, data)
                item["url"] = store.url(file_id, base_url)
            else:
                item["b64_json"] = imaging.to_base64(data)
            items.append(item)
        return {
            "created": int(job.created_at), "data": items, "seeds": list(result.seeds),
            "output_format": result.format, "size": f"{result.width}x{result.height}",
            "quality": EVENT_QUALITY.get(request.quality, request.quality), "background": "opaque",
        }  # fmt: skip

    def stream(self, job: Job, request: ImageRequest, kind: str) -> AsyncIterator[bytes]:
        """OpenAI's image SSE events: `<kind>.partial_image` per preview, `<kind>.completed` per image."""
        serializer = StreamSerializer(request, kind)
        cancel = functools.partial(self.state.engine.cancel, reason="client disconnected")
        return stream_job(job, self.state.settings.keepalive_seconds, serializer.frames, on_disconnect=cancel)


class StreamSerializer:
    """One streamed request's OpenAI events (it counts the partial images it has sent of each image)."""

    def __init__(self, request: ImageRequest, kind: str) -> None:
        self.request = request
        self.kind = kind
        self.common = {"background": "opaque", "quality": EVENT_QUALITY.get(request.quality, request.quality)}
        self.partials: dict[int, int] = {}  # image index → partial images sent

    def frames(self, job: Job, entry: Entry) -> Iterator[bytes]:
        """The frames of one logged event (most events have none)."""
        event, kind = entry.event, self.kind
        if isinstance(event, Preview):
            sent = self.partials.get(event.index, 0)
            size = f"{job.request.width}x{job.request.height}"
            yield frame(f"{kind}.partial_image", {
                "type": f"{kind}.partial_image", "b64_json": imaging.to_base64(event.image),
                "partial_image_index": sent, "image_index": event.index, "created_at": int(time.time()),
                "size": size, "output_format": "jpeg", **self.common,
            })  # fmt: skip
            self.partials[event.index] = sent + 1
        elif isinstance(event, Completed):
            size = f"{event.width}x{event.height}"
            for data, seed in zip(event.images, event.seeds, strict=True):
                yield frame(f"{kind}.completed", {
                    "type": f"{kind}.completed", "b64_json": imaging.to_base64(data), "created_at": int(time.time()),
                    "size": size, "output_format": event.format, "usage": NO_USAGE, "seed": seed, **self.common,
                })  # fmt: skip
        elif isinstance(event, Failed):
            error = {"message": event.message, "type": "server_error", "code": event.code}
            yield frame("error", {"type": "error", "error": {**error, "param": None}})


def _has_transparency(image: bytes, max_pixels: int) -> bool:
    opened = imaging.open_upload(image, "image", max_pixels)
    return "A" in opened.getbands() and opened.getchannel("A").getextrema()[0] == 0
