"""`--use-flash-attn`: diffusers attention backends where the model dispatches through them (Z-Image), else
PyTorch SDPA's flash kernel forced around the call (the SD UNets and SD3, whose processors call SDPA directly)."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from typing import Any

from torch.nn.attention import SDPBackend, sdpa_kernel

DEFAULT = "sdpa"
UNET_FLASH = "sdpa-flash"


def transformer_candidates() -> list[str]:
    """diffusers backends to try on a transformer, best first: flash-attn, SageAttention, PyTorch's flash."""
    candidates = []
    if importlib.util.find_spec("flash_attn") is not None:
        candidates.append("flash")
    if importlib.util.find_spec("sageattention") is not None:
        candidates.append("sage")
    candidates.append("_native_flash")
    return candidates


def apply(denoiser: Any, backend: str) -> None:
    """Put a dispatching model on `backend` (a diffusers name), or back on its default."""
    if _dispatches(denoiser):
        if backend == DEFAULT:
            denoiser.reset_attention_backend()
        elif backend != UNET_FLASH:
            denoiser.set_attention_backend(backend)


def candidates(denoiser: Any) -> list[str]:
    """What `--use-flash-attn` may use for this denoiser, best first."""
    if _dispatches(denoiser):
        return transformer_candidates()
    return [UNET_FLASH]


@contextlib.contextmanager
def call_context(backend: str) -> Iterator[None]:
    """Around one pipeline call: force SDPA's flash kernel for UNet families when chosen."""
    if backend == UNET_FLASH:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            yield
    else:
        yield


def _dispatches(denoiser: Any) -> bool:
    # set_attention_backend exists on every diffusers model but only acts where the attention processors go
    # through diffusers' dispatcher (they carry `_attention_backend`); elsewhere it would be silently ignored.
    return any(hasattr(getattr(module, "processor", None), "_attention_backend") for module in denoiser.modules())
