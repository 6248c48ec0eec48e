"""The device executor: one thread that owns the backend and runs jobs one at a time, never on the event loop."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from PIL import Image

from worker import imaging
from worker.backends.base import ImageGenerationBackend
from worker.engine.job import Job
from worker.engine.queue import JobQueue
from worker.errors import JobCancelled, JobTimeout, ModelError, WorkerError
from worker.metrics import Metrics

log = logging.getLogger(__name__)

DEVICE_FAILURES = ("model_error", "out_of_memory")  # failures of the device or model, not of the request
MAX_PREVIEW_BACKLOG = 8  # events a client may lag behind before previews are skipped for it
Encoder = Callable[[Job, list[Image.Image]], dict[str, Any]]


class JobHooks:
    """The `StepHooks` of one job: publishes stage/progress events and stops the job when asked."""

    def __init__(self, job: Job, encode_pool: ThreadPoolExecutor, metrics: Metrics) -> None:
        self.job = job
        self._metrics = metrics
        self._last_step = time.monotonic()
        self._pool = encode_pool
        self._preview_in_flight = False
        self.pending: list[Future[None]] = []  # preview encodes the final result waits for
        self.total = job.total_steps
        self.started = time.monotonic()
        self.deadline = self.started + job.timeout
        self.denoise_started = self.started
        count, every = job.request.previews, job.request.preview_every
        # OpenAI partials: evenly spread, never the last step (that one is the final image)
        self.partial_steps = {round(self.total * (i + 1) / (count + 1)) for i in range(count)} - {0, self.total}
        self.preview_steps = set(range(every, self.total + 1, every)) if every else set()

    def stage(self, name: str) -> None:
        """Publish a `stage` event."""
        if name == "denoising":
            self.denoise_started = time.monotonic()
        self.job.publish("stage", stage=name)

    def step(self, step: int) -> None:
        """Publish `progress` for a finished step, then stop the job if it was cancelled or timed out."""
        now = time.monotonic()
        self._metrics.step_seconds.observe(now - max(self._last_step, self.denoise_started))
        self._last_step = now
        per_step = (now - self.denoise_started) / step
        self.job.step = step
        self.job.publish(
            "progress",
            step=step,
            total_steps=self.total,
            percent=round(100.0 * step / self.total, 1),
            elapsed_ms=round((now - self.started) * 1000),
            eta_ms=round(per_step * max(self.total - step, 0) * 1000),
        )
        self.check()
        if step == self.total:
            self.stage("decoding")

    def wants_preview(self, step: int) -> bool:
        """True at the chosen steps. `preview_every` previews are skipped while the last one is still encoding
        or a client lags behind; the partial images OpenAI clients count on are always made."""
        if step in self.partial_steps:
            return True
        wanted = step in self.preview_steps
        return wanted and not self._preview_in_flight and self.job.events.backlog() <= MAX_PREVIEW_BACKLOG

    def preview(self, step: int, image: Image.Image) -> None:
        """Encode the picture off the denoising thread, then publish a `preview` event (a small JPEG)."""
        self._preview_in_flight = True

        def encode_and_publish() -> None:
            try:
                self.job.publish("preview", step=step, image=imaging.preview_jpeg(image))
            finally:
                self._preview_in_flight = False

        self.pending.append(self._pool.submit(encode_and_publish))

    def check(self) -> None:
        """Raise JobCancelled or JobTimeout if the job must stop now."""
        if self.job.cancel_requested:
            raise JobCancelled(self.job.cancel_reason or "cancelled")
        if time.monotonic() > self.deadline:
            raise JobTimeout(f"the job ran longer than its {self.job.timeout:g}s limit")


class DeviceExecutor:
    """Takes jobs from the queue and runs them on the backend; encoding is handed to a small thread pool."""

    def __init__(self, backend: ImageGenerationBackend, queue: JobQueue, encoder: Encoder, metrics: Metrics) -> None:
        self._backend = backend
        self._metrics = metrics
        self._queue = queue
        self._encoder = encoder
        self._encode_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sd-worker-encode")
        self._thread = threading.Thread(target=self._loop, name="sd-worker-executor", daemon=True)
        self.active: Job | None = None
        self.average_seconds = 5.0  # moving average of a job's run time, for Retry-After
        self.consecutive_failures = 0  # device/model failures in a row; a success resets it

    def start(self) -> None:
        """Start the executor thread."""
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to finish its job and exit (after the queue was closed)."""
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._encode_pool.shutdown(wait=True)

    def _loop(self) -> None:
        while (job := self._queue.take()) is not None:
            if job.cancel_requested:
                self._fail(job, JobCancelled(job.cancel_reason or "cancelled"), time.monotonic())
                continue
            self.active = job
            try:
                self._run(job)
            finally:
                self.active = None

    def _run(self, job: Job) -> None:
        job.mark_running()
        started = time.monotonic()
        try:
            job.total_steps = self._backend.count_steps(job.request)
            job.publish("started", seeds=list(job.request.seeds), total_steps=job.total_steps)
            hooks = JobHooks(job, self._encode_pool, self._metrics)
            images = self._backend.generate(job.request, hooks)
        except Exception as exc:  # a pipeline failure must fail this job only, never the thread
            if not isinstance(exc, WorkerError):
                log.exception("job %s failed", job.id)
                exc = ModelError(f"generation failed: {type(exc).__name__}: {exc}")
            if exc.code in DEVICE_FAILURES:
                self.consecutive_failures += 1
            self._fail(job, exc, started)
            return
        finally:
            self.average_seconds = 0.8 * self.average_seconds + 0.2 * (time.monotonic() - started)
        self.consecutive_failures = 0
        job.publish("stage", stage="encoding_image")
        self._encode_pool.submit(self._finish, job, images, hooks.pending, started)

    def _finish(self, job: Job, images: list[Image.Image], previews: list[Future[None]], started: float) -> None:
        wait(previews)  # every preview is out before `complete` closes the stream
        try:
            result = self._encoder(job, images)
        except Exception as exc:
            log.exception("encoding job %s failed", job.id)
            self._fail(job, ModelError(f"encoding the images failed: {exc}"), started)
            return
        self._metrics.job_finished("completed", time.monotonic() - started, len(images))  # counted before
        job.complete(result)  # the client hears of it, so a scrape right after sees it

    def _fail(self, job: Job, error: WorkerError, started: float) -> None:
        outcome = "cancelled" if error.code == "cancelled" else "failed"
        self._metrics.job_finished(outcome, time.monotonic() - started, 0, error.code)
        job.fail(error)
