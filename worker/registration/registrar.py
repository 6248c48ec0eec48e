"""Announce the worker to the hive, keep the heartbeat, re-register when forgotten, say goodbye on the way out.

The hive being down, slow or wrong never stops the worker: every call has a timeout, failures are retried
in the background, and generation never waits on any of it. Refusals that repeating will not fix
(400/401/403/422) are logged once and retried slowly; a hive that accepts the ready callback but 404s every
heartbeat gets at most one re-registration per (growing) backoff period.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator

import httpx

from worker.config import Settings
from worker.registration.hive import HiveClient, HiveRejected
from worker.registration.pacing import Pacing, RefusalLog, pacing_from
from worker.registration.shapes import SHAPES, HiveShapes, WorkerSnapshot

log = logging.getLogger(__name__)


class Registrar:
    """Runs the registration + heartbeat loop as one background task."""

    def __init__(
        self,
        client: HiveClient,
        shapes: HiveShapes,
        snapshot: Callable[[], WorkerSnapshot],
        *,
        interval: float,
        pacing: Pacing,
    ) -> None:
        self._client = client
        self._shapes = shapes
        self._snapshot = snapshot
        self._interval = interval
        self._pacing = pacing
        self._task: asyncio.Task[None] | None = None
        self._refusals = RefusalLog(log, f"registration at {client.callback_url}")
        self._heartbeat_refusals = RefusalLog(log, f"heartbeat to {client.heartbeat_url}")
        self.registrations = 0
        self.attempts = 0
        self._stopped = False

    def start(self) -> None:
        """Begin registering (after the model is loaded and warmed)."""
        self._task = asyncio.create_task(self._run(), name="sd-worker-hive")

    async def stop(self) -> None:
        """Stop the loop and, where the protocol has one, send the `stopping` heartbeat (bounded by the timeout)."""
        if self._stopped:
            return
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])  # waits it out; a cancel of stop() itself still propagates
        if self._shapes.stopping is not None:
            try:
                await self._client.heartbeat(self._shapes.stopping(self._snapshot()))
            except (httpx.HTTPError, HiveRejected) as exc:
                log.warning("could not tell the hive we are stopping: %s", exc)
        await self._client.close()

    async def _run(self) -> None:
        rejoin = Rejoin(self._pacing)
        await self._register()
        rejoin.registered()
        while True:
            await self._pacing.sleep(self._interval)
            try:
                await self._client.heartbeat(self._shapes.heartbeat(self._snapshot()))
            except HiveRejected as exc:
                if exc.status != 404:
                    self._heartbeat_failed(exc)
                elif rejoin.due():
                    forgotten = rejoin.hold == 0  # it knew us (or never 404'd before): a restart or an eviction
                    rejoin.registering()
                    if forgotten:
                        log.warning("the hive no longer knows this worker; registering again")
                    else:
                        log.warning("the hive accepts the registration but 404s every heartbeat; registering again "
                                    "(and not within the next %.0fs)", rejoin.hold)  # fmt: skip
                    await self._register()
                    rejoin.registered()
            except httpx.HTTPError as exc:
                log.warning("heartbeat failed: %s", exc)
            else:
                rejoin.heard()
                self._heartbeat_refusals.clear()

    def _heartbeat_failed(self, exc: HiveRejected) -> None:
        if exc.permanent:
            self._heartbeat_refusals.refused(exc, self._interval)
        else:
            log.warning("heartbeat refused: %s", exc)

    async def _register(self) -> None:
        """POST the ready callback until it is accepted: quick backoff while the hive is down or failing,
        slow (≥ 10 s, doubling to 5 min) while it refuses."""
        transient: Iterator[float] = self._pacing.transient()
        slow: Iterator[float] = self._pacing.slow()
        while True:
            self.attempts += 1
            try:
                await self._client.register(self._shapes.ready(self._snapshot()))
            except HiveRejected as exc:
                if exc.permanent:
                    delay = next(slow)
                    self._refusals.refused(exc, delay)
                else:
                    delay = next(transient)
                    log.warning("registration attempt %d failed (%s); retrying in %.1fs", self.attempts, exc, delay)
            except httpx.HTTPError as exc:
                delay = next(transient)
                log.warning("registration attempt %d failed (%s); retrying in %.1fs", self.attempts, exc, delay)
            else:
                self.registrations += 1
                self._refusals.clear()
                log.info("registered with the hive at %s (attempt %d)", self._client.callback_url, self.attempts)
                return
            await self._pacing.sleep(delay)


class Rejoin:
    """When a heartbeat answered 404 leads to registering again.

    A hive that knew the worker and forgot it (restarted, or evicted it) is answered at once. A hive that takes
    the ready callback but 404s the heartbeats after it gets one registration per backoff period (10 s, doubling
    to 5 min): re-registering at heartbeat pace would only spin.
    """

    def __init__(self, pacing: Pacing) -> None:
        self._pacing = pacing
        self._holds = pacing.slow()
        self.hold = 0.0  # how long after a registration the next may follow; 0 = at once
        self._since = pacing.clock()

    def heard(self) -> None:
        """A heartbeat went through: the hive knows the worker, so its next 404 is news."""
        if self.hold:
            self._holds, self.hold = self._pacing.slow(), 0.0

    def due(self) -> bool:
        """After a 404: register again now?"""
        return self._pacing.clock() - self._since >= self.hold

    def registering(self) -> None:
        """Registering again now: until a heartbeat goes through, the next one waits longer."""
        self.hold = next(self._holds)

    def registered(self) -> None:
        """The hive accepted the ready callback."""
        self._since = self._pacing.clock()


def build_registrar(
    settings: Settings, snapshot: Callable[[], WorkerSnapshot], pacing: Pacing | None = None
) -> Registrar | None:
    """The registrar `--callback-url` asks for, in the shapes of `--hive-protocol`; None without a callback."""
    heartbeat_url = settings.resolved_heartbeat_url()
    protocol = settings.resolved_hive_protocol()
    if settings.callback_url is None or heartbeat_url is None or protocol not in SHAPES:
        return None
    client = HiveClient(settings.callback_url, heartbeat_url, settings.hive_timeout, settings.hive_token)
    pacing = pacing or pacing_from(settings)
    return Registrar(client, SHAPES[protocol], snapshot, interval=settings.heartbeat_interval, pacing=pacing)
