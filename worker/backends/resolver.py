"""`--device` → a backend instance. Device probing happens here and in the backend modules only."""

from __future__ import annotations

import logging

from worker.backends.base import ImageGenerationBackend
from worker.config import Settings

log = logging.getLogger(__name__)


def resolve_device(requested: str) -> str:
    """`auto` picks cuda → mps → cpu; only the CPU backend exists so far, so auto means cpu."""
    if requested == "auto":
        log.info("--device auto: using cpu (the CUDA and MPS backends are not built yet)")
        return "cpu"
    return requested


def create_backend(settings: Settings) -> ImageGenerationBackend:
    """Build (not load) the backend for the settings' device."""
    device = resolve_device(settings.device)
    if device == "cpu":
        from worker.backends.cpu import CpuBackend

        return CpuBackend(settings)
    raise ValueError(f"unsupported device {device!r}")
