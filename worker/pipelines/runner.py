"""Run jobs on a loaded model: per-image generators, a fresh scheduler, the step callback, the composite.

`run` makes one job's images, or several compatible jobs' images in one pipeline call (see
`worker.engine.batching`), each job with its own hooks, seeds and images. A job alone is a batch of one: only
its call's keyword arguments differ (`call_kwargs`, the plain diffusers call, so its bytes equal diffusers').
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from PIL import Image

from worker import imaging
from worker.engine.protocol import GenerationRequest, OnDrop, StepHooks
from worker.pipelines import weighting
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
    elif request.prompt_syntax and request.prompt is not None:
        cfg_above = model.embeddings.layout.cfg_above
        text = weighting.text_kwargs(
            model.base,
            request.prompt,
            request.negative_prompt,
            request.steps,
            request.guidance_scale,
            cfg_above,
            request.clip_skip,
        )
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
        "clip_skip": request.clip_skip or None,
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


def batch_kwargs(model: LoadedModel, requests: list[GenerationRequest], generator_device: str) -> dict[str, Any]:
    """The keyword arguments of one call making every image of `requests` (jobs with equal batch keys).

    Prompts are repeated per image rather than per job (`num_images_per_prompt` is one number for the whole
    call), and generator i is seeded with image i's seed, so each image depends on its own seed alone.
    """
    kwargs = call_kwargs(model, requests[0], generator_device)
    kwargs["prompt"] = [r.prompt for r in requests for _ in r.seeds]
    if "negative_prompt" in kwargs:  # the batch key makes it present for every job or for none
        kwargs["negative_prompt"] = [r.negative_prompt for r in requests for _ in r.seeds]
    if "num_images_per_prompt" in kwargs:
        kwargs["num_images_per_prompt"] = 1
    kwargs["generator"] = generators(tuple(seed for r in requests for seed in r.seeds), generator_device)
    return kwargs


@contextmanager
def _signal_denoising(denoiser: Any, on_start: Callable[[], None]) -> Iterator[None]:
    """Call `on_start` when the denoiser is first called (the prompt is encoded by then)."""
    fired = False

    def pre_hook(module: Any, args: Any) -> None:
        nonlocal fired
        if not fired:
            fired = True
            on_start()

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


def decode_latents(model: LoadedModel, latents: Any) -> list[Image.Image]:
    """Every image of a batch of intermediate latents, through the VAE (as the pipelines decode)."""
    vae = model.base.vae
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    scaled = latents / vae.config.scaling_factor + shift
    decoded = vae.decode(scaled.to(vae.dtype), return_dict=False)[0]
    images: list[Image.Image] = model.base.image_processor.postprocess(decoded, output_type="pil")
    return images


def report_step(model: LoadedModel, hooks: StepHooks, step: int, latents: Any) -> None:
    """Tell a job that `step` finished (raises to stop it), with a preview of its `latents` if it wants one."""
    hooks.step(step)
    if count := int(hooks.wants_preview(step)):
        hooks.preview(step, model.preview(latents[:count], decode_latents))


class _EveryJobStopped(Exception):
    """Raised from the step callback once no job of a call wants its images: stops before the VAE decode."""


def run(
    model: LoadedModel,
    requests: list[GenerationRequest],
    hooks: list[StepHooks],
    generator_device: str,
    on_drop: OnDrop,
) -> list[list[Image.Image] | None]:
    """Generate the images of one job, or of compatible jobs in one pipeline call; job i reports to `hooks[i]`.

    When job i's hooks raise (cancelled, timed out), `on_drop(i, exc)` is called at once, job i hears nothing
    more and its slot comes back as None; the others carry on. Once every job is dropped the loop stops
    before the VAE decode (raising from the step callback; `pipe._interrupt` would still decode).
    """
    first = requests[0]
    pipe = model.variants[first.task]
    pipe.scheduler = fresh_scheduler(model.default_scheduler, first.scheduler)
    ends = list(itertools.accumulate(r.num_samples for r in requests))
    slots = [slice(end - r.num_samples, end) for r, end in zip(requests, ends, strict=True)]
    live = list(range(len(requests)))

    def each_live(action: Callable[[int], None]) -> None:
        for i in list(live):
            try:
                action(i)
            except Exception as exc:  # whatever stops one job stops that job only
                live.remove(i)
                on_drop(i, exc)

    def on_step_end(_pipe: Any, index: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        each_live(lambda i: report_step(model, hooks[i], index + 1, tensors["latents"][slots[i]]))
        if not live:
            raise _EveryJobStopped
        return tensors

    if len(requests) == 1:
        kwargs = call_kwargs(model, first, generator_device)
    else:
        kwargs = batch_kwargs(model, requests, generator_device)
    each_live(lambda i: hooks[i].check())
    if not live:
        return [None] * len(requests)
    model.adapters.activate(model.base, first.loras)
    each_live(lambda i: hooks[i].stage("encoding_prompt"))
    try:
        with _signal_denoising(model.denoiser, lambda: each_live(lambda i: hooks[i].stage("denoising"))):
            images: list[Image.Image] = pipe(**kwargs, callback_on_step_end=on_step_end).images
    except _EveryJobStopped:
        return [None] * len(requests)
    return [_finish(requests[i], images[slots[i]]) if i in live else None for i in range(len(requests))]


def _finish(request: GenerationRequest, images: list[Image.Image]) -> list[Image.Image]:
    """Inpainting returns the pixels outside the mask unchanged."""
    if request.task != "inpaint":
        return images
    assert request.image is not None and request.mask is not None
    return [imaging.composite(request.image, image, request.mask) for image in images]


class SilentHooks:
    """Hooks for the warm-up job: nothing listens."""

    def stage(self, name: str) -> None:
        """Ignored."""

    def step(self, step: int) -> None:
        """Ignored."""

    def check(self) -> None:
        """Never stops."""

    def wants_preview(self, step: int) -> int:
        """Never."""
        return 0

    def preview(self, step: int, images: list[Image.Image]) -> None:
        """Ignored."""


def warm_up(model: LoadedModel, generator_device: str, size: int | None = None) -> GenerationRequest:
    """One 1-step job (small unless `size` is given), so the first request does not pay for lazy set-up; returns
    the request it ran."""
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
    run(model, [request], [SilentHooks()], generator_device, on_drop=_reraise)
    return request


def _reraise(index: int, exc: Exception) -> None:
    raise exc
