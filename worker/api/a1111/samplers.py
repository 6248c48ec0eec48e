"""A1111 sampler and schedule-type names → this worker's schedulers (a table, read from A1111's
`sd_samplers_kdiffusion.py` / `sd_schedulers.py`).

A1111 1.9+ splits `sampler_name` ("DPM++ 2M") from `scheduler` ("Karras"); older clients put the schedule in the
name ("DPM++ 2M Karras"). Schedule types only change k-diffusion samplers; A1111 ignores them for DDIM, PLMS,
UniPC and LCM, and so does this table. "Automatic" is the sampler's own default (Karras for DPM++ 2M,
exponential for DPM++ 2M SDE, as in A1111 1.9+). "Uniform" and "Normal" both mean the model's own timestep
spacing here (diffusers' default sigmas), which is what they differ from A1111's only in rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from worker.errors import Unsupported
from worker.pipelines.families import Family


@dataclass(frozen=True)
class Sampler:
    """One A1111 sampler: the worker scheduler it runs as, and its A1111 metadata."""

    name: str
    base: str  # worker scheduler on the model's own sigmas
    aliases: tuple[str, ...] = ()
    automatic: str = "uniform"  # the schedule A1111 picks for "Automatic"
    scheduled: bool = True  # k-diffusion sampler: schedule types apply
    flow: str | None = None  # the scheduler that stands in on flow-matching families


SAMPLERS = (
    Sampler("DPM++ 2M", "dpmpp_2m", ("k_dpmpp_2m",), automatic="karras"),
    Sampler("DPM++ 2M SDE", "dpmpp_2m_sde", ("k_dpmpp_2m_sde",), automatic="exponential"),
    Sampler("Euler a", "euler_a", ("k_euler_a", "k_euler_ancestral")),
    Sampler("Euler", "euler", ("k_euler",), flow="flow_euler"),
    Sampler("Heun", "heun", ("k_heun",)),
    Sampler("DPM2", "dpm2", ("k_dpm_2",)),
    Sampler("DPM2 a", "dpm2_a", ("k_dpm_2_a",)),
    Sampler("DDIM", "ddim", scheduled=False),
    Sampler("PLMS", "plms", scheduled=False),
    Sampler("UniPC", "unipc", scheduled=False),
    Sampler("LCM", "lcm", ("k_lcm",), scheduled=False),
)
# schedule name → (label, suffix of the worker scheduler); "automatic" resolves per sampler
SCHEDULES = {
    "automatic": ("Automatic", None),
    "uniform": ("Uniform", ""),
    "normal": ("Normal", ""),
    "karras": ("Karras", "_karras"),
    "exponential": ("Exponential", "_exponential"),
}
UNSUPPORTED = (  # A1111 samplers diffusers has no equivalent of (or that need torchsde/scipy)
    "DPM++ SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE", "LMS", "DPM fast", "DPM adaptive", "Restart",
    "DDIM CFG++",
)  # fmt: skip


@dataclass(frozen=True)
class Choice:
    """A resolved sampler: the worker scheduler, and the A1111 names to report."""

    scheduler: str
    sampler_name: str
    schedule: str  # A1111 label, e.g. "Karras"


def _lookup() -> dict[str, Sampler]:
    table: dict[str, Sampler] = {}
    for sampler in SAMPLERS:
        for key in (sampler.name, *sampler.aliases):
            table[key.lower()] = sampler
    return table


BY_NAME = _lookup()


def _split(name: str) -> tuple[str, str | None]:
    """ "DPM++ 2M Karras" → ("DPM++ 2M", "karras") (the pre-1.9 spelling); other names pass through."""
    for schedule, (label, _) in SCHEDULES.items():
        if name.lower().endswith(" " + label.lower()) and name[: -len(label) - 1].lower() in BY_NAME:
            return name[: -len(label) - 1], schedule
    return name, None


def choose(
    family: Family, sampler_name: str | None, scheduler: str | None, field: str = "sampler_name"
) -> Choice | None:
    """The worker scheduler for an A1111 (sampler, schedule) pair; None = the model's own scheduler.

    A worker scheduler name (`dpmpp_2m_karras`) is accepted as the sampler name too.
    """
    if not sampler_name:
        if scheduler and scheduler.lower() not in ("automatic", ""):
            raise Unsupported("scheduler needs a sampler_name to apply to", field="scheduler")
        return None
    if sampler_name in family.schedulers:
        return Choice(sampler_name, sampler_name, "Automatic")
    name, named_schedule = _split(sampler_name)
    sampler = BY_NAME.get(name.lower())
    if sampler is None:
        why = "has no diffusers equivalent" if name in UNSUPPORTED else "is unknown"
        raise Unsupported(f"sampler {name!r} {why}; available: {', '.join(names(family))}", field=field)
    schedule = (scheduler or named_schedule or "automatic").lower().replace(" ", "_")
    if schedule not in SCHEDULES:
        valid = ", ".join(label for label, _ in SCHEDULES.values())
        raise Unsupported(f"schedule type {scheduler!r} is not available; available: {valid}", field="scheduler")
    if family.flow:
        if sampler.flow is None:
            raise Unsupported(
                f"the {family.name!r} family is flow matching: only the Euler sampler applies", field=field
            )
        return Choice(sampler.flow, sampler.name, "Automatic")
    if not sampler.scheduled or (schedule in ("automatic", "uniform", "normal") and sampler.automatic == "uniform"):
        return Choice(sampler.base, sampler.name, SCHEDULES[schedule][0])
    effective = sampler.automatic if schedule == "automatic" else schedule
    worker = sampler.base + (SCHEDULES[effective][1] or "")
    if worker not in family.schedulers:
        raise Unsupported(
            f"sampler {sampler.name!r} with the {SCHEDULES[effective][0]} schedule is not available "
            f"(diffusers lacks it); try Automatic or Uniform",
            field="scheduler",
        )
    return Choice(worker, sampler.name, SCHEDULES[effective][0])


def names(family: Family) -> list[str]:
    """The A1111 sampler names usable on `family`."""
    return [s.name for s in SAMPLERS if (s.flow is not None if family.flow else s.base in family.schedulers)]


def sampler_items(family: Family) -> list[dict[str, Any]]:
    """`GET /sdapi/v1/samplers`: A1111's `SamplerItem`s for the loaded family."""
    items = []
    for sampler in SAMPLERS:
        if sampler.name not in names(family):
            continue
        options = {"scheduler": sampler.automatic} if sampler.automatic != "uniform" and not family.flow else {}
        items.append({"name": sampler.name, "aliases": list(sampler.aliases), "options": options})
    return items


def scheduler_items(family: Family) -> list[dict[str, Any]]:
    """`GET /sdapi/v1/schedulers`: A1111's `SchedulerItem`s this worker applies."""
    rho = {"karras": 7.0}
    schedules = ["automatic"] if family.flow else list(SCHEDULES)
    return [
        {"name": name, "label": SCHEDULES[name][0], "aliases": None, "default_rho": rho.get(name, -1.0),
         "need_inner_model": False}
        for name in schedules
    ]  # fmt: skip
