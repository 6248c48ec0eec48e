"""Memory: where each component lives, the VAE-decode retry with tiling after an out-of-memory error."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger(__name__)


def residency(pipe: Any) -> dict[str, dict[str, Any]]:
    """component → {device, dtype, bytes} for every torch module of the pipeline."""
    report: dict[str, dict[str, Any]] = {}
    for name, component in pipe.components.items():
        if not isinstance(component, torch.nn.Module):
            continue
        params = list(component.parameters())
        if not params:
            continue
        report[name] = {
            "device": str(params[0].device),
            "dtype": str(params[0].dtype).removeprefix("torch."),
            "bytes": sum(p.numel() * p.element_size() for p in params),
        }
    return report


def log_residency(pipe: Any) -> None:
    """Log where every component lives and how big it is."""
    for name, facts in residency(pipe).items():
        log.info("component %-15s on %-8s %-9s %8.1f MB", name, facts["device"], facts["dtype"], facts["bytes"] / 2**20)


def retry_decode_with_tiling(vae: Any, is_oom: Callable[[BaseException], bool], release: Callable[[], None]) -> None:
    """Make `vae.decode` retry once with tiling when it runs out of memory (big images, small cards)."""
    decode = vae.decode

    @functools.wraps(decode)
    def decode_or_retry(*args: Any, **kwargs: Any) -> Any:
        try:
            return decode(*args, **kwargs)
        except BaseException as exc:
            if not is_oom(exc) or vae.use_tiling:
                raise
        release()
        log.warning("VAE decode ran out of memory; retrying once with tiling")
        vae.enable_tiling()
        try:
            return decode(*args, **kwargs)
        finally:
            vae.disable_tiling()

    vae.decode = decode_or_retry
