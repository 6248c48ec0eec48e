"""rbee Gen C wire shapes of a job's events, from rbee's `sd-worker-rbee` (`http/stream.rs`):
`progress {type, step, total, percent}`, `preview {type, step, total, percent, image, format: "png"}`,
`complete {type, image, format}` (plus the image's `seed`), `error {type, message}` (plus our `code`).
rbee's frames carry no `id:`; queued/started/stage events have no rbee shape and are left out."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

from PIL import Image

from worker import imaging
from worker.api.sse import frame
from worker.engine.events import Completed, Entry, Failed, Preview, Progress
from worker.engine.job import Job


def frames(job: Job, entry: Entry) -> Iterator[bytes]:
    """The rbee frames of one logged event (a `Serializer` for `worker.api.sse.stream_job`)."""
    event, total = entry.event, job.total_steps
    if isinstance(event, Progress):
        yield frame("progress", {"type": "progress", "step": event.step, "total": event.total_steps,
                                 "percent": event.percent})  # fmt: skip
    elif isinstance(event, Preview):
        yield frame("preview", _preview(event.step, total, imaging.to_base64(_png(event.image))))
    elif isinstance(event, Completed):
        image = imaging.to_base64(event.images[0])
        if not _previewed(job, total):  # rbee previews the last step too: its picture is the final image
            yield frame("preview", _preview(total, total, image))
        yield frame("complete", {"type": "complete", "image": image, "format": "png", "seed": event.seeds[0]})
    elif isinstance(event, Failed):
        yield frame("error", {"type": "error", "message": event.message, "code": event.code})


def _previewed(job: Job, step: int) -> bool:
    return any(isinstance(e.event, Preview) and e.event.step == step for e in job.events.snapshot())


def _preview(step: int, total: int, image: str) -> dict[str, Any]:
    percent = round(100.0 * step / total, 1) if total else 100.0
    return {"type": "preview", "step": step, "total": total, "percent": percent, "image": image, "format": "png"}


def _png(jpeg: bytes) -> bytes:
    """An engine preview (a small JPEG) as PNG: rbee's previews are PNG."""
    buffer = io.BytesIO()
    Image.open(io.BytesIO(jpeg)).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()
