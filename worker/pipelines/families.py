"""The model-family registry: `--sd-version` → architecture, default source and request defaults.

Each family is one row of keyword arguments on top of an architecture record (`architectures.py`); adding a
family is one row here. Importing this module is cheap: no torch, no diffusers.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from worker.errors import InvalidRequest
from worker.pipelines.architectures import SD, SD3, SDXL, ZIMAGE, Architecture

DEMO_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "demo"


@dataclass(frozen=True)
class Family:
    """One `--sd-version`: its architecture(s), default source and request defaults."""

    name: str
    architectures: tuple[Architecture, ...]  # the first is the one single files load as
    source: str  # hub repo id, or a local folder for the bundled demo model
    width: int
    height: int
    steps: int
    guidance: float
    fixed_guidance: float | None = None  # turbo distillations: any other value is refused
    description: str = ""
    max_size: int = 2048  # largest width or height it draws sensibly (the demo: 128)

    @property
    def architecture(self) -> Architecture:
        """The family's main architecture (every one of a family agrees on the rules below)."""
        return self.architectures[0]

    @property
    def pipeline_classes(self) -> tuple[str, ...]:
        """The diffusers pipeline classes a model of this family may be."""
        return tuple(arch.pipeline_class for arch in self.architectures)

    @property
    def flow(self) -> bool:
        """Flow matching (SD3.x, Z-Image): flow schedulers only, 16-px sizes."""
        return self.architecture.flow

    @property
    def prompt_weighting(self) -> bool:
        """True if A1111 emphasis and long prompts are applied (SD1.x/2.x, SDXL); else plain text is used."""
        return all(arch.prompt_weighting for arch in self.architectures)

    @property
    def supports_clip_skip(self) -> bool:
        """True if requests may skip CLIP layers (SDXL, SD3)."""
        return all(arch.clip_skip for arch in self.architectures)

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this."""
        return self.architecture.size_multiple

    def size_note(self) -> str:
        """Its native and maximum size, as errors and docs state them."""
        return f"the {self.name} model draws at {self.width}×{self.height} (max {self.max_size}×{self.max_size})"

    @property
    def schedulers(self) -> tuple[str, ...]:
        """Scheduler names a request may ask for on this family."""
        return self.architecture.schedulers

    def start_index(self, steps: int, strength: float | None) -> int:
        """How many of `steps` timesteps img2img `strength` skips (see `Architecture.start_index`)."""
        return self.architecture.start_index(steps, strength)


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family(
            name="demo", architectures=(SD,), source=str(DEMO_MODEL_DIR), width=64, height=64, steps=20, guidance=4.0,
            max_size=128,
            description="tiny SD1.5-architecture model trained on coloured shapes, bundled",
        ),
        Family(
            name="v1-5", architectures=(SD,), source="stable-diffusion-v1-5/stable-diffusion-v1-5",
            width=512, height=512, steps=30, guidance=7.5, max_size=1024,
        ),
        Family(
            name="v2-1", architectures=(SD,), source="stabilityai/stable-diffusion-2-1",
            width=768, height=768, steps=30, guidance=7.5, max_size=1536, description="v-prediction",
        ),
        Family(
            name="xl", architectures=(SDXL,), source="stabilityai/stable-diffusion-xl-base-1.0",
            width=1024, height=1024, steps=30, guidance=5.0,
        ),
        Family(
            name="turbo", architectures=(SDXL, SD), source="stabilityai/sdxl-turbo",
            width=512, height=512, steps=4, guidance=0.0, max_size=1024, fixed_guidance=0.0,
        ),
        Family(
            name="3-medium", architectures=(SD3,), source="stabilityai/stable-diffusion-3-medium-diffusers",
            width=1024, height=1024, steps=28, guidance=7.0,
        ),
        Family(
            name="3.5-large", architectures=(SD3,), source="stabilityai/stable-diffusion-3.5-large",
            width=1024, height=1024, steps=28, guidance=3.5,
        ),
        Family(
            name="3.5-large-turbo", architectures=(SD3,), source="stabilityai/stable-diffusion-3.5-large-turbo",
            width=1024, height=1024, steps=4, guidance=0.0,
        ),
        Family(
            name="z-image-turbo", architectures=(ZIMAGE,), source="Tongyi-MAI/Z-Image-Turbo",
            width=1024, height=1024, steps=9, guidance=0.0, description="Qwen3 text encoder, 16-channel VAE",
        ),
    )
}  # fmt: skip


# what people type for a family, from other tools' names (A1111, ComfyUI, the hub)
ALIASES = {
    "sdxl": "xl", "sd-xl": "xl", "sdxl-base": "xl",
    "sd15": "v1-5", "sd1.5": "v1-5", "sd-1.5": "v1-5", "1.5": "v1-5", "v15": "v1-5",
    "sd21": "v2-1", "sd2.1": "v2-1", "2.1": "v2-1",
    "sdxl-turbo": "turbo", "sd-turbo": "turbo",
    "sd3": "3-medium", "sd3-medium": "3-medium", "sd3.5": "3.5-large", "sd35": "3.5-large", "3.5": "3.5-large",
    "z-image": "z-image-turbo", "zimage": "z-image-turbo",
}  # fmt: skip


def closest_family(name: str) -> str | None:
    """The family someone most likely meant by `name` (another tool's name for it, or a typo), if any."""
    lowered = name.strip().lower()
    if lowered in FAMILIES:
        return lowered
    if lowered in ALIASES:
        return ALIASES[lowered]
    close = difflib.get_close_matches(lowered, [*FAMILIES, *ALIASES], n=1, cutoff=0.6)
    return ALIASES.get(close[0], close[0]) if close else None


def get_family(name: str) -> Family:
    """The family for `--sd-version NAME`, or a clear error with the closest name and the valid ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        valid = ", ".join(FAMILIES)
        meant = closest_family(name)
        hint = f" (did you mean {meant!r}?)" if meant else ""
        raise InvalidRequest(f"unknown sd-version {name!r}{hint}; valid: {valid}", field="sd_version") from None
