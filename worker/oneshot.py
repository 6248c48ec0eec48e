"""`sd-worker generate`: one job through the same resolver and engine as the server, with a rich progress bar."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from worker.backends.resolver import create_backend
from worker.config import Settings
from worker.engine.engine import build_engine
from worker.engine.events import Completed, Stage, Started
from worker.engine.events import Progress as StepProgress
from worker.engine.job import Job, JobStatus
from worker.engine.protocol import GenerationParams
from worker.engine.resolve import check_before_load
from worker.errors import WorkerError
from worker.pipelines.families import get_family

FORMATS: dict[str, Literal["png", "jpeg", "webp"]] = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}


def run_oneshot(settings: Settings, params: GenerationParams, output: Path) -> int:
    """Load the model, run one job, write its images next to `output`; returns the exit code."""
    # soft_wrap: rich wraps at 80 columns when stderr is not a terminal, and scripts parse these lines
    console = Console(stderr=True, soft_wrap=True, highlight=False)
    fmt = FORMATS.get(output.suffix.lower())
    if fmt is None:
        _error(console, f"{output}: use a .png, .jpg or .webp file name")
        return 2
    try:
        # a bad size or step count is refused before the model loads (seconds to minutes)
        check_before_load(params, get_family(settings.sd_version), settings.limits)
        backend = create_backend(settings)
        with console.status(f"loading {backend.family.name} ({backend.model_ref}) …"):
            backend.load()
        engine = build_engine(settings, backend, oneshot=True)
        request = engine.resolve(dataclasses.replace(params, output_format=fmt))
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
        _error(console, job.error.message if job.error is not None else "failed")
        return 1
    for index, (data, seed) in enumerate(zip(job.result.images, job.result.seeds, strict=True)):
        path = output if index == 0 else output.with_stem(f"{output.stem}-{index}")
        path.write_bytes(data)
        console.print(f"wrote {path} (seed {seed})", markup=False)
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
        async for entry in job.events.follow(keepalive=1.0):
            event = entry.event if entry is not None else None
            if isinstance(event, Stage):
                progress.update(bar, description=event.stage)
            elif isinstance(event, Started):
                progress.update(bar, total=event.total_steps)
            elif isinstance(event, StepProgress):
                progress.update(bar, completed=event.step)
            elif isinstance(event, Completed):
                progress.update(bar, description="done")
