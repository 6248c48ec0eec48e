"""Which dtype a device runs a family in: the defaults of DESIGN.md, and the combinations we refuse."""

from __future__ import annotations

from typing import Literal

from worker.config import Settings
from worker.errors import ConfigError
from worker.pipelines.families import Family

DeviceKind = Literal["cpu", "cuda", "mps"]


def resolve_dtype(device: DeviceKind, family: Family, settings: Settings) -> str:
    """fp32 on CPU, fp16 (UNet) / bf16 (flow) on CUDA, fp16 on MPS, unless `--dtype` / `--use-f16` say otherwise."""
    requested = settings.dtype
    if requested == "auto" and settings.use_f16:
        requested = "fp16"
    if requested == "auto":
        if device == "cpu":
            return "fp32"
        if device == "cuda":
            return family.architecture.cuda_dtype
        return "fp16"
    if device == "cpu" and requested == "fp16":
        raise ConfigError("fp16 on CPU is about 20x slower than fp32; use --dtype fp32 (default) or bf16")
    return requested
