"""rbee Gen C jobs on this worker's engine: operation → params → job; `GET /v1/health`; the job stream in
rbee's shapes (`worker.api.rbee.serializer`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from worker.api import serving
from worker.api.lifecycle import model_ref
from worker.api.rbee import serializer
from worker.api.rbee.protocol import ImageGeneration, ImageInpaint, ImageTransform, LoraRef
from worker.api.sse import stream_job
from worker.api.state import WorkerState
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

    def stream(self, job: Job) -> AsyncIterator[bytes]:
        """The job's events in rbee's shapes, from its first; ends after `complete` or `error`. Leaving does not
        cancel the job (`DELETE /v1/jobs/{id}` does)."""
        return stream_job(job, self.state.settings.keepalive_seconds, serializer.frames)
