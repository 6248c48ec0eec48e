"""rbee Gen C jobs on this worker's engine: operation → params → job, and job events → rbee's SSE shapes.

Stream shapes from rbee's `sd-worker-rbee` (`http/stream.rs`): `progress {type, step, total, percent}`,
`preview {type, step, total, percent, image, format: "png"}`, `complete {type, image, format}`,
`error {type, message}`; the stream ends after `complete` or `error`.
"""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image
from starlette.concurrency import run_in_threadpool

from worker import imaging
from worker.api import serving
from worker.api.lifecycle import model_ref
from worker.api.rbee.protocol import ImageGeneration, ImageInpaint, ImageTransform, LoraRef
from worker.api.sse import KEEPALIVE, frame
from worker.api.state import WorkerState
from worker.engine.events import Completed, Failed, Preview, Progress
from worker.engine.job import Job
from worker.engine.protocol import GenerationParams
from worker.errors import InvalidRequest
from worker.pipelines.lora import LoraLibrary

RbeeOperation = ImageGeneration | ImageTransform | ImageInpaint


def lora_names(loras: Sequence[LoraRef], library: LoraLibrary | None) -> list[str]:
    """Each LoRA `path` as a name in --lora-dir; a path outside it (or not a LoRA there) is refused."""
    names = []
    for i, ref in enumerate(loras):
        field = f"loras.{i}.path"
        if library is None:
            raise InvalidRequest("this worker has no LoRA folder (start it with --lora-dir)", field=field)
        root = library.directory.resolve()
        given = Path(ref.path)
        resolved = (given if given.is_absolute() else root / given).resolve()  # symlinks and .. resolved
        if resolved.parent != root or resolved.suffix != ".safetensors":
            raise InvalidRequest(
                f"LoRA path {ref.path!r} is not a .safetensors file directly inside the LoRA folder {str(root)!r}; "
                "give its file name (or its full path inside that folder)",
                field=field,
            )
        names.append(library.resolve(resolved.stem, field).name)  # exists, and fits the loaded model
    return names


class RbeeJobs:
    """The Gen C job API over one worker's state."""

    def __init__(self, state: WorkerState) -> None:
        self.state = state

    async def submit(self, op: RbeeOperation) -> dict[str, str]:
        """Queue the operation's job; rbee's `JobResponse`."""
        self.state.require_ready()
        library = self.state.backend.loras

        def params() -> GenerationParams:
            return op.to_params(lora_names(op.loras, library))

        job = await serving.submit(self.state.engine, params)
        return {"job_id": job.id, "sse_url": f"/v1/jobs/{job.id}/stream"}

    def health(self) -> dict[str, Any]:
        """`GET /v1/health`, as rbee's hive probes it (200 while the process runs; the status says more)."""
        state = self.state
        status = {"loading": "loading", "healthy": "healthy"}.get(state.health, "unhealthy")
        memory = state.backend.memory() if state.backend.loaded else {}
        return {
            "status": status, "vram_bytes": memory.get("allocated") or 0,
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "worker_id": state.settings.resolved_worker_id(), "model_ref": model_ref(state),
        }  # fmt: skip

    async def stream(self, job: Job) -> AsyncIterator[bytes]:
        """The job's events in rbee's shapes, from its first event; ends after `complete` or `error`."""
        last_preview = 0
        async for entry in job.events.follow(self.state.settings.keepalive_seconds):
            if entry is None:
                yield KEEPALIVE
                continue
            event, total = entry.event, job.total_steps
            if isinstance(event, Progress):
                yield frame("progress", {"type": "progress", "step": event.step, "total": event.total_steps,
                                         "percent": event.percent})  # fmt: skip
            elif isinstance(event, Preview):
                last_preview = event.step
                png = await run_in_threadpool(_png, event.image)
                yield frame("preview", _preview(event.step, total, png))
            elif isinstance(event, Completed):
                image = await run_in_threadpool(imaging.to_base64, event.images[0])
                if last_preview != total:  # the last step's picture is the final image itself
                    yield frame("preview", _preview(total, total, image))
                yield frame("complete", {"type": "complete", "image": image, "format": "png", "seed": event.seeds[0]})
                return
            elif isinstance(event, Failed):
                yield frame("error", {"type": "error", "message": event.message, "code": event.code})
                return


def _preview(step: int, total: int, image: str) -> dict[str, Any]:
    percent = round(100.0 * step / total, 1) if total else 100.0
    return {"type": "preview", "step": step, "total": total, "percent": percent, "image": image, "format": "png"}


def _png(jpeg: bytes) -> str:
    """A preview (a small JPEG) as PNG, base64: rbee's previews are PNG."""
    buffer = io.BytesIO()
    Image.open(io.BytesIO(jpeg)).save(buffer, "PNG", compress_level=1)
    return base64.b64encode(buffer.getvalue()).decode()
