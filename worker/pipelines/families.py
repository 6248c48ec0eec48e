"""The model-family registry: `--sd-version` → defaults, source and the rules requests are checked against.

A table of small frozen dataclasses (as diffusers' `auto_pipeline.py` maps names to classes), not if/elif.
Importing this module is cheap: no torch, no diffusers.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from pathlib import Path

from worker.errors import InvalidRequest

UNET_SCHEDULERS = ("ddim", "ddpm", "euler", "euler_a", "dpmpp_2m", "unipc", "lcm")
FLOW_SCHEDULERS = ("flow_euler",)
# A1111 infotext "Sampler:" names, for output metadata.
SAMPLER_LABELS = {
    "ddim": "DDIM",
    "ddpm": "DDPM",
    "euler": "Euler",
    "euler_a": "Euler a",
    "dpmpp_2m": "DPM++ 2M",
    "unipc": "UniPC",
    "lcm": "LCM",
    "flow_euler": "Euler (flow)",
}

# The same labels for a model's own scheduler, by class name.
SCHEDULER_CLASS_LABELS = {
    "DDIMScheduler": "DDIM",
    "DDPMScheduler": "DDPM",
    "PNDMScheduler": "PLMS",
    "EulerDiscreteScheduler": "Euler",
    "EulerAncestralDiscreteScheduler": "Euler a",
    "DPMSolverMultistepScheduler": "DPM++ 2M",
    "UniPCMultistepScheduler": "UniPC",
    "LCMScheduler": "LCM",
    "FlowMatchEulerDiscreteScheduler": "Euler (flow)",
}

DEMO_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "demo"


@dataclass(frozen=True)
class Family:
    """One `--sd-version`: its diffusers classes, default source and request defaults."""

    name: str
    pipeline_classes: tuple[str, ...]
    source: str  # hub repo id, or a local folder for the bundled demo model
    width: int
    height: int
    steps: int
    guidance: float
    max_size: int = 2048  # the largest square it is asked for (max_size² pixels); beyond, images fall apart
    flow: bool = False  # flow matching (SD3.x, Z-Image): flow schedulers only, 16-px sizes
    fixed_guidance: float | None = None  # turbo distillations: any other value is refused
    description: str = ""

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this."""
        return 16 if self.flow else 8

    @property
    def max_pixels(self) -> int:
        """The most pixels one image of this family may have."""
        return self.max_size * self.max_size

    def size_note(self) -> str:
        """Its native and maximum size, as errors and docs state them."""
        return f"the {self.name} model draws at {self.width}×{self.height} (max {self.max_size}×{self.max_size})"

    @property
    def schedulers(self) -> tuple[str, ...]:
        """Scheduler names a request may ask for on this family."""
        return FLOW_SCHEDULERS if self.flow else UNET_SCHEDULERS

    def start_index(self, steps: int, strength: float | None) -> int:
        """How many of `steps` timesteps img2img `strength` skips (diffusers' `get_timesteps`).

        UNet pipelines truncate `steps * strength` to an int; the flow pipelines (SD3, Z-Image) truncate the
        start index instead, so the two can differ by one step.
        """
        if strength is None:
            return 0
        if self.flow:
            return int(max(steps - steps * strength, 0.0))
        return steps - min(math.floor(steps * strength), steps)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "demo",
            ("StableDiffusionPipeline",),
            str(DEMO_MODEL_DIR),
            64,
            64,
            20,
            4.0,
            max_size=128,
            description="tiny SD1.5-architecture model trained on coloured shapes, bundled",
        ),
        Family(
            "v1-5",
            ("StableDiffusionPipeline",),
            "stable-diffusion-v1-5/stable-diffusion-v1-5",
            512,
            512,
            30,
            7.5,
            max_size=1024,
        ),
        Family(
            "v2-1",
            ("StableDiffusionPipeline",),
            "stabilityai/stable-diffusion-2-1",
            768,
            768,
            30,
            7.5,
            max_size=1536,
            description="v-prediction",
        ),
        Family("xl", ("StableDiffusionXLPipeline",), "stabilityai/stable-diffusion-xl-base-1.0", 1024, 1024, 30, 5.0),
        Family(
            "turbo",
            ("StableDiffusionXLPipeline", "StableDiffusionPipeline"),
            "stabilityai/sdxl-turbo",
            512,
            512,
            4,
            0.0,
            max_size=1024,
            fixed_guidance=0.0,
        ),
        Family(
            "3-medium",
            ("StableDiffusion3Pipeline",),
            "stabilityai/stable-diffusion-3-medium-diffusers",
            1024,
            1024,
            28,
            7.0,
            flow=True,
        ),
        Family(
            "3.5-large",
            ("StableDiffusion3Pipeline",),
            "stabilityai/stable-diffusion-3.5-large",
            1024,
            1024,
            28,
            3.5,
            flow=True,
        ),
        Family(
            "3.5-large-turbo",
            ("StableDiffusion3Pipeline",),
            "stabilityai/stable-diffusion-3.5-large-turbo",
            1024,
            1024,
            4,
            0.0,
            flow=True,
        ),
        Family(
            "z-image-turbo",
            ("ZImagePipeline",),
            "Tongyi-MAI/Z-Image-Turbo",
            1024,
            1024,
            9,
            0.0,
            flow=True,
            description="Qwen3 text encoder, 16-channel VAE",
        ),
    )
}


# what people type for a family, from other tools' names (A1111, ComfyUI, the hub)
ALIASES = {
    "sdxl": "xl",
    "sd-xl": "xl",
    "sdxl-base": "xl",
    "sd15": "v1-5",
    "sd1.5": "v1-5",
    "sd-1.5": "v1-5",
    "1.5": "v1-5",
    "v15": "v1-5",
    "sd21": "v2-1",
    "sd2.1": "v2-1",
    "2.1": "v2-1",
    "sdxl-turbo": "turbo",
    "sd-turbo": "turbo",
    "sd3": "3-medium",
    "sd3-medium": "3-medium",
    "sd3.5": "3.5-large",
    "sd35": "3.5-large",
    "3.5": "3.5-large",
    "z-image": "z-image-turbo",
    "zimage": "z-image-turbo",
}


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
