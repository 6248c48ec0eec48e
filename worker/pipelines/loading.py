"""Find and load a family's weights: a diffusers folder, a single .safetensors file, or the HF hub cache."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import diffusers
from diffusers import DiffusionPipeline

from worker.errors import ModelLoadError
from worker.pipelines.families import Family

log = logging.getLogger(__name__)


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE asks us never to touch the network."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def load_pipeline(family: Family, model_path: Path | None, config_path: Path | None, torch_dtype: Any) -> Any:
    """Load the base pipeline for `family` (from `model_path` when given), on the CPU, in `torch_dtype`."""
    ref = str(model_path) if model_path is not None else family.source
    try:
        if model_path is not None and model_path.is_file():
            base = _load_single_file(family, model_path, config_path, torch_dtype)
        elif model_path is not None or Path(family.source).is_absolute():
            base = _load_folder(Path(ref), torch_dtype)
        else:
            base = _load_from_hub(family.source, torch_dtype)
    except ModelLoadError:
        raise
    except Exception as exc:  # diffusers raises many types; the user needs one line, not a trace
        raise ModelLoadError(f"could not load {family.name!r} model from {ref}: {exc}") from exc
    name = type(base).__name__
    if name not in family.pipeline_classes:
        expected = " or ".join(family.pipeline_classes)
        raise ModelLoadError(f"{ref} holds a {name}, but --sd-version {family.name} expects {expected}")
    base.set_progress_bar_config(disable=True)
    return base


def _load_folder(folder: Path, torch_dtype: Any) -> Any:
    index = folder / "model_index.json"
    if not index.is_file():
        raise ModelLoadError(f"no diffusers model at {folder} (looked for {index})")
    return DiffusionPipeline.from_pretrained(  # type: ignore[no-untyped-call]
        str(folder), dtype=torch_dtype, local_files_only=True, **_absent_components(index)
    )


def _absent_components(index: Path) -> dict[str, None]:
    """Components saved as `[null, null]` (e.g. SD3 without its T5 encoder) must be passed as None to load."""
    entries = json.loads(index.read_text())
    return {name: None for name, value in entries.items() if value == [None, None]}


def _load_single_file(family: Family, path: Path, config_path: Path | None, torch_dtype: Any) -> Any:
    if path.suffix != ".safetensors":
        raise ModelLoadError(f"{path}: only .safetensors single files are loaded (no pickle checkpoints)")
    config = str(config_path) if config_path is not None else family.source
    cls = getattr(diffusers, family.pipeline_classes[0])
    local = config_path is not None or hub_offline()
    return cls.from_single_file(str(path), config=config, dtype=torch_dtype, local_files_only=local)


def _load_from_hub(repo_id: str, torch_dtype: Any) -> Any:
    offline = hub_offline()
    try:
        return DiffusionPipeline.from_pretrained(  # type: ignore[no-untyped-call]
            repo_id, dtype=torch_dtype, use_safetensors=True, local_files_only=offline
        )
    except OSError as exc:
        where = "the Hugging Face cache (HF_HUB_OFFLINE is set)" if offline else "the Hugging Face hub and cache"
        raise ModelLoadError(
            f"model {repo_id!r} not found in {where}; pass --model-path to a local diffusers folder or "
            f".safetensors file ({exc.__class__.__name__})"
        ) from exc
