"""Server-Sent Events framing, shared by every protocol: frames, keep-alives, and following a job's log until it
ends (cancelling the job if its client leaves first). What goes in a frame is each protocol's serializer's."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from starlette.concurrency import run_in_threadpool

from worker.engine.events import Completed, Entry, Preview
from worker.engine.job import Job

KEEPALIVE = b": keep-alive\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
Serializer = Callable[[Job, Entry], Iterable[bytes]]


def frame(name: str, data: dict[str, Any], seq: int | None = None) -> bytes:
    """One SSE frame: `id:` (when given), `event:`, `data:` (one line of JSON)."""
    head = f"id: {seq}\n" if seq is not None else ""
    return f"{head}event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def stream_job(
    job: Job,
    keepalive: float,
    serializer: Serializer,
    on_disconnect: Callable[[Job], None] | None = None,
    after: int = -1,
) -> AsyncIterator[bytes]:
    """Replay (from the event after sequence number `after`) and follow the job's events as `serializer` frames
    them; if the stream ends before the job does, call `on_disconnect`. Images are framed off the event loop
    (base64 of megabytes is heavy; a protocol may re-encode previews)."""
    try:
        async for entry in job.events.follow(keepalive):
            if entry is None:
                yield KEEPALIVE
                continue
            if entry.seq <= after:
                continue
            if isinstance(entry.event, Completed | Preview):
                frames = await run_in_threadpool(_frames, serializer, job, entry)
            else:
                frames = _frames(serializer, job, entry)
            for chunk in frames:
                yield chunk
    finally:
        if on_disconnect is not None and not job.status.final:
            on_disconnect(job)


def _frames(serializer: Serializer, job: Job, entry: Entry) -> list[bytes]:
    return list(serializer(job, entry))
