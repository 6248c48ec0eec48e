"""What every protocol's routes share: queue a job from its params, and wait for a job's end."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.concurrency import run_in_threadpool

from worker.engine.engine import Engine
from worker.engine.events import Completed
from worker.engine.job import Job, JobStatus
from worker.engine.protocol import GenerationParams, GenerationRequest
from worker.errors import JobFailed


async def submit(engine: Engine, to_params: Callable[[], GenerationParams], job_id: str | None = None) -> Job:
    """Map the body, resolve it (off the event loop: base64 and image decoding are heavy), then queue the job
    (under `job_id` when a journaled job runs again after a restart)."""

    def prepare() -> GenerationRequest:
        return engine.resolve(to_params())

    return engine.submit(await run_in_threadpool(prepare), job_id)


async def wait(engine: Engine, job: Job, is_disconnected: Callable[[], Awaitable[bool]]) -> Completed:
    """Wait for the job's result; a client that leaves meanwhile cancels it; a failed job raises JobFailed."""
    async for entry in job.events.follow(keepalive=1.0):
        if entry is None and await is_disconnected():
            engine.cancel(job, "client disconnected")
            break
    if job.status is JobStatus.COMPLETED and job.result is not None:
        return job.result
    if job.error is None:
        raise JobFailed(500, "cancelled", "the client went away")
    raise JobFailed(job.error.status, job.error.code, job.error.message)
