"""A job's events, typed (one small dataclass each), and its log: written by worker threads, read by any number
of asyncio subscribers, replayable. Names, JSON and base64 belong to the edges that send them (`worker.api`)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Queued:
    """Waiting for the device; `position` 0 = next."""

    position: int


@dataclass(frozen=True)
class Started:
    """On the device: the seeds of its images and the denoising steps it will run."""

    seeds: tuple[int, ...]
    total_steps: int


@dataclass(frozen=True)
class Progress:
    """Denoising step `step` (from 1) finished."""

    step: int
    total_steps: int
    percent: float
    elapsed_ms: int
    eta_ms: int


@dataclass(frozen=True)
class Stage:
    """Entered a stage: encoding_prompt, denoising, decoding, encoding_image."""

    stage: str


@dataclass(frozen=True)
class Preview:
    """An intermediate picture of image `index` of the job after `step`: a JPEG."""

    step: int
    image: bytes = field(repr=False)
    index: int = 0


@dataclass(frozen=True)
class Completed:
    """Final: the encoded images (one per seed, with metadata) and where they were written, if anywhere."""

    images: tuple[bytes, ...] = field(repr=False)
    seeds: tuple[int, ...]
    format: str
    width: int
    height: int
    elapsed_ms: int
    files: tuple[str, ...] = ()  # file ids in the output store (with --output-dir)


@dataclass(frozen=True)
class Failed:
    """Final: the job ended without images; `code` is a `WorkerError` code, `status` its HTTP status."""

    code: str
    message: str
    status: int = 500


JobEvent = Queued | Started | Progress | Stage | Preview | Completed | Failed


@dataclass(frozen=True)
class Entry:
    """One event in a job's log; `seq` numbers it from 0 (the SSE `id:`)."""

    seq: int
    event: JobEvent


class EventLog:
    """Append-only, thread-safe; `follow()` replays what was sent so far, then waits for more."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[Entry] = []
        self._closed = False
        self._wakers: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._cursors: dict[int, int] = {}  # live subscriber → events it has taken

    def publish(self, event: JobEvent) -> Entry:
        """Append an event and wake every subscriber. Ignored once the log is closed."""
        with self._lock:
            if self._closed:
                return Entry(-1, event)
            entry = Entry(len(self._events), event)
            self._events.append(entry)
            wakers = list(self._wakers)
        self._wake(wakers)
        return entry

    def close(self) -> None:
        """No more events: subscribers drain what is left and stop."""
        with self._lock:
            self._closed = True
            wakers = list(self._wakers)
        self._wake(wakers)

    @property
    def closed(self) -> bool:
        """True once the job has reached a final event."""
        return self._closed

    def backlog(self) -> int:
        """Events the slowest live subscriber has not taken yet (0 without subscribers)."""
        with self._lock:
            return len(self._events) - min(self._cursors.values(), default=len(self._events))

    def snapshot(self) -> list[Entry]:
        """Every event so far."""
        with self._lock:
            return list(self._events)

    async def follow(self, keepalive: float) -> AsyncIterator[Entry | None]:
        """Yield events from the first; yield None after `keepalive` seconds of silence."""
        waker = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._wakers.add(waker)
            self._cursors[id(waker)] = 0
        try:
            index = 0
            while True:
                waker[1].clear()
                with self._lock:
                    batch = self._events[index:]
                    closed = self._closed
                    self._cursors[id(waker)] = index + len(batch)
                index += len(batch)
                for event in batch:
                    yield event
                if batch:
                    continue
                if closed:
                    return
                try:
                    await asyncio.wait_for(waker[1].wait(), keepalive)
                except TimeoutError:
                    yield None
        finally:
            with self._lock:
                self._wakers.discard(waker)
                self._cursors.pop(id(waker), None)

    @staticmethod
    def _wake(wakers: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]) -> None:
        for loop, flag in wakers:
            with contextlib.suppress(RuntimeError):  # that subscriber's loop is closed: it reads no more
                loop.call_soon_threadsafe(flag.set)
