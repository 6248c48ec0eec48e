"""`GET /v1/capabilities`: what this worker accepts, so clients (and the playground) need not guess."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from worker import __version__
from worker.api.lifecycle import capabilities
from worker.api.native.protocol import GenerationBody, Img2ImgBody, InpaintBody
from worker.api.state import State, WorkerState
from worker.pipelines.schedulers import SCHEDULERS, sampler_label

router = APIRouter()
OUTPUT_FORMATS = ("png", "jpeg", "webp")


@router.get("/v1/capabilities")
async def get_capabilities(state: State) -> dict[str, Any]:
    """Family, sizes, defaults, schedulers, limits, LoRAs, tasks and components of the loaded model."""
    return describe(state)


def describe(state: WorkerState) -> dict[str, Any]:
    """The capabilities document (before the model has loaded, LoRAs and the model's own scheduler are unknown)."""
    backend, settings = state.backend, state.settings
    family, limits = backend.family, settings.limits
    loaded = backend.loaded
    own_scheduler = backend.default_scheduler if loaded else None
    return {
        "family": family.name,
        "description": family.description,
        "model_ref": backend.model_ref,
        "device": backend.device,
        "dtype": backend.dtype,
        "ready": state.ready,
        "version": __version__,
        "size": {
            "native": {"width": family.width, "height": family.height},
            # the largest square; the check is on pixels (max_pixels), so 64×192 passes on the demo (max 128×128)
            "max": {"width": family.max_size, "height": family.max_size},
            "multiple": family.size_multiple,
            "max_pixels": min(limits.max_pixels, family.max_size**2),
        },
        "defaults": {
            "steps": family.steps,
            "guidance_scale": family.guidance,
            # null: the model's own scheduler (its scheduler/ config), named by `model_scheduler`
            "scheduler": None,
            "model_scheduler": sampler_label(None, own_scheduler) if own_scheduler else None,
            "width": family.width,
            "height": family.height,
            "num_samples": GenerationBody.model_fields["num_samples"].default,
            "output_format": GenerationBody.model_fields["output_format"].default,
            "strength": {
                "img2img": Img2ImgBody.model_fields["strength"].default,
                "inpaint": InpaintBody.model_fields["strength"].default,
            },
        },
        "fixed_guidance": family.fixed_guidance,
        "schedulers": [{"name": name, "label": SCHEDULERS[name].label} for name in family.schedulers],
        "limits": {
            "max_pixels": limits.max_pixels,
            "max_steps": limits.max_steps,
            "max_samples": limits.max_samples,
            "max_prompt_chars": limits.max_prompt_chars,
            "max_body_bytes": limits.max_body_bytes,
            "max_upload_pixels": limits.max_upload_pixels,
            "max_queue": settings.max_queue,
            "job_timeout_seconds": settings.job_timeout,
            "seed_max": 2**32 - 1,
        },
        "loras": backend.loras.list() if loaded and backend.loras is not None else [],
        "tasks": list(capabilities(backend.components)),
        "components": backend.components,
        "output_formats": list(OUTPUT_FORMATS),
    }
