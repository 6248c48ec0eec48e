"""rbee Gen C: the worker's heartbeat to the queen, `POST {queen_url}/v1/worker-heartbeat`.

Shape from rbee's `worker-contract` (`WorkerHeartbeat {worker: WorkerInfo, timestamp}`, `WorkerInfo {id,
model_id, device, port, status, implementation, version}`, status in lowercase). Sent while the model loads
(`starting`) and until the process ends (`stopping`, then one `stopped`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from worker.config import Settings
from worker.registration.hive import HiveRejected, PeerClient
from worker.registration.pacing import Pacing, RefusalLog, pacing_from
from worker.registration.shapes import timestamp

log = logging.getLogger(__name__)
QueenStatus = Literal["starting", "ready", "busy", "stopping", "stopped"]
IMPLEMENTATION = "sd-worker"


@dataclass(frozen=True)
class QueenView:
    """The worker as the queen's `WorkerInfo` describes it."""

    worker_id: str
    model_id: str
    device: str  # rbee style: "CPU-0", "GPU-1", "METAL-0"
    port: int
    status: QueenStatus
    version: str


def queen_payload(view: QueenView) -> dict[str, Any]:
    """The `WorkerHeartbeat` body."""
    return {
        "worker": {
            "id": view.worker_id, "model_id": view.model_id, "device": view.device, "port": view.port,
            "status": view.status, "implementation": IMPLEMENTATION, "version": view.version,
        },
        "timestamp": timestamp(),
    }  # fmt: skip


class QueenHeartbeat:
    """Beats every `interval`; a refusal (any 4xx, a 404 included: no such route) slows it down, logged once."""

    def __init__(
        self,
        client: PeerClient,
        queen_url: str,
        view: Callable[[], QueenView],
        *,
        interval: float,
        pacing: Pacing,
    ) -> None:
        self.url = f"{queen_url.rstrip('/')}/v1/worker-heartbeat"
        self._client = client
        self._view = view
        self._interval = interval
        self._pacing = pacing
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._refusals = RefusalLog(log, f"heartbeat to the queen at {self.url}")
        self._failing = False
        self.beats = 0

    def start(self) -> None:
        """Begin beating (at once: the queen learns the worker is `starting`)."""
        self._task = asyncio.create_task(self._run(), name="sd-worker-queen")

    def nudge(self) -> None:
        """Beat now (the status changed, e.g. to `stopping`)."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop beating and send one last `stopped` heartbeat (best effort, bounded by the client timeout)."""
        if self._task is None:
            return
        task, self._task = self._task, None
        task.cancel()
        await asyncio.wait([task])
        view = self._view()
        final = QueenView(view.worker_id, view.model_id, view.device, view.port, "stopped", view.version)
        with contextlib.suppress(httpx.HTTPError, HiveRejected):
            await self._client.post(self.url, queen_payload(final))
        await self._client.close()

    async def _run(self) -> None:
        slow = self._pacing.slow()
        while True:
            wait = self._interval
            try:
                await self._client.post(self.url, queen_payload(self._view()))
            except HiveRejected as exc:
                if exc.status < 500:
                    wait = max(wait, next(slow))
                    self._refusals.refused(exc, wait)
                else:
                    self._transient(exc)
            except httpx.HTTPError as exc:
                self._transient(exc)
            else:
                self.beats += 1
                slow = self._pacing.slow()
                self._refusals.clear()
                if self._failing:
                    log.info("the queen at %s answers again", self.url)
                self._failing = False
            self._wake.clear()
            await self._pause(wait)

    async def _pause(self, seconds: float) -> None:
        """Sleep (the pacing's clock, so tests run fast) unless nudged first."""
        sleeper = asyncio.ensure_future(self._pacing.sleep(seconds))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()

    def _transient(self, exc: Exception) -> None:
        if not self._failing:  # once per outage; the recovery is logged too
            log.warning("heartbeat to the queen failed (%s); still trying every %gs", exc, self._interval)
        self._failing = True


def build_queen_heartbeat(
    settings: Settings, view: Callable[[], QueenView], pacing: Pacing | None = None
) -> QueenHeartbeat | None:
    """The queen heartbeat `--queen-url` asks for (every `--heartbeat-interval`); None without a queen."""
    if not settings.queen_url:
        return None
    client = PeerClient(settings.hive_timeout, settings.hive_token)
    pacing = pacing or pacing_from(settings)
    return QueenHeartbeat(client, settings.queen_url, view, interval=settings.heartbeat_interval, pacing=pacing)
