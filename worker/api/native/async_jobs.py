"""Jobs that outlive their request, native side: `Prefer: respond-async` (202 + journal), re-queueing journaled
jobs after a restart, and resuming a job's event stream (`Last-Event-ID`, journal-only jobs)."""

from __future__ import annotations

import functools
from typing import Any, cast

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from worker.api import serving
from worker.api.native.protocol import TASK_BODIES, GenerationBody
from worker.api.sse import SSE_HEADERS, frame
from worker.api.state import WorkerState
from worker.engine.job import Job
from worker.engine.protocol import Task
from worker.errors import NotReady


async def accepted(job: Job, task: Task, body: GenerationBody, token: str, state: WorkerState) -> JSONResponse:
    """`Prefer: respond-async`: journal the job (its seed fixed, so a rerun makes the same images), answer 202."""
    journaled = body.model_dump(mode="json", exclude={"webhook_url"}) | {"seed": job.request.seeds[0]}
    await state.tracker.accept(job, task, journaled, body.webhook_url)
    location = f"/v1/jobs/{job.id}"
    content = {"job_id": job.id, "status": "queued", "location": location, "events": f"{location}/events",
               "stream_token": token}  # fmt: skip
    headers = {"Location": location, "Preference-Applied": "respond-async", "X-Job-Id": job.id}
    return JSONResponse(content, status_code=202, headers=headers)


async def resubmit(state: WorkerState, task: str, journaled: dict[str, Any], job_id: str) -> Job:
    """Queue a journaled job again after a restart, under its old id (the tracker's `Resubmit`)."""
    body = TASK_BODIES[task].model_validate(journaled)
    return await serving.submit(state.engine, functools.partial(body.to_params, cast(Task, task)), job_id)


def prefers_async(request: Request) -> bool:
    """RFC 7240 `Prefer: respond-async` (among other preferences, any case)."""
    preferences = ",".join(request.headers.getlist("prefer")).split(",")
    return any(p.split(";")[0].split("=")[0].strip().lower() == "respond-async" for p in preferences)


def last_event_id(request: Request) -> int:
    """The `Last-Event-ID` header (or `last_event_id` query parameter) as a sequence number; -1 when absent."""
    value = request.headers.get("last-event-id") or request.query_params.get("last_event_id") or ""
    return int(value) if value.strip().isdigit() else -1


async def journaled_events(job_id: str, after: int, state: WorkerState) -> Response:
    """A job known only to the journal (finished before a restart): its final event once, then 204."""
    view = await state.tracker.view(job_id)
    if view["status"] in ("queued", "running"):
        raise NotReady("the worker is recovering its journaled jobs; this one runs again shortly")
    if after >= 0:
        return Response(status_code=204)
    if "result" in view:
        final = frame("complete", view["result"], 0)
    else:
        final = frame("error", {"job_id": job_id, **view.get("error", {})}, 0)
    return Response(final, media_type="text/event-stream", headers=SSE_HEADERS)
