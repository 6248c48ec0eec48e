"""The native wire shapes of a job: SSE event names and data, the `complete` payload, `GET /v1/jobs/{id}`.

Each field of a typed event becomes a JSON field of the same name (bytes as base64, tuples as lists), so adding a
field to an event is one edit in `worker.engine.events`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from worker import imaging
from worker.api.sse import frame
from worker.engine.events import Completed, Entry, Failed, JobEvent, Preview, Progress, Queued, Stage, Started
from worker.engine.job import Job

NAMES: dict[type[JobEvent], str] = {
    Queued: "queued", Started: "started", Progress: "progress", Stage: "stage", Preview: "preview",
    Completed: "complete", Failed: "error",
}  # fmt: skip


def event_data(job_id: str, event: JobEvent) -> dict[str, Any]:
    """The `data:` object of one event."""
    if isinstance(event, Completed):
        return result_body(job_id, event)
    if isinstance(event, Failed):
        return {"job_id": job_id, "code": event.code, "message": event.message}
    data: dict[str, Any] = {"job_id": job_id}
    for item in dataclasses.fields(event):
        value = getattr(event, item.name)
        data[item.name] = imaging.to_base64(value) if isinstance(value, bytes) else _plain(value)
    return data


def frames(job: Job, entry: Entry) -> Iterator[bytes]:
    """The SSE frame of one logged event (a `Serializer` for `worker.api.sse.stream_job`)."""
    yield frame(NAMES[type(entry.event)], event_data(job.id, entry.event), entry.seq)


def result_body(job_id: str, result: Completed) -> dict[str, Any]:
    """The `complete` payload: every image base64, `image`/`seed` = the first."""
    images = [imaging.to_base64(data) for data in result.images]
    return {
        "job_id": job_id, "image": images[0], "images": images, "seed": result.seeds[0], "seeds": list(result.seeds),
        "format": result.format, "width": result.width, "height": result.height, "elapsed_ms": result.elapsed_ms,
        **({"files": list(result.files)} if result.files else {}),
    }  # fmt: skip


def error_body(error: Failed) -> dict[str, str]:
    """A failed job's `error` object."""
    return {"code": error.code, "message": error.message}


def job_view(job: Job, with_result: bool = True) -> dict[str, Any]:
    """The job as `GET /v1/jobs/{id}` shows it (`GET /v1/jobs` leaves the images out)."""
    total = job.total_steps
    view: dict[str, Any] = {
        "job_id": job.id,
        "status": job.shown_status,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "seeds": list(job.request.seeds),
        "progress": {
            "step": job.step,
            "total_steps": total,
            "percent": round(100.0 * job.step / total, 1) if total else 0.0,
        },
    }
    if job.result is not None and with_result:
        view["result"] = result_body(job.id, job.result)
    if job.error is not None:
        view["error"] = error_body(job.error)
    return view


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
