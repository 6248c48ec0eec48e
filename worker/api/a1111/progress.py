"""A1111's global progress state, built from this worker's jobs: `/progress`, `/interrupt`, `/skip`.

A1111 runs one task at a time and reports it in `shared.state`; here each A1111 request is a `Tracked` task of `n_iter`
jobs (one per iteration), and `/progress` reports the task whose job is on the device (else the first waiting
one, else any job running for another protocol). `current_image` is the job's latest `preview` event (the
preview decoder's picture): never a VAE decode in the request handler. Everything here runs on the event loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from worker import imaging
from worker.engine.engine import Engine
from worker.engine.events import Preview
from worker.engine.job import Job, JobStatus

INTERRUPTED = "interrupted by POST /sdapi/v1/interrupt"
SKIPPED = "skipped by POST /sdapi/v1/skip"


@dataclass
class Tracked:
    """One A1111 request: its iterations' jobs and the interrupt/skip flags A1111 reports."""

    kind: str  # "txt2img" or "img2img"
    job_count: int
    started: float = field(default_factory=time.time)
    jobs: list[Job] = field(default_factory=list)
    interrupted: bool = False
    skipped: bool = False

    @property
    def timestamp(self) -> str:
        """A1111's `job_timestamp`: the task's start, %Y%m%d%H%M%S."""
        return time.strftime("%Y%m%d%H%M%S", time.localtime(self.started))

    @property
    def running(self) -> bool:
        """True while one of its jobs is on the device."""
        return any(job.status is JobStatus.RUNNING for job in self.jobs)


class Tracker:
    """The A1111 tasks in flight, oldest first."""

    def __init__(self) -> None:
        self._tasks: list[Tracked] = []

    def begin(self, kind: str, job_count: int) -> Tracked:
        """Start tracking a request of `job_count` iterations."""
        task = Tracked(kind, job_count)
        self._tasks.append(task)
        return task

    def end(self, task: Tracked) -> None:
        """The request has answered."""
        self._tasks.remove(task)

    def current(self) -> Tracked | None:
        """The task on the device, else the oldest waiting one."""
        return next((t for t in self._tasks if t.running), self._tasks[0] if self._tasks else None)

    def interrupt(self, engine: Engine) -> None:
        """Stop every A1111 task: running jobs at their next step, waiting ones before they start."""
        for task in self._tasks:
            task.interrupted = True
            for job in task.jobs:
                engine.cancel(job, INTERRUPTED)

    def skip(self, engine: Engine) -> None:
        """Stop the current iteration of the current task; its next iteration still runs."""
        task = self.current()
        if task is not None and task.jobs and not task.jobs[-1].status.final:
            task.skipped = True
            engine.cancel(task.jobs[-1], SKIPPED)

    def progress(self, engine: Engine, skip_current_image: bool) -> dict[str, Any]:
        """A1111's `ProgressResponse` for the work running now."""
        task = self.current()
        if task is not None:
            job = task.jobs[-1] if task.jobs else None
            job_no, job_count = max(len(task.jobs) - 1, 0), task.job_count
            started, kind = task.started, f"scripts_{task.kind}"
            flags = {"interrupted": task.interrupted, "skipped": task.skipped}
            timestamp = task.timestamp
        elif (job := engine.active_job) is not None:  # another protocol's job is on the device
            job_no, job_count, kind = 0, 1, job.request.task
            started = job.started_at or job.created_at
            flags = {"interrupted": False, "skipped": False}
            timestamp = time.strftime("%Y%m%d%H%M%S", time.localtime(started))
        else:
            return _idle()
        step, steps = (job.step, job.total_steps) if job is not None else (0, 0)
        progress = 0.01 + job_no / job_count + (step / steps / job_count if steps else 0.0)
        elapsed = time.time() - started
        state = {
            **flags, "stopping_generation": False, "job": kind, "job_count": job_count, "job_timestamp": timestamp,
            "job_no": job_no, "sampling_step": step, "sampling_steps": steps,
        }  # fmt: skip
        image = None if skip_current_image or job is None else _latest_preview(job)
        return {
            "progress": min(progress, 1.0),
            "eta_relative": max(elapsed / progress - elapsed, 0.0),
            "state": state,
            "current_image": image,
            "textinfo": None,
        }


def _latest_preview(job: Job) -> str | None:
    for entry in reversed(job.events.snapshot()):
        if isinstance(entry.event, Preview):
            return imaging.to_base64(entry.event.image)
    return None


def _idle() -> dict[str, Any]:
    state = {
        "skipped": False, "interrupted": False, "stopping_generation": False, "job": "", "job_count": 0,
        "job_timestamp": "0", "job_no": 0, "sampling_step": 0, "sampling_steps": 0,
    }  # fmt: skip
    return {"progress": 0.0, "eta_relative": 0.0, "state": state, "current_image": None, "textinfo": None}
