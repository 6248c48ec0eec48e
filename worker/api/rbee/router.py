"""Thin rbee routes: parse → RbeeJobs → respond. The job's status and cancel are the native
`GET /v1/jobs/{id}` and `DELETE /v1/jobs/{id}` (an rbee job is an ordinary job of this worker)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends
from fastapi.responses import StreamingResponse

from worker.api.rbee.protocol import parse_operation
from worker.api.rbee.serving import RbeeJobs
from worker.api.sse import SSE_HEADERS
from worker.api.state import State

router = APIRouter()


def rbee_jobs(state: State) -> RbeeJobs:
    """The rbee service over this app's state (a FastAPI dependency)."""
    return RbeeJobs(state)


Jobs = Annotated[RbeeJobs, Depends(rbee_jobs)]


@router.get("/v1/health")
async def health(jobs: Jobs) -> dict[str, Any]:
    """rbee's health probe (no API key needed, as for /health)."""
    return jobs.health()


@router.post("/v1/jobs")
@router.post("/v1/inference")
async def create_job(body: Annotated[dict[str, Any], Body()], jobs: Jobs) -> dict[str, str]:
    """Queue an `image_generation`, `image_transform` or `image_inpaint` operation; answers {job_id, sse_url}."""
    return await jobs.submit(parse_operation(body))


@router.get("/v1/jobs/{job_id}/stream")
async def stream_job(job_id: str, jobs: Jobs) -> StreamingResponse:
    """The job's events in rbee's shapes; leaving does not cancel the job (DELETE /v1/jobs/{id} does)."""
    job = jobs.state.engine.get(job_id)
    return StreamingResponse(jobs.stream(job), media_type="text/event-stream", headers=SSE_HEADERS)
