"""The engine facade every protocol talks to: resolve params, submit, look up and cancel jobs; a bounded store
of finished ones. `build_engine` makes one from the settings."""

from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict

from PIL import Image

from worker.config import Batching, Limits, Settings
from worker.engine.batching import Batcher
from worker.engine.events import Completed
from worker.engine.executor import DeviceExecutor
from worker.engine.job import Job, new_job_id
from worker.engine.protocol import GenerationParams, GenerationRequest, ImageGenerationBackend
from worker.engine.queue import JobQueue
from worker.engine.resolve import resolve
from worker.engine.results import encode_result
from worker.errors import JobCancelled, NotFound
from worker.imaging import PNG_COMPRESS_LEVEL
from worker.metrics import Metrics
from worker.outputs import OutputStore

DEGRADED_AFTER = 3


class Engine:
    """Owns the queue, the device executor and every job still remembered."""

    def __init__(
        self,
        backend: ImageGenerationBackend,
        *,
        max_queue: int,
        job_timeout: float,
        keep_results: int,
        result_ttl: float,
        store: OutputStore,
        limits: Limits | None = None,
        metrics: Metrics | None = None,
        max_batch: int = 1,
        batch_window: float = 0.0,
        batching: Batching = "window",
        png_level: int = PNG_COMPRESS_LEVEL,
        id_prefix: str = "",
    ) -> None:
        self.backend = backend
        self.limits = limits or Limits()
        self._job_timeout = job_timeout
        self._id_prefix = id_prefix
        self._keep_results = keep_results
        self._result_ttl = result_ttl
        self._queue = JobQueue(max_queue)
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self.store = store
        self.metrics = metrics or Metrics()
        self.metrics.watch_queue(lambda: len(self._queue))
        encoder = functools.partial(self._encode, store=store, png_level=png_level)
        max_images = 1 if batching == "off" else max_batch
        batcher = Batcher(self._queue, max_images=max_images, window=batch_window)
        continuous = batching == "continuous"
        self._executor = DeviceExecutor(backend, batcher, encoder, self.metrics, continuous)

    def start(self) -> None:
        """Start the device thread."""
        self._executor.start()

    def close(self) -> None:
        """Refuse new jobs and fail the waiting ones; the running one carries on."""
        for job in self._queue.close():
            self.metrics.job_finished("cancelled", 0.0, 0)
            job.fail(JobCancelled("the worker is shutting down; the job was still queued"))

    def stop(self, timeout: float = 30.0) -> None:
        """Close, then wait (up to `timeout`) for the running job and the executor thread to finish."""
        self.close()
        self._executor.join(timeout)

    @property
    def queue_depth(self) -> int:
        """Jobs waiting (not running)."""
        return len(self._queue)

    @property
    def failing(self) -> bool:
        """True after DEGRADED_AFTER device/model failures in a row (cleared by the next success)."""
        return self._executor.consecutive_failures >= DEGRADED_AFTER

    @property
    def active_jobs(self) -> list[Job]:
        """The jobs on the device (one batch; empty when idle)."""
        return list(self._executor.active)

    @property
    def active_job(self) -> Job | None:
        """The first job on the device, if any."""
        active = self._executor.active
        return active[0] if active else None

    def resolve(self, params: GenerationParams) -> GenerationRequest:
        """Check `params` against the loaded model and the limits (blocking: decodes images)."""
        return resolve(params, self.backend, self.limits)

    def submit(self, request: GenerationRequest, job_id: str | None = None) -> Job:
        """Queue a job (raises QueueFull) and remember it; `job_id` keeps a journaled job's id across a restart."""
        job = Job(request=request, timeout=self._job_timeout, id=job_id or new_job_id(self._id_prefix))
        with self._lock:
            self._prune()
            self._jobs[job.id] = job
        expected_wait = self._executor.average_seconds * (self.queue_depth + 1)
        try:
            self._queue.put(job, expected_wait)
        except Exception:
            with self._lock:
                self._jobs.pop(job.id, None)
            raise
        return job

    def get(self, job_id: str) -> Job:
        """The job with this id, or NotFound."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r} (unknown, or its result has expired)", field="job_id")
        return job

    def jobs(self) -> list[Job]:
        """Every job still remembered, oldest first."""
        with self._lock:
            return list(self._jobs.values())

    def cancel(self, job: Job, reason: str) -> None:
        """Stop a job: a waiting one never runs, a running one stops at its next step boundary."""
        if job.status.final:
            return
        job.request_cancel(reason)
        if self._queue.remove(job):
            self.metrics.job_finished("cancelled", 0.0, 0)
            job.fail(JobCancelled(reason))

    def _prune(self) -> None:
        now = time.time()
        finished = [j for j in self._jobs.values() if j.status.final]
        excess = len(finished) - self._keep_results
        for job in finished:
            expired = job.finished_at is not None and now - job.finished_at > self._result_ttl
            if excess > 0 or expired:
                del self._jobs[job.id]
                excess -= 1

    def _encode(self, job: Job, images: list[Image.Image], *, store: OutputStore, png_level: int) -> Completed:
        family, sampler = self.backend.family, self.backend.default_scheduler
        return encode_result(job, images, family.name, sampler, store, png_level, family.prompt_weighting)


def build_engine(settings: Settings, backend: ImageGenerationBackend, *, oneshot: bool = False) -> Engine:
    """The engine the settings describe, on `backend`; `oneshot` (the CLI's `generate`) keeps one job, no files."""
    if oneshot:
        store, max_queue, keep_results = OutputStore(None, keep=1, max_age=3600.0), 1, 1
    else:
        files = settings.state_dir / "files" if settings.state_dir is not None else None  # url files survive
        store = OutputStore(
            settings.output_dir, settings.output_keep, settings.output_max_age, settings.output_url, fallback=files
        )
        max_queue, keep_results = settings.max_queue, settings.keep_results
    return Engine(
        backend,
        max_queue=max_queue,
        job_timeout=settings.job_timeout,
        keep_results=keep_results,
        result_ttl=settings.result_ttl,
        store=store,
        limits=settings.limits,
        max_batch=1 if oneshot else settings.max_batch,
        batch_window=settings.batch_window_ms / 1000,
        batching=settings.batching,
        png_level=settings.png_compression,
        id_prefix=settings.job_id_prefix,
    )
