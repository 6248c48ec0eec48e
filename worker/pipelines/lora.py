"""LoRA files in `--lora-dir`: listed from their headers (no weights read), applied per job via PEFT adapters.

A job's LoRAs are activated with `set_adapters` on the shared pipeline and deactivated afterwards, never fused
into the base weights, so a job without LoRAs runs the base model bit for bit. Loaded adapters stay cached.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import safe_open

from worker.engine.protocol import LoraUse
from worker.errors import InvalidRequest

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# the down/A matrix of a cross-attention key projection, in diffusers, PEFT and kohya spellings
CROSS_KEY = re.compile(r"attn2[._]to_k[._](lora[._]down|lora_A)\.weight$")
CROSS_DIM_FAMILIES = {768: "v1-5", 1024: "v2-1", 2048: "xl"}


@dataclass(frozen=True)
class LoraFile:
    """One LoRA file and what its header says."""

    name: str
    path: Path
    size: int
    cross_attention_dim: int | None
    target: str  # "unet" or "transformer"
    version: int  # mtime in ns: a replaced file is loaded again

    def use(self, weight: float) -> LoraUse:
        """This file at `weight`, as a job carries it."""
        return LoraUse(self.name, str(self.path), weight, self.version)

    def describe(self) -> dict[str, Any]:
        """The entry of `GET /v1/loras`."""
        family = CROSS_DIM_FAMILIES.get(self.cross_attention_dim or 0, "unknown")
        return {"name": self.name, "size": self.size, "target": self.target, "target_family": family,
                "cross_attention_dim": self.cross_attention_dim}  # fmt: skip


def read_header(path: Path) -> LoraFile:
    """Name, size, target and cross-attention width of a LoRA file, from its safetensors header only."""
    with safe_open(str(path), "pt") as handle:
        keys = list(handle.keys())
        cross = next((k for k in keys if CROSS_KEY.search(k)), None)
        cross_dim = int(handle.get_slice(cross).get_shape()[1]) if cross is not None else None
    target = "transformer" if any(k.startswith("transformer.") for k in keys) else "unet"
    stat = path.stat()
    return LoraFile(path.stem, path, stat.st_size, cross_dim, target, stat.st_mtime_ns)


class LoraLibrary:
    """The LoRAs a worker can apply: the `.safetensors` files directly in `--lora-dir`."""

    def __init__(self, directory: Path, denoiser_cross_dim: int | None) -> None:
        self.directory = directory
        self._cross_dim = denoiser_cross_dim
        self._files: dict[str, LoraFile] = {}
        self._lock = threading.Lock()
        self.refresh()

    def refresh(self) -> list[dict[str, Any]]:
        """Rescan the folder (new, changed and removed files); unreadable files are skipped."""
        found: dict[str, LoraFile] = {}
        for path in sorted(self.directory.glob("*.safetensors")):
            if NAME.match(path.stem) and path.is_file():
                try:
                    found[path.stem] = read_header(path)
                except Exception:  # a truncated or foreign file must not take the listing down
                    continue
        with self._lock:
            self._files = found
        return self.list()

    def list(self) -> list[dict[str, Any]]:
        """Every LoRA, with whether it fits the loaded model."""
        with self._lock:
            files = list(self._files.values())
        return [{**f.describe(), "compatible": self.problem(f) is None} for f in files]

    def resolve(self, name: str, field: str) -> LoraFile:
        """The file for a requested name, or a 422 that says what exists or why it does not fit."""
        with self._lock:
            lora = self._files.get(name) if NAME.match(name) else None
            known = ", ".join(self._files) or "none"
        if lora is None:
            raise InvalidRequest(f"no LoRA named {name!r} in the LoRA folder (available: {known})", field=field)
        problem = self.problem(lora)
        if problem is not None:
            raise InvalidRequest(f"LoRA {name!r} {problem}", field=field)
        return lora

    def problem(self, lora: LoraFile) -> str | None:
        """Why `lora` cannot apply to the loaded model, or None."""
        if self._cross_dim is None or lora.cross_attention_dim is None:
            return None
        if lora.cross_attention_dim != self._cross_dim:
            trained = CROSS_DIM_FAMILIES.get(lora.cross_attention_dim, "another family")
            return (f"was trained for a cross-attention width of {lora.cross_attention_dim} ({trained}), but the "
                    f"loaded model's is {self._cross_dim}")  # fmt: skip
        return None


class AdapterState:
    """Which adapters are loaded into a pipeline, and activating exactly a job's set (executor thread only)."""

    def __init__(self) -> None:
        self.loaded: dict[str, int] = {}  # adapter name → file version

    def activate(self, pipe: Any, loras: tuple[LoraUse, ...]) -> None:
        """Load (once per file version) and activate `loras`, or switch every adapter off."""
        if not loras:
            if self.loaded:
                pipe.disable_lora()
            return
        for use in loras:
            if self.loaded.get(use.name) == use.version:
                continue
            if use.name in self.loaded:
                pipe.delete_adapters(use.name)
                del self.loaded[use.name]
            pipe.load_lora_weights(use.path, adapter_name=use.name)
            self.loaded[use.name] = use.version
        pipe.enable_lora()
        pipe.set_adapters([use.name for use in loras], adapter_weights=[use.weight for use in loras])
