"""The bounded FIFO of waiting jobs; tells each waiting job its position whenever the line moves."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

from worker.engine.events import Queued
from worker.engine.job import Job
from worker.errors import QueueFull


class JobQueue:
    """Jobs waiting for the device. `max_waiting` counts queued jobs only, not the running one."""

    def __init__(self, max_waiting: int) -> None:
        self._max = max_waiting
        self._jobs: deque[Job] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def __len__(self) -> int:
        return len(self._jobs)

    def put(self, job: Job, expected_wait: float) -> None:
        """Admit `job` at the back, or raise QueueFull with a Retry-After estimate in seconds."""
        with self._cond:
            if self._closed:
                raise QueueFull("the worker is shutting down", retry_after=30)
            if len(self._jobs) >= self._max:
                raise QueueFull(
                    f"the queue is full ({self._max} jobs waiting); retry later",
                    retry_after=max(1, math.ceil(expected_wait)),
                )
            self._jobs.append(job)
            job.publish(Queued(len(self._jobs) - 1))
            self._cond.notify()

    def take(self) -> Job | None:
        """Block until a job is waiting and return it (None once closed)."""
        with self._cond:
            while not self._jobs and not self._closed:
                self._cond.wait()
            if not self._jobs:
                return None
            job = self._jobs.popleft()
            self._announce_positions()
            return job

    def take_where(self, accept: Callable[[Job], bool], until: float) -> Job | None:
        """The first waiting job that `accept`s, taken out of line (the jobs it passes keep their order).

        Waits for one until the monotonic time `until`; None if none came (or the queue was closed).
        """
        with self._cond:
            while True:
                job = next((j for j in self._jobs if accept(j)), None)
                if job is not None:
                    self._jobs.remove(job)
                    self._announce_positions()
                    return job
                remaining = until - time.monotonic()
                if self._closed or remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def take_head(self, accept: Callable[[Job], bool]) -> Job | None:
        """The job at the head of the line if `accept`s it, else None; never waits."""
        with self._cond:
            if not self._jobs or not accept(self._jobs[0]):
                return None
            job = self._jobs.popleft()
            self._announce_positions()
            return job

    def remove(self, job: Job) -> bool:
        """Take a waiting job out of line; False if it was not waiting."""
        with self._cond:
            try:
                self._jobs.remove(job)
            except ValueError:
                return False
            self._announce_positions()
            return True

    def close(self) -> list[Job]:
        """Stop admitting and wake the taker; returns the jobs that were still waiting."""
        with self._cond:
            self._closed = True
            left = list(self._jobs)
            self._jobs.clear()
            self._cond.notify_all()
            return left

    def _announce_positions(self) -> None:
        for position, job in enumerate(self._jobs):
            job.publish(Queued(position))
