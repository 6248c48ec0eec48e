"""A job's event log: written by worker threads, read by any number of asyncio subscribers, replayable."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    """One SSE event: `name` is the `event:` field, `data` the JSON object, `seq` the `id:`."""

    name: str
    data: dict[str, Any]
    seq: int


class EventLog:
    """Append-only, thread-safe; `follow()` replays what was sent so far, then waits for more."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[Event] = []
        self._closed = False
        self._wakers: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._cursors: dict[int, int] = {}  # live subscriber → events it has taken

    def publish(self, name: str, data: dict[str, Any]) -> Event:
        """Append an event and wake every subscriber. Ignored once the log is closed."""
        with self._lock:
            if self._closed:
                return Event(name, data, -1)
            event = Event(name, data, len(self._events))
            self._events.append(event)
            wakers = list(self._wakers)
        self._wake(wakers)
        return event

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

    def snapshot(self) -> list[Event]:
        """Every event so far."""
        with self._lock:
            return list(self._events)

    async def follow(self, keepalive: float) -> AsyncIterator[Event | None]:
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
