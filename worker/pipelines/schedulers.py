"""Schedulers by name, validated per family; each job gets a fresh instance built from the model's config."""

from __future__ import annotations

from typing import Any

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    LCMScheduler,
    UniPCMultistepScheduler,
)

# name → (class, config overrides). dpmpp_2m is A1111's "DPM++ 2M".
SCHEDULERS: dict[str, tuple[type[Any], dict[str, Any]]] = {
    "ddim": (DDIMScheduler, {}),
    "ddpm": (DDPMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "unipc": (UniPCMultistepScheduler, {}),
    "lcm": (LCMScheduler, {}),
    "flow_euler": (FlowMatchEulerDiscreteScheduler, {}),
}


def fresh_scheduler(default: Any, name: str | None) -> Any:
    """A new scheduler for one job: the model's own (a clean copy) or `name` built from its config."""
    if name is None:
        return type(default).from_config(default.config)
    cls, overrides = SCHEDULERS[name]
    return cls.from_config(default.config, **overrides)
