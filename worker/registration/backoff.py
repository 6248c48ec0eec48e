"""Exponential backoff with jitter for calls to the hive."""

from __future__ import annotations

import random
from collections.abc import Iterator


def delays(
    initial: float = 0.5,
    cap: float = 30.0,
    rng: random.Random | None = None,
    spread: tuple[float, float] = (0.5, 1.0),
) -> Iterator[float]:
    """initial, ×2, ×4 … seconds up to `cap`, each scaled by a random factor in `spread` (so a fleet does not
    stampede) and never above `cap`."""
    rng = rng or random.Random()
    base = initial
    while True:
        yield min(base * rng.uniform(*spread), cap)
        base = min(base * 2, cap)


def slow_delays(initial: float, cap: float, rng: random.Random | None = None) -> Iterator[float]:
    """The pace after a permanent rejection: at least `initial`, doubling to `cap` (jitter only upwards)."""
    return delays(initial, cap, rng, spread=(1.0, 1.1))
