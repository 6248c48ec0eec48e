"""The native routes: parse → `to_params()` → engine → serialize. Each handler stays a few lines."""

from __future__ import annotations

import functools
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from worker import __version__
from worker.api import serving
from worker.api.errors import error_response
from worker.api.lifecycle import capabilities, model_ref
from worker.api.native import serializer
from worker.api.native.async_jobs import accepted, journaled_events, last_event_id, prefers_async
from worker.api.native.protocol import EncodeBody, GenerationBody, Img2ImgBody, InpaintBody
from worker.api.sse import SSE_HEADERS, stream_job
from worker.api.state import State, WorkerState
from worker.engine.job import Job
from worker.engine.protocol import Task
from worker.engine.resolve import encode_prompt
from worker.errors import NotFound, WorkerError
from worker.webhooks.sender import Delivery

router = APIRouter()


@router.get("/health")
async def health(state: State) -> dict[str, Any]:
    """Liveness: 200 while the process runs, with what the worker is doing."""
    engine, backend = state.engine, state.backend
    return {
        "status": state.health,
        "worker_id": state.settings.resolved_worker_id(),
        "model_version": backend.family.name,
        "model_ref": model_ref(state),
        "device": backend.device,
        "dtype": backend.dtype,
        "uptime_seconds": round(time.monotonic() - state.started_at, 1),
        "queue_depth": engine.queue_depth,
        "active_jobs": len(engine.active_jobs),
        "version": __version__,
        "capabilities": list(capabilities(backend.components)),
        **(backend.info() if backend.loaded else {}),
    }


@router.get("/metrics")
async def metrics(state: State) -> Response:
    """Prometheus metrics (text exposition format)."""
    return Response(state.engine.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/ready")
async def ready(state: State) -> JSONResponse:
    """200 once loaded and warmed; 503 before that and while draining."""
    if state.ready:
        return JSONResponse({"ready": True})
    return JSONResponse({"ready": False, "reason": state.reason}, status_code=503)


@router.post("/execute")
async def execute(body: GenerationBody, request: Request, state: State) -> Response:
    """Text-to-image."""
    return await _generate("txt2img", body, request, state)


@router.post("/img2img")
async def img2img(body: Img2ImgBody, request: Request, state: State) -> Response:
    """Image-to-image."""
    return await _generate("img2img", body, request, state)


@router.post("/inpaint")
async def inpaint(body: InpaintBody, request: Request, state: State) -> Response:
    """Inpainting: white mask pixels are repainted, the rest is returned unchanged."""
    return await _generate("inpaint", body, request, state)


@router.post("/encode")
async def encode(body: EncodeBody, state: State) -> dict[str, Any]:
    """Prompt → embedding envelope, for a `--components denoiser` worker's prompt_embeds."""
    state.require_ready()
    return await run_in_threadpool(
        encode_prompt, state.backend, state.engine.limits, body.prompt, body.negative_prompt, body.guidance_scale,
        body.dtype,
    )  # fmt: skip


@router.get("/v1/loras")
async def list_loras(state: State) -> dict[str, Any]:
    """The LoRA files requests may name (empty without --lora-dir)."""
    library = state.backend.loras
    return {"loras": library.list() if library is not None else []}


@router.post("/v1/loras/refresh")
async def refresh_loras(state: State) -> dict[str, Any]:
    """Rescan --lora-dir (off the event loop: it reads file headers)."""
    library = state.backend.loras
    return {"loras": await run_in_threadpool(library.refresh) if library is not None else []}


@router.get("/v1/jobs")
async def list_jobs(state: State) -> dict[str, Any]:
    """Every job still remembered (queued, running, and recent finished ones), without images."""
    return {"jobs": [serializer.job_view(job, with_result=False) for job in state.engine.jobs()]}


@router.get("/v1/jobs/{job_id}")
async def get_job(job_id: str, state: State) -> dict[str, Any]:
    """A job's status, progress and (when done) result; also for journaled jobs from before a restart."""
    return await state.tracker.view(job_id)


@router.get("/v1/jobs/{job_id}/events", response_model=None)
async def job_events(job_id: str, request: Request, state: State) -> Response:
    """The job's SSE stream after `Last-Event-ID` (from its first event without one), then live; 204 once the
    final event was seen, so an `EventSource` stops reconnecting. Leaving does not cancel the job."""
    after = last_event_id(request)
    try:
        job = state.engine.get(job_id)
    except NotFound:
        return await journaled_events(job_id, after, state)
    if job.status.final and after >= len(job.events.snapshot()) - 1:
        return Response(status_code=204)
    stream = stream_job(job, state.settings.keepalive_seconds, serializer.frames, after=after)
    return StreamingResponse(stream, media_type="text/event-stream", headers=SSE_HEADERS)


@router.delete("/v1/jobs/{job_id}")
async def cancel_job(job_id: str, state: State) -> JSONResponse:
    """Cancel a job: a queued one at once (200), a running one at its next step (202 `cancelling`)."""
    job = state.engine.get(job_id)
    state.engine.cancel(job, "cancelled by DELETE /v1/jobs")
    view = serializer.job_view(job)
    return JSONResponse(view, status_code=202 if view["status"] == "cancelling" else 200)


async def _generate(task: Task, body: GenerationBody, request: Request, state: WorkerState) -> Response:
    state.require_ready()
    await state.tracker.check_webhook(body.webhook_url)
    job = await serving.submit(state.engine, functools.partial(body.to_params, task))
    token = state.tokens.issue(job.id)
    if prefers_async(request):
        return await accepted(job, task, body, token, state)
    state.tracker.follow(job, Delivery(body.webhook_url) if body.webhook_url else None)
    if _wants_json(request):
        response = await _wait_json(job, request, state)
        response.headers["X-Stream-Token"] = token
        return response
    cancel = functools.partial(state.engine.cancel, reason="client disconnected")
    stream = stream_job(job, state.settings.keepalive_seconds, serializer.frames, on_disconnect=cancel)
    headers = {**SSE_HEADERS, "X-Job-Id": job.id, "X-Stream-Token": token}
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/event-stream" not in accept


async def _wait_json(job: Job, request: Request, state: WorkerState) -> JSONResponse:
    """Wait for the job's end; a client that leaves meanwhile cancels it."""
    try:
        result = await serving.wait(state.engine, job, request.is_disconnected)
    except WorkerError as exc:
        response = error_response(exc.status, exc.code, exc.message)
    else:
        response = JSONResponse(await run_in_threadpool(serializer.result_body, job.id, result))
    response.headers["X-Job-Id"] = job.id
    return response
