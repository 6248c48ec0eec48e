"""A job: id, request, state, event log and cancel flag. Threads change it only through these methods."""

from __future__ import annotations

import enum
import threading
import time
import uuid
from dataclasses import dataclass, field

from worker.engine.events import Completed, EventLog, Failed, JobEvent
from worker.engine.protocol import GenerationRequest
from worker.errors import WorkerError


class JobStatus(enum.StrEnum):
    """Where a job is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        """True for the three end states."""
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


def new_job_id(prefix: str = "") -> str:
    """A random 32-hex-digit id starting with `prefix` (hex digits naming the worker that made it, or none)."""
    return prefix + uuid.uuid4().hex[len(prefix) :]


@dataclass
class Job:
    """One generation job and everything clients can learn about it."""

    request: GenerationRequest
    timeout: float
    id: str = field(default_factory=new_job_id)
    status: JobStatus = JobStatus.QUEUED
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    step: int = 0
    total_steps: int = 0  # known once the job starts (the scheduler decides)
    events: EventLog = field(default_factory=EventLog)
    result: Completed | None = None
    error: Failed | None = None
    cancel_reason: str | None = None
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def cancel_requested(self) -> bool:
        """True once someone asked this job to stop."""
        return self._cancel.is_set()

    def request_cancel(self, reason: str) -> None:
        """Ask the job to stop at its next step boundary (or never start)."""
        if not self._cancel.is_set():
            self.cancel_reason = reason
            self._cancel.set()

    @property
    def shown_status(self) -> str:
        """The status clients see: `cancelling` from a cancel request until the job has actually stopped."""
        if self.cancel_requested and not self.status.final:
            return "cancelling"
        return self.status.value

    def publish(self, event: JobEvent) -> None:
        """Send an event to every subscriber of this job."""
        self.events.publish(event)

    def mark_running(self) -> None:
        """The executor took the job."""
        self.status = JobStatus.RUNNING
        self.started_at = time.time()

    def complete(self, result: Completed) -> None:
        """Final: the images are encoded; send `Completed`."""
        with self._lock:
            if self.status.final:
                return
            self.result = result
            self.status = JobStatus.COMPLETED
            self.finished_at = time.time()
        self.events.publish(result)
        self.events.close()

    def fail(self, error: WorkerError) -> None:
        """Final: send `Failed` with the error's code; `cancelled` codes end as CANCELLED."""
        with self._lock:
            if self.status.final:
                return
            self.error = Failed(error.code, error.message, error.status)
            self.status = JobStatus.CANCELLED if error.code == "cancelled" else JobStatus.FAILED
            self.finished_at = time.time()
        self.events.publish(self.error)
        self.events.close()
