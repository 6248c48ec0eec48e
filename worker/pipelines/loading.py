"""Find and load a family's weights: a diffusers folder, a single .safetensors file, or the HF hub cache."""

from __future__ import annotations

import gc
import json
import logging
import os
from pathlib import Path
from typing import Any

import diffusers
from diffusers import DiffusionPipeline

from worker.config import Components
from worker.errors import ModelLoadError
from worker.pipelines.architectures import architecture_of
from worker.pipelines.families import Family
from worker.pipelines.prompts import is_text_component

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth")

log = logging.getLogger(__name__)


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE asks us never to touch the network."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def load_pipeline(
    family: Family,
    model_path: Path | None,
    config_path: Path | None,
    torch_dtype: Any,
    components: Components = "all",
    *,
    allow_pickle: bool = False,
) -> Any:
    """Load the base pipeline for `family` (from `model_path` when given), on the CPU, in `torch_dtype`.

    `components` leaves out what a split worker does not run: `text-encoder` loads only tokenizers and text
    encoders, `denoiser` everything but those. `allow_pickle` admits a single `.ckpt` file (`--allow-pickle`).
    """
    ref = str(model_path) if model_path is not None else family.source
    try:
        if model_path is not None and model_path.is_file():
            base = _load_single_file(family, model_path, config_path, torch_dtype, allow_pickle)
            _drop(base, components)
            config_source: str | Path = config_path or family.source
        elif model_path is not None or Path(family.source).is_absolute():
            base = _load_folder(Path(ref), torch_dtype, components)
            config_source = ref
        else:
            base = _load_from_hub(family.source, torch_dtype, components)
            config_source = family.source
        if components == "text-encoder":
            _keep_denoiser_config(base, config_source)
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


def _load_folder(folder: Path, torch_dtype: Any, components: Components) -> Any:
    index = folder / "model_index.json"
    if not index.is_file():
        raise ModelLoadError(f"no diffusers model at {folder} (looked for {index})")
    skipped = _skipped(json.loads(index.read_text()), components)
    return DiffusionPipeline.from_pretrained(  # type: ignore[no-untyped-call]
        str(folder), dtype=torch_dtype, local_files_only=True, **skipped
    )


def _skipped(index: dict[str, Any], components: Components) -> dict[str, None]:
    """Components passed as None so they are not loaded: those saved as `[null, null]` (e.g. SD3 without its
    T5 encoder), and those the component mode leaves out (the scheduler is config only and always kept)."""
    skipped: dict[str, None] = {}
    for name, value in index.items():
        if not isinstance(value, list) or name == "scheduler":
            continue
        text = is_text_component(name)
        if value == [None, None] or (components == "text-encoder" and not text) or (components == "denoiser" and text):
            skipped[name] = None
    return skipped


def _drop(pipe: Any, components: Components) -> None:
    """Free what a split worker does not run from a pipeline loaded whole (a single file loads everything)."""
    if components == "all":
        return
    for name, module in pipe.components.items():
        if module is not None and name != "scheduler" and (components == "text-encoder") != is_text_component(name):
            setattr(pipe, name, None)
    gc.collect()


def _keep_denoiser_config(pipe: Any, source: str | Path) -> None:
    """A text-encoder worker's architecture fix-up, if it has one (SD3 keeps its transformer's config)."""
    fixup = architecture_of(pipe).text_encoder_fixup
    if fixup is not None:
        fixup(pipe, source, hub_offline() or Path(source).exists())


def _load_single_file(
    family: Family, path: Path, config_path: Path | None, torch_dtype: Any, allow_pickle: bool
) -> Any:
    if path.suffix in PICKLE_SUFFIXES and not allow_pickle:
        raise ModelLoadError(
            f"{path}: a {path.suffix} file is a Python pickle, which can run code when it is loaded, so only "
            ".safetensors single files load by default; pass --allow-pickle to load it anyway (with "
            "torch.load(weights_only=True): tensors only, no code), or convert it to .safetensors"
        )
    if path.suffix != ".safetensors" and path.suffix not in PICKLE_SUFFIXES:
        raise ModelLoadError(f"{path}: a single-file model is a .safetensors (or, with --allow-pickle, .ckpt) file")
    # diffusers reads .ckpt files with torch.load(weights_only=True): a pickle that holds more than tensors fails
    config = str(config_path) if config_path is not None else family.source
    cls = getattr(diffusers, family.pipeline_classes[0])
    local = config_path is not None or hub_offline()
    return cls.from_single_file(str(path), config=config, dtype=torch_dtype, local_files_only=local)


def _load_from_hub(repo_id: str, torch_dtype: Any, components: Components) -> Any:
    offline = hub_offline()
    try:
        index = DiffusionPipeline.load_config(repo_id, local_files_only=offline)
        return DiffusionPipeline.from_pretrained(  # type: ignore[no-untyped-call]
            repo_id, dtype=torch_dtype, use_safetensors=True, local_files_only=offline, **_skipped(index, components)
        )
    except OSError as exc:
        where = "the Hugging Face cache (HF_HUB_OFFLINE is set)" if offline else "the Hugging Face hub and cache"
        raise ModelLoadError(
            f"model {repo_id!r} not found in {where}; pass --model-path to a local diffusers folder or "
            f".safetensors file ({exc.__class__.__name__})"
        ) from exc
