"""`--device` → a backend instance. `auto` probes cuda → mps → cpu; device modules are imported lazily."""

from __future__ import annotations

import importlib
import logging

from worker.backends.dtypes import DeviceKind
from worker.backends.quiet import quiet_third_party
from worker.config import Settings
from worker.engine.protocol import ImageGenerationBackend

log = logging.getLogger(__name__)

BACKENDS: dict[DeviceKind, str] = {
    "cpu": "worker.backends.cpu:CpuBackend",
    "cuda": "worker.backends.cuda:CudaBackend",
    "mps": "worker.backends.mps:MpsBackend",
}


def resolve_device(requested: str) -> DeviceKind:
    """`auto` → the first available of cuda, mps, cpu; anything else as given."""
    if requested in BACKENDS:
        return requested
    import torch

    if torch.cuda.is_available():
        found: DeviceKind = "cuda"
    elif torch.backends.mps.is_available():
        found = "mps"
    else:
        found = "cpu"
    log.info("--device auto: using %s", found)
    return found


def create_backend(settings: Settings) -> ImageGenerationBackend:
    """Build (not load) the backend for the settings' device."""
    quiet_third_party()  # before the device module imports diffusers (and with it transformers)
    module_name, class_name = BACKENDS[resolve_device(settings.device)].split(":")
    backend: ImageGenerationBackend = getattr(importlib.import_module(module_name), class_name)(settings)
    return backend
