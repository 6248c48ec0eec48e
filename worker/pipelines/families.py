"""The model-family registry: `--sd-version` → defaults, source and the rules requests are checked against.

A table of small frozen dataclasses (as diffusers' `auto_pipeline.py` maps names to classes), not if/elif.
Importing this module is cheap: no torch, no diffusers.
"""

from __future__ import annotations

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
    flow: bool = False  # flow matching (SD3.x, Z-Image): flow schedulers only, 16-px sizes
    fixed_guidance: float | None = None  # turbo distillations: any other value is refused
    description: str = ""
    max_size: int = 2048  # largest width or height it draws sensibly (the demo: 128)

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this."""
        return 16 if self.flow else 8

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
            description="tiny SD1.5-architecture model trained on coloured shapes, bundled",
            max_size=128,
        ),
        Family("v1-5", ("StableDiffusionPipeline",), "stable-diffusion-v1-5/stable-diffusion-v1-5", 512, 512, 30, 7.5),
        Family(
            "v2-1",
            ("StableDiffusionPipeline",),
            "stabilityai/stable-diffusion-2-1",
            768,
            768,
            30,
            7.5,
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


def get_family(name: str) -> Family:
    """The family for `--sd-version NAME`, or a clear error listing the valid names."""
    try:
        return FAMILIES[name]
    except KeyError:
        valid = ", ".join(FAMILIES)
        raise InvalidRequest(f"unknown sd-version {name!r}; valid: {valid}", field="sd_version") from None
