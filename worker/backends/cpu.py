"""The CPU backend: fp32 by default (diffusers' default, what equality tests compare against), bf16 opt-in."""

from __future__ import annotations

import os
import resource
import sys

import torch

from worker.backends.torch_backend import TorchBackend
from worker.config import Settings
from worker.errors import ConfigError


class CpuBackend(TorchBackend):
    """Runs the model on the CPU."""

    kind = "cpu"
    _device = "cpu"

    def check_options(self, settings: Settings) -> None:
        """Offloading moves weights out of accelerator memory; on the CPU there is nowhere to move them."""
        if settings.offload != "none":
            raise ConfigError("--offload needs an accelerator (cuda or mps); the CPU already holds everything")

    def memory(self) -> dict[str, int | None]:
        """Process resident memory and the machine's RAM."""
        return {"allocated": _resident_bytes(), "reserved": None, "total": _physical_bytes()}

    def is_oom(self, exc: BaseException) -> bool:
        """Allocation failures on the CPU surface as MemoryError (or torch's own OOM error)."""
        return isinstance(exc, MemoryError | torch.OutOfMemoryError)


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: peak instead of current (ru_maxrss is bytes on macOS, KiB elsewhere)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def _physical_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None
