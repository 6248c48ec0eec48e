"""`/sdapi/v1/options`: A1111's settings, kept for this process; the keys that mean something here are applied.

Applied: `sd_model_checkpoint` (must name the loaded model: this worker serves one), `CLIP_stop_at_last_layers`
(CLIP skip, SDXL/SD3), `sd_vae` (the model's own only), `samples_format` (png, jpg, webp), `live_previews_enable` and
`show_progress_every_n_steps` (the `current_image` of `/progress`). Any other key is stored and returned, as A1111
does for settings of extensions it does not have, and changes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from worker.engine.protocol import ImageGenerationBackend, OutputFormat
from worker.errors import Unsupported

FORMATS: dict[str, OutputFormat] = {"png": "png", "jpg": "jpeg", "jpeg": "jpeg", "webp": "webp"}
OWN_VAE = ("Automatic", "None", "", None)


def checkpoint_title(backend: ImageGenerationBackend) -> str:
    """The loaded model as A1111 names a checkpoint (its folder or file name)."""
    return Path(backend.model_ref).name or backend.family.name


def checkpoint_names(backend: ImageGenerationBackend) -> tuple[str, ...]:
    """Every name a client may use for the loaded model."""
    return (checkpoint_title(backend), backend.family.name, backend.model_ref)


class Options:
    """The options of this process: A1111's defaults for the keys clients read, then whatever was set."""

    def __init__(self, backend: ImageGenerationBackend) -> None:
        self._backend = backend
        self._values: dict[str, Any] = {
            "sd_model_checkpoint": checkpoint_title(backend),
            "sd_checkpoint_hash": None,
            "sd_vae": "Automatic",
            "sd_lora": "None",
            "CLIP_stop_at_last_layers": 1,
            "samples_format": "png",
            "live_previews_enable": True,
            "show_progress_every_n_steps": 10,
            "eta_noise_seed_delta": 0,
            "emphasis": "Original",
            "send_seed": True,
            "send_size": True,
            "enable_pnginfo": True,
            "add_model_name_to_info": True,
        }

    def get(self) -> dict[str, Any]:
        """All options (`GET /sdapi/v1/options`)."""
        return dict(self._values)

    def check(self, values: dict[str, Any], where: str) -> None:
        """Raise Unsupported (400) if `values` asks for something this worker cannot do."""
        checkpoint = values.get("sd_model_checkpoint")
        if checkpoint is not None and _strip_hash(str(checkpoint)) not in checkpoint_names(self._backend):
            title = checkpoint_title(self._backend)
            raise Unsupported(
                f"{where}.sd_model_checkpoint: this worker serves one model, {title!r}; it cannot load {checkpoint!r}",
                field=f"{where}.sd_model_checkpoint",
            )
        clip_skip = values.get("CLIP_stop_at_last_layers")
        most = 12 if self._backend.family.supports_clip_skip else 1
        if clip_skip is not None and (not isinstance(clip_skip, int) or not 1 <= clip_skip <= most):
            raise Unsupported(
                f"{where}.CLIP_stop_at_last_layers must be an integer from 1 to {most} for this model",
                field=f"{where}.CLIP_stop_at_last_layers",
            )
        if values.get("sd_vae", "Automatic") not in OWN_VAE:
            raise Unsupported(
                f"{where}.sd_vae: only the model's own VAE (Automatic) is available", field=f"{where}.sd_vae"
            )
        fmt = values.get("samples_format")
        if fmt is not None and str(fmt).lower() not in FORMATS:
            raise Unsupported(f"{where}.samples_format must be png, jpg or webp", field=f"{where}.samples_format")

    def update(self, values: dict[str, Any]) -> None:
        """`POST /sdapi/v1/options`: check, then keep every key."""
        self.check(values, "options")
        self._values.update(values)

    def merged(self, overrides: dict[str, Any] | None) -> dict[str, Any]:
        """The options in effect for one request with `override_settings`."""
        if not overrides:
            return self._values
        self.check(overrides, "override_settings")
        return {**self._values, **overrides}


def output_format(options: dict[str, Any]) -> OutputFormat:
    """The image format `samples_format` asks for."""
    return FORMATS.get(str(options.get("samples_format", "png")).lower(), "png")


def clip_skip(options: dict[str, Any]) -> int:
    """CLIP layers to skip from the end (A1111's CLIP_stop_at_last_layers − 1)."""
    value = options.get("CLIP_stop_at_last_layers", 1)
    return max(value - 1, 0) if isinstance(value, int) else 0


def preview_every(options: dict[str, Any]) -> int:
    """Steps between live previews (0 = none), from `live_previews_enable` and `show_progress_every_n_steps`."""
    every = options.get("show_progress_every_n_steps", 10)
    if not options.get("live_previews_enable", True) or not isinstance(every, int) or every <= 0:
        return 0
    return every


def _strip_hash(title: str) -> str:
    """ "model.safetensors [6ce0161689]" → "model.safetensors" (A1111 titles carry the short hash)."""
    name, _, rest = title.rpartition(" [")
    return name if name and rest.endswith("]") else title
