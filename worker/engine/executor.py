"""The device executor: one thread that owns the backend and runs jobs one at a time, never on the event loop."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

from PIL import Image

from worker import imaging
from worker.engine.batching import Batcher, step_key
from worker.engine.events import Completed, Preview, Progress, Stage, Started
from worker.engine.job import Job
from worker.engine.protocol import ImageGenerationBackend, Member
from worker.errors import JobCancelled, JobTimeout, ModelError, WorkerError
from worker.metrics import Metrics

log = logging.getLogger(__name__)

DEVICE_FAILURES = ("model_error", "out_of_memory")  # failures of the device or model, not of the request
MAX_PREVIEW_BACKLOG = 8  # events a client may lag behind before previews are skipped for it
Encoder = Callable[[Job, list[Image.Image]], Completed]


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
        self.job.publish(Stage(name))

    def step(self, step: int) -> None:
        """Publish `progress` for a finished step, then stop the job if it was cancelled or timed out."""
        now = time.monotonic()
        self._metrics.step_seconds.observe(now - max(self._last_step, self.denoise_started))
        self._last_step = now
        per_step = (now - self.denoise_started) / step
        self.job.step = step
        self.job.publish(
            Progress(
                step=step,
                total_steps=self.total,
                percent=round(100.0 * step / self.total, 1),
                elapsed_ms=round((now - self.started) * 1000),
                eta_ms=round(per_step * max(self.total - step, 0) * 1000),
            )
        )
        self.check()
        if step == self.total:
            self.stage("decoding")

    def wants_preview(self, step: int) -> int:
        """Every image at the partial steps OpenAI clients count on (always made); the first image at the
        `preview_every` steps, skipped while the last one is still encoding or a client lags behind."""
        if step in self.partial_steps:
            return self.job.request.num_samples
        wanted = step in self.preview_steps
        return int(wanted and not self._preview_in_flight and self.job.events.backlog() <= MAX_PREVIEW_BACKLOG)

    def preview(self, step: int, images: list[Image.Image]) -> None:
        """Encode the pictures off the denoising thread, then publish a `preview` event per image (a JPEG:
        full size for partial images, small for live previews)."""
        self._preview_in_flight = True
        partial = step in self.partial_steps

        def encode_and_publish() -> None:
            try:
                for index, image in enumerate(images):
                    side = max(image.size) if partial else imaging.PREVIEW_SIDE
                    self.job.publish(Preview(step, imaging.preview_bytes(image, side), index))
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
    """Takes batches of jobs from the queue and runs them on the backend; encoding is handed to a small pool.

    With `continuous`, a job the backend steps itself starts a step-level batch that compatible jobs join
    between denoising steps (and leave when done, cancelled or timed out); other jobs run as window batches.
    """

    def __init__(
        self,
        backend: ImageGenerationBackend,
        batcher: Batcher,
        encoder: Encoder,
        metrics: Metrics,
        continuous: bool = False,
    ) -> None:
        self._backend = backend
        self._continuous = continuous
        self._metrics = metrics
        self._batcher = batcher
        self._encoder = encoder
        self._encode_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sd-worker-encode")
        self._thread = threading.Thread(target=self._loop, name="sd-worker-executor", daemon=True)
        self.active: list[Job] = []  # the jobs on the device (one batch)
        self.average_seconds = 5.0  # moving average of device seconds per job (a batch's time over its jobs)
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
        while (first := self._batcher.take()) is not None:
            if self._continuous and not first.cancel_requested and self._backend.steps_continuously(first.request):
                self._serve_stepwise(first)
            else:
                self._serve(self._batcher.around(first))

    def _serve(self, batch: list[Job]) -> None:
        """Run a window batch (or one job) as one pipeline call."""
        if batch:
            jobs = []
            for job in batch:
                if job.cancel_requested:
                    self._fail(job, JobCancelled(job.cancel_reason or "cancelled"), time.monotonic())
                else:
                    jobs.append(job)
            if not jobs:
                return
            self.active = jobs
            started = time.monotonic()
            try:
                self._run(jobs, started)
            finally:
                self.active = []
                self._account(started, len(jobs))

    def _account(self, started: float, jobs: int) -> None:
        per_job = (time.monotonic() - started) / max(jobs, 1)
        self.average_seconds = 0.8 * self.average_seconds + 0.2 * per_job

    def _serve_stepwise(self, first: Job) -> None:
        """Run `first` through the backend's own loop; before every step, compatible waiting jobs join it."""
        started = time.monotonic()
        key = step_key(first.request)
        served = 0

        def member(job: Job) -> Member:
            nonlocal served
            served += 1
            job_started = time.monotonic()
            self.active = [*self.active, job]
            hooks = self._start(job)

            def done(images: list[Image.Image]) -> None:
                self.active = [j for j in self.active if j is not job]
                self.consecutive_failures = 0
                self._encode(job, images, hooks, job_started)

            def dropped(exc: Exception) -> None:
                self.active = [j for j in self.active if j is not job]
                self._fail(job, _as_worker_error(exc, job), job_started)

            return Member(job.request, hooks, done, dropped)

        def admit() -> list[Member]:
            images = sum(job.request.num_samples for job in self.active)
            members = []
            for job in self._batcher.join(key, images, lambda j: self._backend.steps_continuously(j.request)):
                if job.cancel_requested:
                    self._fail(job, JobCancelled(job.cancel_reason or "cancelled"), time.monotonic())
                else:
                    members.append(member(job))
            if self.active:  # one denoiser call follows
                self._metrics.batch_images.observe(sum(job.request.num_samples for job in self.active))
            return members

        try:
            self._backend.generate_stepwise(member(first), admit)
        except Exception as exc:  # a device failure fails the jobs still in the batch, never the thread
            self._failed([job for job in self.active if not job.status.final], exc, started)
        finally:
            self.active = []
            self._account(started, served)

    def _start(self, job: Job) -> JobHooks:
        job.mark_running()
        job.total_steps = self._backend.count_steps(job.request)
        job.publish(Started(job.request.seeds, job.total_steps))
        return JobHooks(job, self._encode_pool, self._metrics)

    def _run(self, jobs: list[Job], started: float) -> None:
        """One pipeline call for one job or a batch of compatible ones; a job whose hooks stop it is failed at
        once, the rest go on."""

        def drop(index: int, exc: Exception) -> None:
            self._fail(jobs[index], _as_worker_error(exc, jobs[index]), started)

        try:
            hooks = [self._start(job) for job in jobs]
            for _ in range(max(job.total_steps for job in jobs)):  # the call's denoiser calls, all of them full
                self._metrics.batch_images.observe(sum(job.request.num_samples for job in jobs))
            outcomes = self._backend.generate([job.request for job in jobs], list(hooks), drop)
        except Exception as exc:  # a pipeline failure must fail these jobs only, never the thread
            self._failed([job for job in jobs if not job.status.final], exc, started)
            return
        if any(images is not None for images in outcomes):
            self.consecutive_failures = 0
        for job, job_hooks, images in zip(jobs, hooks, outcomes, strict=True):
            if images is not None:
                self._encode(job, images, job_hooks, started)

    def _encode(self, job: Job, images: list[Image.Image], hooks: JobHooks, started: float) -> None:
        job.publish(Stage("encoding_image"))
        self._encode_pool.submit(self._finish, job, images, hooks.pending, started)

    def _failed(self, jobs: list[Job], exc: Exception, started: float) -> None:
        """The device call failed: fail `jobs` with it, counting device/model failures for /health."""
        error = _as_worker_error(exc, jobs[0] if jobs else None)
        if error.code in DEVICE_FAILURES:
            self.consecutive_failures += 1
        for job in jobs:
            self._fail(job, error, started)

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


def _as_worker_error(exc: Exception, job: Job | None) -> WorkerError:
    """`exc` as the error a job ends with: worker errors as they are, anything else a logged `model_error`."""
    if isinstance(exc, WorkerError):
        return exc
    log.exception("job %s failed", job.id if job is not None else "?", exc_info=exc)
    return ModelError(f"generation failed: {type(exc).__name__}: {exc}")
