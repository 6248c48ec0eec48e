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


SCHEDULERS: dict[str, Scheduler] = {
    "ddim": Scheduler("DDIMScheduler", "DDIM"),
    "ddpm": Scheduler("DDPMScheduler", "DDPM"),
    "euler": Scheduler("EulerDiscreteScheduler", "Euler"),
    "euler_a": Scheduler("EulerAncestralDiscreteScheduler", "Euler a"),
    "dpmpp_2m": Scheduler(  # A1111's "DPM++ 2M"
        "DPMSolverMultistepScheduler", "DPM++ 2M", overrides={"algorithm_type": "dpmsolver++", "solver_order": 2}
    ),
    "unipc": Scheduler("UniPCMultistepScheduler", "UniPC"),
    "lcm": Scheduler("LCMScheduler", "LCM"),
    "flow_euler": Scheduler("FlowMatchEulerDiscreteScheduler", "Euler (flow)", flow=True),
}
# labels of schedulers a model may bring of its own but requests cannot choose
OTHER_LABELS = {"PNDMScheduler": "PLMS"}


def sampler_label(name: str | None, default_class: str) -> str:
    """The infotext label of scheduler `name`, or of the model's own scheduler class when `name` is None."""
    if name is not None:
        return SCHEDULERS[name].label
    labels = {spec.class_name: spec.label for spec in SCHEDULERS.values()} | OTHER_LABELS
    return labels.get(default_class, default_class)


def fresh_scheduler(default: Any, name: str | None) -> Any:
    """A new scheduler for one job: the model's own (a clean copy) or `name` built from its config."""
    if name is None:
        return type(default).from_config(default.config)
    import diffusers

    spec = SCHEDULERS[name]
    return getattr(diffusers, spec.class_name).from_config(default.config, **spec.overrides)
