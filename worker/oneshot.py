"""`sd-worker generate`: one job through the same service and engine as the server, with a rich progress bar."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from worker.api.schemas import GenerationBody
from worker.api.service import GenerationService
from worker.backends.resolver import create_backend
from worker.config import Settings
from worker.engine.engine import Engine
from worker.engine.job import Job, JobStatus
from worker.errors import WorkerError
from worker.outputs import OutputStore

FORMATS: dict[str, Literal["png", "jpeg", "webp"]] = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}


def run_oneshot(settings: Settings, fields: dict[str, Any], output: Path) -> int:
    """Load the model, run one job, write its images next to `output`; returns the exit code."""
    # soft_wrap: rich wraps at 80 columns when stderr is not a terminal, and scripts parse these lines
    console = Console(stderr=True, soft_wrap=True, highlight=False)
    fmt = FORMATS.get(output.suffix.lower())
    if fmt is None:
        _error(console, f"{output}: use a .png, .jpg or .webp file name")
        return 2
    try:
        body = GenerationBody(**fields, output_format=fmt)
        backend = create_backend(settings)
        with console.status(f"loading {backend.family.name} ({backend.model_ref}) …"):
            backend.load()
        engine = Engine(
            backend,
            max_queue=1,
            job_timeout=settings.job_timeout,
            keep_results=1,
            result_ttl=settings.result_ttl,
            store=OutputStore(None, keep=1, max_age=3600.0),
            png_level=settings.png_compression,
        )
        service = GenerationService(engine, backend.family, settings.limits)
        request = service.resolve("txt2img", body)
    except ValidationError as exc:
        _error(console, f"{exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}")
        return 2
    except WorkerError as exc:
        _error(console, exc.message)
        return 2
    engine.start()
    try:
        job = engine.submit(request)
        asyncio.run(_follow(job, console))
    finally:
        engine.stop()
        engine.store.close()
    if job.status is not JobStatus.COMPLETED or job.result is None:
        _error(console, (job.error or {}).get("message", "failed"))
        return 1
    for index, data in enumerate(job.result["images"]):
        path = output if index == 0 else output.with_stem(f"{output.stem}-{index}")
        path.write_bytes(base64.b64decode(data))
        console.print(f"wrote {path} (seed {job.result['seeds'][index]})", markup=False)
    return 0


def _error(console: Console, message: str) -> None:
    console.print("[red]error:[/] ", end="")
    console.print(message, markup=False)  # a path or a prompt may hold [brackets]


async def _follow(job: Job, console: Console) -> None:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("queued", total=job.request.steps)
        async for event in job.events.follow(keepalive=1.0):
            if event is None:
                continue
            if event.name == "stage":
                progress.update(bar, description=event.data["stage"])
            elif event.name == "started":
                progress.update(bar, total=event.data["total_steps"])
            elif event.name == "progress":
                progress.update(bar, completed=event.data["step"])
            elif event.name == "complete":
                progress.update(bar, description="done")
