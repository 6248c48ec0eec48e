"""rbee Gen C jobs on this worker's engine: operation → params → job, and job events → rbee's SSE shapes.

Stream shapes from rbee's `sd-worker-rbee` (`http/stream.rs`): `progress {type, step, total, percent}`,
`preview {type, step, total, percent, image, format: "png"}`, `complete {type, image, format}`,
`error {type, message}`; the stream ends after `complete` or `error`.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image
from starlette.concurrency import run_in_threadpool

from worker.api.lifecycle import model_ref
from worker.api.rbee.protocol import ImageGeneration, ImageInpaint, ImageTransform, LoraRef
from worker.api.schemas import GenerationBody, Img2ImgBody, InpaintBody, LoraSpec
from worker.api.sse import KEEPALIVE
from worker.api.state import WorkerState
from worker.engine.job import Job
from worker.engine.request import Task
from worker.errors import InvalidRequest
from worker.pipelines.lora import LoraLibrary

PREVIEW_EVERY = 5  # rbee previews every 5th step and the last one
RbeeOperation = ImageGeneration | ImageTransform | ImageInpaint


def to_params(op: RbeeOperation, lora_names: list[str]) -> tuple[Task, GenerationBody]:
    """The task and native parameters of an rbee operation (LoRA paths already resolved to names)."""
    loras = [LoraSpec(name=name, weight=ref.strength) for name, ref in zip(lora_names, op.loras, strict=True)]
    common: dict[str, Any] = {
        "prompt": op.prompt, "negative_prompt": op.negative_prompt, "steps": op.steps,
        "guidance_scale": op.guidance_scale, "seed": op.seed, "loras": loras, "output_format": "png",
        "preview_every": PREVIEW_EVERY,
    }  # fmt: skip
    if isinstance(op, ImageTransform):
        return "img2img", Img2ImgBody(**common, image=op.input_image, strength=op.strength)
    if isinstance(op, ImageInpaint):
        return "inpaint", InpaintBody(**common, image=op.init_image, mask=op.mask_image)
    return "txt2img", GenerationBody(**common, width=op.width, height=op.height)


def lora_names(loras: list[LoraRef], library: LoraLibrary | None) -> list[str]:
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
        names = await run_in_threadpool(lora_names, op.loras, self.state.backend.loras)
        task, body = to_params(op, names)
        job = await self.state.service.submit(task, body)
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
        async for event in job.events.follow(self.state.settings.keepalive_seconds):
            if event is None:
                yield KEEPALIVE
                continue
            data, total = event.data, job.total_steps
            if event.name == "progress":
                yield _frame("progress", {"type": "progress", "step": data["step"], "total": data["total_steps"],
                                          "percent": data["percent"]})  # fmt: skip
            elif event.name == "preview":
                last_preview = data["step"]
                png = await run_in_threadpool(_png, data["image"])
                yield _frame("preview", _preview(data["step"], total, png))
            elif event.name == "complete":
                if last_preview != total:  # the last step's picture is the final image itself
                    yield _frame("preview", _preview(total, total, data["image"]))
                yield _frame("complete", {"type": "complete", "image": data["image"], "format": "png",
                                          "seed": data["seed"]})  # fmt: skip
                return
            elif event.name == "error":
                yield _frame("error", {"type": "error", "message": data["message"], "code": data["code"]})
                return


def _preview(step: int, total: int, image: str) -> dict[str, Any]:
    percent = round(100.0 * step / total, 1) if total else 100.0
    return {"type": "preview", "step": step, "total": total, "percent": percent, "image": image, "format": "png"}


def _png(data: str) -> str:
    """A preview (a small JPEG, base64) as PNG, base64: rbee's previews are PNG."""
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return base64.b64encode(buffer.getvalue()).decode()


def _frame(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
