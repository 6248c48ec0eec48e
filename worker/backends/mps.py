"""The Apple MPS backend: fp16 by default. Not exercised on Apple hardware here (resolver and dtype tests only)."""

from __future__ import annotations

import gc
from typing import Any

import torch

from worker.backends.torch_backend import TorchBackend
from worker.config import Settings
from worker.errors import ConfigError


class MpsBackend(TorchBackend):
    """Runs the model on Apple silicon through Metal."""

    kind = "mps"
    _device = "mps"

    def __init__(self, settings: Settings) -> None:
        if not torch.backends.mps.is_available():
            raise ConfigError(
                "--device mps: Metal is not available (needs Apple silicon, macOS 12.3+, "
                "and a native, non-Docker process)"
            )
        super().__init__(settings)

    def place(self, pipe: Any) -> None:
        """To the GPU, or model-offloaded (sequential offload needs CUDA streams)."""
        if self.settings.offload == "model":
            pipe.enable_model_cpu_offload(device="mps")
        elif self.settings.offload == "sequential":
            raise ConfigError("--offload sequential needs CUDA; use --offload model on mps")
        else:
            pipe.to(self._device)

    def memory(self) -> dict[str, int | None]:
        """Metal's view: tensors allocated, driver total, and the recommended working-set size."""
        return {
            "allocated": torch.mps.current_allocated_memory(),
            "reserved": torch.mps.driver_allocated_memory(),
            "total": torch.mps.recommended_max_memory(),
        }

    def release_memory(self) -> None:
        """Drop references, then empty Metal's cache."""
        gc.collect()
        torch.mps.empty_cache()

    def is_oom(self, exc: BaseException) -> bool:
        """MPS reports exhaustion as a RuntimeError mentioning out of memory."""
        return isinstance(exc, torch.OutOfMemoryError) or (
            isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
        )
