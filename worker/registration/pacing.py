"""How calls to a hive or queen are paced after failures, and how refusals are logged without flooding."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from worker.config import Settings
from worker.registration.backoff import delays, slow_delays
from worker.registration.hive import HiveRejected

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]
HINTS = {
    401: "check --hive-token (or SD_WORKER_HIVE_TOKEN)",
    403: "check --hive-token (or SD_WORKER_HIVE_TOKEN)",
    400: "the hive refuses this registration's content; check --hive-protocol and --worker-id",
    422: "the hive cannot read this shape; check --hive-protocol",
}


@dataclass(frozen=True)
class Pacing:
    """Retry timing (seconds) plus the clock, sleep and randomness (tests inject fast ones)."""

    initial: float = 0.5  # transient failures (unreachable, 5xx): quick backoff with jitter
    cap: float = 30.0
    rejected: float = 10.0  # permanent refusals (400/401/403/422): at least this, doubling to rejected_cap
    rejected_cap: float = 300.0
    sleep: Sleep = asyncio.sleep
    clock: Clock = time.monotonic
    rng: random.Random = field(default_factory=random.Random)

    def transient(self) -> Iterator[float]:
        """Delays after failures that may pass by themselves."""
        return delays(self.initial, self.cap, self.rng)

    def slow(self) -> Iterator[float]:
        """Delays after refusals that only a fix will end."""
        return slow_delays(self.rejected, self.rejected_cap, self.rng)


class RefusalLog:
    """Logs a refusal once per distinct answer (status + body), then quietly at debug level."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._log = logger
        self._what = what
        self._last: tuple[int, str] | None = None

    def refused(self, exc: HiveRejected, retry_in: float) -> None:
        """Record a permanent refusal of the call."""
        answer = (exc.status, exc.answer)
        if answer == self._last:
            self._log.debug("%s refused again (%d); next try in %.0fs", self._what, exc.status, retry_in)
            return
        self._last = answer
        hint = HINTS.get(exc.status, "")
        self._log.error(
            "%s refused with %d: %s%s; retrying slowly (next try in %.0fs, then less and less often)",
            self._what, exc.status, exc.answer or "(no answer body)", f" ({hint})" if hint else "", retry_in,
        )  # fmt: skip

    def clear(self) -> None:
        """The call went through: a later refusal is news again."""
        self._last = None


def pacing_from(settings: Settings) -> Pacing:
    """The retry timing configured on the command line."""
    return Pacing(settings.hive_retry_initial, settings.hive_retry_max, settings.hive_rejected_retry,
                  settings.hive_rejected_retry_max)  # fmt: skip
