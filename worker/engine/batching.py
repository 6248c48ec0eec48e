"""Cross-request batching: which jobs may share one pipeline call, and gathering them from the queue.

Jobs with equal `batch_key`s run as one diffusers call: their prompts and per-image generators are concatenated,
so every image still depends on its own seed alone. `--max-batch` counts images, not jobs (memory and compute
scale with images, and a batch then never exceeds what one request with `num_samples = max-batch` may ask for);
a job with more images than that runs alone. The job at the head of the line always starts the batch and only
compatible jobs join it, so nothing waits longer than one batch for its turn.

With `--batching continuous`, jobs the backend steps itself (`steps_continuously`) join a running batch
between two denoising steps instead (`Batcher.join`, by `step_key`): steps, scheduler and guidance may differ,
because each job keeps its own scheduler state.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

from worker.engine.job import Job
from worker.engine.protocol import GenerationRequest
from worker.engine.queue import JobQueue

BatchKey = tuple[Hashable, ...]


def batch_key(request: GenerationRequest) -> BatchKey | None:
    """Jobs with equal keys can share a pipeline call; None = this job always runs alone.

    Everything that shapes the call or the denoising loop is in the key. The negative prompt's presence is too:
    SDXL zeroes the negative embedding for an absent one but encodes "" for an empty one, so the two cannot share
    one list of negative prompts.
    """
    if request.task != "txt2img":
        return None  # init images and masks: not batched (yet)
    if request.embeddings is not None or request.prompt_syntax:
        return None  # precomputed or weighted embeddings are not batched (yet)
    return (
        request.task,
        request.width,
        request.height,
        request.steps,
        request.scheduler,
        request.guidance_scale,
        request.strength,
        request.loras,
        request.clip_skip,
        request.negative_prompt is None,
    )


def step_key(request: GenerationRequest) -> BatchKey:
    """Jobs with equal keys can share a step-level batch: one denoiser call needs one latent size and one set of
    LoRA weights; everything else (prompt, steps, scheduler, guidance, seeds) is per job."""
    return (request.task, request.width, request.height, request.loras)


class Batcher:
    """Takes the next batch of compatible jobs off the queue, waiting up to `window` seconds for more to join.

    Jobs already waiting always join. Waiting for more happens only when more are expected: the crowd is the
    jobs of the last batch plus those that queued up while it ran, whose clients are likely to send their next
    job about now (their results are encoded and sent one by one, so they come back a few ms apart). The batch
    waits until it has that many jobs, or the window ends. A lone client therefore never waits, and a steady
    crowd of clients stays in step instead of splitting into batches that take turns.
    """

    def __init__(self, queue: JobQueue, *, max_images: int, window: float) -> None:
        self._queue = queue
        self._max_images = max_images
        self._window = window
        self._last = 0  # jobs in the last batch
        self._crowd = 0  # jobs expected when the last `take` began

    def next(self) -> list[Job] | None:
        """Block until a job is waiting; return it with the compatible jobs that fit (None once closed)."""
        first = self.take()
        return None if first is None else self.around(first)

    def take(self) -> Job | None:
        """Block until a job is waiting and return it alone (None once closed)."""
        # the crowd is counted before blocking: a lone client's next job must not look like company
        self._crowd = self._last + len(self._queue)
        return self._queue.take()

    def join(self, key: BatchKey, images: int, accept: Callable[[Job], bool]) -> list[Job]:
        """The jobs at the head of the line with step key `key` that `accept` takes and that fit beside `images`
        images already running; never waits. Only the head is taken, never a job behind it: a job that cannot
        join stops admission, so the batch drains and that job runs next instead of waiting for ever."""
        room = self._max_images - images
        joined: list[Job] = []

        def fits(job: Job) -> bool:
            return job.request.num_samples <= room and step_key(job.request) == key and accept(job)

        while room > 0 and (job := self._queue.take_head(fits)) is not None:
            joined.append(job)
            room -= job.request.num_samples
        return joined

    def around(self, first: Job) -> list[Job]:
        """`first` (just taken) with the compatible jobs that fit, waiting for them only while a crowd is due."""
        crowd = self._crowd
        batch = [first]
        key = batch_key(first.request)
        room = self._max_images - first.request.num_samples
        if key is not None and room > 0:
            until = time.monotonic() + (self._window if crowd > 1 else 0.0)

            def fits(job: Job) -> bool:
                return job.request.num_samples <= room and batch_key(job.request) == key

            while room > 0 and (job := self._queue.take_where(fits, until)) is not None:
                batch.append(job)
                room -= job.request.num_samples
                if len(batch) >= crowd:
                    until = 0.0  # everyone expected is here: take only what is already waiting
        self._last = len(batch)
        return batch
