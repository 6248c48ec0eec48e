"""The CUDA backend: fp16 for UNet families and bf16 for flow families by default; optional offloading."""

from __future__ import annotations

import gc
from typing import Any

import torch

from worker.backends.torch_backend import TorchBackend
from worker.config import Settings
from worker.errors import ConfigError


class CudaBackend(TorchBackend):
    """Runs the model on one NVIDIA GPU (`--cuda-device N`)."""

    kind = "cuda"

    def __init__(self, settings: Settings) -> None:
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device cuda: no CUDA device is visible (torch {torch.__version__}, "
                f"built for CUDA {torch.version.cuda or 'none'})"
            )
        count = torch.cuda.device_count()
        if settings.cuda_device >= count:
            raise ConfigError(f"--cuda-device {settings.cuda_device}: only {count} CUDA device(s) visible")
        self._index = settings.cuda_device
        self._device = f"cuda:{self._index}"
        super().__init__(settings)

    def place(self, pipe: Any) -> None:
        """To the GPU, or offloaded per `--offload` (weights visit the GPU only while they run)."""
        if self.settings.offload == "model":
            pipe.enable_model_cpu_offload(gpu_id=self._index)
        elif self.settings.offload == "sequential":
            pipe.enable_sequential_cpu_offload(gpu_id=self._index)
        else:
            pipe.to(self._device)

    def memory(self) -> dict[str, int | None]:
        """torch's allocator view of the GPU."""
        return {
            "allocated": torch.cuda.memory_allocated(self._index),
            "reserved": torch.cuda.memory_reserved(self._index),
            "total": torch.cuda.get_device_properties(self._index).total_memory,
        }

    def release_memory(self) -> None:
        """Drop Python references, then hand cached blocks back to the driver."""
        gc.collect()
        torch.cuda.empty_cache()
