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
    HeunDiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LCMScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)

DPMPP_2M = {"algorithm_type": "dpmsolver++", "solver_order": 2}
DPMPP_2M_SDE = {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}
KARRAS = {"use_karras_sigmas": True}
EXPONENTIAL = {"use_exponential_sigmas": True}

# name → (class, config overrides), named after A1111's samplers (dpmpp_2m is "DPM++ 2M"; plms is PNDM without
# its Runge-Kutta warm-up steps, as A1111's PLMS).
SCHEDULERS: dict[str, tuple[type[Any], dict[str, Any]]] = {
    "ddim": (DDIMScheduler, {}),
    "ddpm": (DDPMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, DPMPP_2M),
    "unipc": (UniPCMultistepScheduler, {}),
    "lcm": (LCMScheduler, {}),
    "plms": (PNDMScheduler, {"skip_prk_steps": True}),
    "heun": (HeunDiscreteScheduler, {}),
    "dpm2": (KDPM2DiscreteScheduler, {}),
    "dpm2_a": (KDPM2AncestralDiscreteScheduler, {}),
    "dpmpp_2m_sde": (DPMSolverMultistepScheduler, DPMPP_2M_SDE),
    "euler_karras": (EulerDiscreteScheduler, KARRAS),
    "heun_karras": (HeunDiscreteScheduler, KARRAS),
    "dpm2_karras": (KDPM2DiscreteScheduler, KARRAS),
    "dpm2_a_karras": (KDPM2AncestralDiscreteScheduler, KARRAS),
    "dpmpp_2m_karras": (DPMSolverMultistepScheduler, {**DPMPP_2M, **KARRAS}),
    "dpmpp_2m_sde_karras": (DPMSolverMultistepScheduler, {**DPMPP_2M_SDE, **KARRAS}),
    "euler_exponential": (EulerDiscreteScheduler, EXPONENTIAL),
    "dpmpp_2m_exponential": (DPMSolverMultistepScheduler, {**DPMPP_2M, **EXPONENTIAL}),
    "dpmpp_2m_sde_exponential": (DPMSolverMultistepScheduler, {**DPMPP_2M_SDE, **EXPONENTIAL}),
    "flow_euler": (FlowMatchEulerDiscreteScheduler, {}),
}


def fresh_scheduler(default: Any, name: str | None) -> Any:
    """A new scheduler for one job: the model's own (a clean copy) or `name` built from its config."""
    if name is None:
        return type(default).from_config(default.config)
    cls, overrides = SCHEDULERS[name]
    return cls.from_config(default.config, **overrides)
