"""Exponential backoff with jitter for calls to the hive."""

from __future__ import annotations

import random
from collections.abc import Iterator


def delays(initial: float = 0.5, cap: float = 30.0, rng: random.Random | None = None) -> Iterator[float]:
    """0.5, 1, 2, 4 … seconds (capped), each scaled by a random factor in [0.5, 1] so a fleet does not stampede."""
    rng = rng or random.Random()
    base = initial
    while True:
        yield base * rng.uniform(0.5, 1.0)
        base = min(base * 2, cap)
