"""Server-Sent Events: encode job events, keep the connection alive, cancel the job if its client leaves."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

from worker.engine.events import Event
from worker.engine.job import Job

KEEPALIVE = b": keep-alive\n\n"


def encode_event(event: Event) -> bytes:
    """One SSE frame: `id:`, `event:`, `data:` (one line of JSON)."""
    data = json.dumps(event.data, separators=(",", ":"))
    return f"id: {event.seq}\nevent: {event.name}\ndata: {data}\n\n".encode()


async def stream_job(
    job: Job, keepalive: float, on_disconnect: Callable[[Job], None] | None = None, after: int = -1
) -> AsyncIterator[bytes]:
    """Replay (the events after sequence number `after`) and follow the job's events; if the stream ends before
    the job does, call `on_disconnect`."""
    try:
        async for event in job.events.follow(keepalive):
            if event is None:
                yield KEEPALIVE
            elif event.seq > after:
                yield encode_event(event)
    finally:
        if on_disconnect is not None and not job.status.final:
            on_disconnect(job)
