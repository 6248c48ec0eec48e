"""Announce the worker to the hive, keep the heartbeat, re-register when forgotten, say goodbye on the way out.

The hive being down, slow or wrong never stops the worker: every call has a timeout, failures are retried
with backoff in the background, and generation never waits on any of it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import httpx

from worker.registration.backoff import delays
from worker.registration.hive import HiveClient, HiveRejected

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSnapshot:
    """What the hive is told about the worker, read fresh for every call."""

    worker_id: str
    url: str
    model_ref: str
    model_version: str
    device: str
    dtype: str
    capabilities: tuple[str, ...]
    vram_bytes: int | None
    version: str
    healthy: bool
    queue_depth: int
    active_job: str | None


def ready_payload(s: WorkerSnapshot) -> dict[str, Any]:
    """The body of the ready callback (DESIGN.md, hive protocol step 1)."""
    return {
        "worker_id": s.worker_id, "url": s.url, "model_ref": s.model_ref, "model_version": s.model_version,
        "backend": "sd-worker", "device": s.device, "dtype": s.dtype, "capabilities": list(s.capabilities),
        "vram_bytes": s.vram_bytes, "version": s.version,
    }  # fmt: skip


def heartbeat_payload(s: WorkerSnapshot, stopping: bool = False) -> dict[str, Any]:
    """The body of a heartbeat (DESIGN.md, hive protocol step 2)."""
    busy = s.active_job is not None or s.queue_depth > 0
    status: Literal["idle", "busy", "stopping"] = "stopping" if stopping else "busy" if busy else "idle"
    return {
        "worker_id": s.worker_id,
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "health_status": "healthy" if s.healthy else "degraded",
        "status": status,
        "queue_depth": s.queue_depth,
        "active_job": s.active_job,
    }


class Registrar:
    """Runs the registration + heartbeat loop as one background task."""

    def __init__(
        self,
        client: HiveClient,
        snapshot: Callable[[], WorkerSnapshot],
        *,
        interval: float,
        retry_initial: float,
        retry_max: float,
    ) -> None:
        self._client = client
        self._snapshot = snapshot
        self._interval = interval
        self._retry = (retry_initial, retry_max)
        self._task: asyncio.Task[None] | None = None
        self.registrations = 0
        self._stopped = False

    def start(self) -> None:
        """Begin registering (after the model is loaded and warmed)."""
        self._task = asyncio.create_task(self._run(), name="sd-worker-hive")

    async def stop(self) -> None:
        """Stop the loop and send one `stopping` heartbeat (best effort, bounded by the client timeout)."""
        if self._stopped:
            return
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])  # waits it out; a cancel of stop() itself still propagates
        try:
            await self._client.heartbeat(heartbeat_payload(self._snapshot(), stopping=True))
        except (httpx.HTTPError, HiveRejected) as exc:
            log.warning("could not tell the hive we are stopping: %s", exc)
        await self._client.close()

    async def _run(self) -> None:
        await self._register()
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self._client.heartbeat(heartbeat_payload(self._snapshot()))
            except HiveRejected as exc:
                if exc.status == 404:
                    log.warning("the hive no longer knows this worker; registering again")
                    await self._register()
                else:
                    log.warning("heartbeat refused: %s", exc)
            except httpx.HTTPError as exc:
                log.warning("heartbeat failed: %s", exc)

    async def _register(self) -> None:
        """POST the ready callback until it is accepted, backing off between tries."""
        for attempt, delay in enumerate(delays(*self._retry), start=1):
            try:
                await self._client.register(ready_payload(self._snapshot()))
            except (httpx.HTTPError, HiveRejected) as exc:
                log.warning("registration attempt %d failed (%s); retrying in %.1fs", attempt, exc, delay)
                await asyncio.sleep(delay)
                continue
            self.registrations += 1
            log.info("registered with the hive at %s (attempt %d)", self._client.callback_url, attempt)
            return
