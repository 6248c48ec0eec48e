"""Run one job on a loaded model: per-image generators, a fresh scheduler, the step callback, the composite."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from PIL import Image

from worker import imaging
from worker.backends.base import StepHooks
from worker.engine.request import GenerationRequest
from worker.pipelines.model import LoadedModel
from worker.pipelines.schedulers import fresh_scheduler


def generators(seeds: tuple[int, ...], device: str) -> list[torch.Generator]:
    """One generator per image, so image i depends on `seeds[i]` alone."""
    return [torch.Generator(device=device).manual_seed(seed) for seed in seeds]


def _accepted_kwargs(pipe: Any) -> frozenset[str]:
    return frozenset(inspect.signature(type(pipe).__call__).parameters)


def call_kwargs(model: LoadedModel, request: GenerationRequest, generator_device: str) -> dict[str, Any]:
    """The keyword arguments of the plain diffusers call this request stands for (no callback)."""
    pipe = model.variants[request.task]
    if request.embeddings is not None:
        dtype = model.denoiser.dtype
        text = model.embeddings.call_kwargs(request.embeddings, request.guidance_scale, dtype, request.num_samples)
    else:
        text = {"prompt": request.prompt, "negative_prompt": request.negative_prompt}
    kwargs: dict[str, Any] = {
        "num_inference_steps": request.steps,
        "guidance_scale": request.guidance_scale,
        "height": request.height,
        "width": request.width,
        "num_images_per_prompt": request.num_samples,
        "generator": generators(request.seeds, generator_device),
        "output_type": "pil",
        **text,  # after num_images_per_prompt, which embeddings may set
    }
    if request.task != "txt2img":
        assert request.image is not None and request.strength is not None
        kwargs["image"] = request.image
        kwargs["strength"] = request.strength
    if request.task == "inpaint":
        assert request.mask is not None
        kwargs["mask_image"] = request.mask
    accepted = _accepted_kwargs(pipe)
    return {key: value for key, value in kwargs.items() if key in accepted and value is not None}


@contextmanager
def _signal_denoising(denoiser: Any, hooks: StepHooks) -> Iterator[None]:
    """Report the `denoising` stage when the denoiser is first called (the prompt is encoded by then)."""
    fired = False

    def pre_hook(module: Any, args: Any) -> None:
        nonlocal fired
        if not fired:
            fired = True
            hooks.stage("denoising")

    handle = denoiser.register_forward_pre_hook(pre_hook)
    try:
        yield
    finally:
        handle.remove()


def count_steps(model: LoadedModel, request: GenerationRequest) -> int:
    """Denoising steps (step callbacks) the call will make: PLMS adds one, img2img strength skips some."""
    scheduler = fresh_scheduler(model.default_scheduler, request.scheduler)
    extra = {"mu": 1.0} if scheduler.config.get("use_dynamic_shifting") else {}  # length does not depend on mu
    scheduler.set_timesteps(request.steps, **extra)
    skipped = model.family.start_index(request.steps, request.strength) * int(scheduler.order)
    return max(len(scheduler.timesteps) - skipped, 0)


def decode_latents(model: LoadedModel, latents: Any) -> Image.Image:
    """The first image of a batch of intermediate latents, through the VAE (as the pipelines decode)."""
    vae = model.base.vae
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    scaled = latents[:1] / vae.config.scaling_factor + shift
    decoded = vae.decode(scaled.to(vae.dtype), return_dict=False)[0]
    image: Image.Image = model.base.image_processor.postprocess(decoded, output_type="pil")[0]
    return image


def run(model: LoadedModel, request: GenerationRequest, hooks: StepHooks, generator_device: str) -> list[Image.Image]:
    """Generate the request's images; raising from the step callback stops the loop before the VAE decode."""
    pipe = model.variants[request.task]
    pipe.scheduler = fresh_scheduler(model.default_scheduler, request.scheduler)

    def on_step_end(_pipe: Any, index: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        hooks.step(index + 1)
        if hooks.wants_preview(index + 1):
            hooks.preview(index + 1, model.preview(tensors["latents"], decode_latents))
        return tensors

    kwargs = call_kwargs(model, request, generator_device)
    hooks.check()
    model.adapters.activate(model.base, request.loras)
    hooks.stage("encoding_prompt")
    with _signal_denoising(model.denoiser, hooks):
        images: list[Image.Image] = pipe(**kwargs, callback_on_step_end=on_step_end).images
    if request.task == "inpaint":
        assert request.image is not None and request.mask is not None
        images = [imaging.composite(request.image, image, request.mask) for image in images]
    return images


class _SilentHooks:
    """Hooks for the warm-up job: nothing listens."""

    def stage(self, name: str) -> None:
        """Ignored."""

    def step(self, step: int) -> None:
        """Ignored."""

    def check(self) -> None:
        """Never stops."""

    def wants_preview(self, step: int) -> bool:
        """Never."""
        return False

    def preview(self, step: int, image: Image.Image) -> None:
        """Ignored."""


def warm_up(model: LoadedModel, generator_device: str, size: int | None = None) -> None:
    """One 1-step job (small unless `size` is given), so the first request does not pay for lazy set-up."""
    size = size or model.family.size_multiple * 8
    guidance = model.family.guidance
    request = GenerationRequest(
        task="txt2img",
        prompt="warm-up" if model.has_text_encoder else None,
        embeddings=None if model.has_text_encoder else model.embeddings.placeholder(guidance),
        negative_prompt=None,
        steps=1,
        guidance_scale=guidance,
        seeds=(0,),
        width=size,
        height=size,
        scheduler=None,
        output_format="png",
    )
    run(model, request, _SilentHooks(), generator_device)
