"""The scheduler table: one row per name a request may ask for (its diffusers class, config overrides, A1111
infotext label, flow or not); each job gets a fresh instance built from the model's own scheduler config.

Adding a scheduler is one row. Importing this module is cheap: diffusers is imported when a scheduler is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Scheduler:
    """One selectable scheduler."""

    class_name: str  # in `diffusers`
    label: str  # A1111 infotext "Sampler:" name, for output metadata
    flow: bool = False  # for flow-matching families (SD3, Z-Image) only; the others take only the rest
    overrides: dict[str, Any] = field(default_factory=dict)


DPMPP_2M = {"algorithm_type": "dpmsolver++", "solver_order": 2}
DPMPP_2M_SDE = {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}
KARRAS = {"use_karras_sigmas": True}
EXPONENTIAL = {"use_exponential_sigmas": True}

# Named after A1111's samplers (`api/a1111/samplers.py` maps A1111's names onto these): dpmpp_2m is "DPM++ 2M",
# plms is PNDM without its Runge-Kutta warm-up (A1111's PLMS); `_karras` / `_exponential` are the same sampler on
# Karras or exponential sigmas (A1111's "Schedule type").
SCHEDULERS: dict[str, Scheduler] = {
    "ddim": Scheduler("DDIMScheduler", "DDIM"),
    "ddpm": Scheduler("DDPMScheduler", "DDPM"),
    "euler": Scheduler("EulerDiscreteScheduler", "Euler"),
    "euler_a": Scheduler("EulerAncestralDiscreteScheduler", "Euler a"),
    "dpmpp_2m": Scheduler("DPMSolverMultistepScheduler", "DPM++ 2M", overrides=DPMPP_2M),
    "unipc": Scheduler("UniPCMultistepScheduler", "UniPC"),
    "lcm": Scheduler("LCMScheduler", "LCM"),
    "plms": Scheduler("PNDMScheduler", "PLMS", overrides={"skip_prk_steps": True}),
    "heun": Scheduler("HeunDiscreteScheduler", "Heun"),
    "dpm2": Scheduler("KDPM2DiscreteScheduler", "DPM2"),
    "dpm2_a": Scheduler("KDPM2AncestralDiscreteScheduler", "DPM2 a"),
    "dpmpp_2m_sde": Scheduler("DPMSolverMultistepScheduler", "DPM++ 2M SDE", overrides=DPMPP_2M_SDE),
    "euler_karras": Scheduler("EulerDiscreteScheduler", "Euler Karras", overrides=KARRAS),
    "heun_karras": Scheduler("HeunDiscreteScheduler", "Heun Karras", overrides=KARRAS),
    "dpm2_karras": Scheduler("KDPM2DiscreteScheduler", "DPM2 Karras", overrides=KARRAS),
    "dpm2_a_karras": Scheduler("KDPM2AncestralDiscreteScheduler", "DPM2 a Karras", overrides=KARRAS),
    "dpmpp_2m_karras": Scheduler("DPMSolverMultistepScheduler", "DPM++ 2M Karras", overrides={**DPMPP_2M, **KARRAS}),
    "dpmpp_2m_sde_karras": Scheduler(
        "DPMSolverMultistepScheduler", "DPM++ 2M SDE Karras", overrides={**DPMPP_2M_SDE, **KARRAS}
    ),
    "euler_exponential": Scheduler("EulerDiscreteScheduler", "Euler Exponential", overrides=EXPONENTIAL),
    "dpmpp_2m_exponential": Scheduler(
        "DPMSolverMultistepScheduler", "DPM++ 2M Exponential", overrides={**DPMPP_2M, **EXPONENTIAL}
    ),
    "dpmpp_2m_sde_exponential": Scheduler(
        "DPMSolverMultistepScheduler", "DPM++ 2M SDE Exponential", overrides={**DPMPP_2M_SDE, **EXPONENTIAL}
    ),
    "flow_euler": Scheduler("FlowMatchEulerDiscreteScheduler", "Euler (flow)", flow=True),
}
# labels of schedulers a model may bring of its own but requests cannot choose
OTHER_LABELS = {"PNDMScheduler": "PLMS"}  # (a model's own PNDM runs its warm-up steps: not our `plms`)


def sampler_label(name: str | None, default_class: str) -> str:
    """The infotext label of scheduler `name`, or of the model's own scheduler class when `name` is None."""
    if name is not None:
        return SCHEDULERS[name].label
    labels = {spec.class_name: spec.label for spec in SCHEDULERS.values() if not spec.overrides}
    labels |= OTHER_LABELS | {"DPMSolverMultistepScheduler": "DPM++ 2M"}
    return labels.get(default_class, default_class)


def fresh_scheduler(default: Any, name: str | None) -> Any:
    """A new scheduler for one job: the model's own (a clean copy) or `name` built from its config."""
    if name is None:
        return type(default).from_config(default.config)
    import diffusers

    spec = SCHEDULERS[name]
    return getattr(diffusers, spec.class_name).from_config(default.config, **spec.overrides)
