"""A denoising loop owned by the worker, so jobs can join and leave a running batch between two steps.

It is `StableDiffusionPipeline.__call__` and `StableDiffusionXLPipeline.__call__` taken apart (diffusers 0.42):
each job encodes its prompt with the pipeline's own `encode_prompt`, draws its latents with the pipeline's own
`prepare_latents` from its own generators, and keeps its own scheduler (timesteps, step index, sigmas, the
generators an ancestral sampler draws from), guidance scale and step count. Every step makes ONE denoiser call
over the rows of all live jobs, each row at its own job's timestep; a job without classifier-free guidance
brings no negative rows. A job alone makes exactly the calls the pipeline makes, so its bytes equal the plain
diffusers call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import torch
from PIL import Image

from worker.engine.protocol import GenerationRequest, Member
from worker.pipelines.model import LoadedModel
from worker.pipelines.runner import SilentHooks, generators, report_step
from worker.pipelines.schedulers import fresh_scheduler

_T = TypeVar("_T")
Added = dict[str, torch.Tensor]


def covers(model: LoadedModel, request: GenerationRequest) -> bool:
    """True if this loop reproduces the pipeline call `request` stands for (else it runs the plain call)."""
    pipe = model.variants[request.task]
    return (
        request.task == "txt2img"
        and type(pipe).__name__ in ARCHITECTURES
        and request.embeddings is None
        and not request.prompt_syntax
        and request.prompt is not None
        and pipe.unet.config.time_cond_proj_dim is None  # LCM-distilled UNets take a guidance embedding
    )


@dataclass
class _Running:
    """One job inside the loop: its scheduler state, latents and text embeddings."""

    member: Member
    scheduler: Any
    timesteps: list[Any]
    latents: torch.Tensor
    embeds: torch.Tensor  # [negatives; positives] with guidance, else positives
    added: dict[str, torch.Tensor]  # the UNet's added_cond_kwargs rows (SDXL: pooled text embeds, time ids)
    guidance: float
    cfg: bool
    step_kwargs: dict[str, Any] = field(default_factory=dict)
    generators: list[torch.Generator] = field(default_factory=list)
    index: int = 0

    @property
    def rows(self) -> int:
        """Denoiser rows this job adds to a call."""
        return int(self.embeds.shape[0])


def _start(model: LoadedModel, member: Member, generator_device: str) -> _Running:
    """Encode the prompt, set the timesteps and draw the latents, as the pipeline does before its loop."""
    request, pipe = member.request, model.variants["txt2img"]
    member.hooks.stage("encoding_prompt")
    device = pipe._execution_device
    cfg = request.guidance_scale > 1
    architecture = ARCHITECTURES[type(pipe).__name__]
    embeds, added = architecture.encode(pipe, request, device, cfg)
    scheduler = fresh_scheduler(model.default_scheduler, request.scheduler)
    scheduler.set_timesteps(request.steps, device=device)
    gens = generators(request.seeds, generator_device)
    pipe.scheduler = scheduler  # prepare_latents scales by the scheduler's init_noise_sigma
    channels = pipe.unet.config.in_channels
    latents = pipe.prepare_latents(
        request.num_samples, channels, request.height, request.width, embeds.dtype, device, gens
    )
    step_kwargs = pipe.prepare_extra_step_kwargs(gens, 0.0)
    member.hooks.stage("denoising")
    return _Running(
        member,
        scheduler,
        list(scheduler.timesteps),
        latents,
        embeds,
        added,
        request.guidance_scale,
        cfg,
        step_kwargs,
        gens,
    )


def _step(model: LoadedModel, jobs: list[_Running]) -> None:
    """One denoiser call over every job's rows at its own timestep, then each job's guidance and scheduler step."""
    unet = model.variants["txt2img"].unet
    inputs, times = [], []
    for job in jobs:
        t = job.timesteps[job.index]
        sample = torch.cat([job.latents] * 2) if job.cfg else job.latents
        inputs.append(job.scheduler.scale_model_input(sample, t))
        times.append(t.reshape(1).to(torch.float32).expand(job.rows))
    added = {name: torch.cat([job.added[name] for job in jobs]) for name in jobs[0].added}
    noise = unet(
        torch.cat(inputs),
        torch.cat(times),
        encoder_hidden_states=torch.cat([job.embeds for job in jobs]),
        added_cond_kwargs=added or None,
        return_dict=False,
    )[0]
    start = 0
    for job in jobs:
        pred = noise[start : start + job.rows]
        start += job.rows
        if job.cfg:
            uncond, text = pred.chunk(2)
            pred = uncond + job.guidance * (text - uncond)
        t = job.timesteps[job.index]
        job.latents = job.scheduler.step(pred, t, job.latents, **job.step_kwargs, return_dict=False)[0]
        job.index += 1


def _decode(model: LoadedModel, job: _Running) -> list[Image.Image]:
    """The pipeline's own decode and post-processing of one finished job."""
    pipe = model.variants["txt2img"]
    images: list[Image.Image] = ARCHITECTURES[type(pipe).__name__].decode(pipe, job)
    return images


def _encode_sd(pipe: Any, request: GenerationRequest, device: Any, cfg: bool) -> tuple[torch.Tensor, Added]:
    positive, negative = pipe.encode_prompt(
        request.prompt,
        device,
        request.num_samples,
        cfg,
        request.negative_prompt,
        clip_skip=request.clip_skip or None,
    )
    return (torch.cat([negative, positive]) if cfg else positive), {}


def _encode_sdxl(pipe: Any, request: GenerationRequest, device: Any, cfg: bool) -> tuple[torch.Tensor, Added]:
    positive, negative, pooled, negative_pooled = pipe.encode_prompt(
        prompt=request.prompt,
        device=device,
        num_images_per_prompt=request.num_samples,
        do_classifier_free_guidance=cfg,
        negative_prompt=request.negative_prompt,
        clip_skip=request.clip_skip or None,
    )
    encoder_2 = pipe.text_encoder_2
    projection = int(pooled.shape[-1]) if encoder_2 is None else encoder_2.config.projection_dim
    size = (request.height, request.width)
    time_ids = pipe._get_add_time_ids(size, (0, 0), size, dtype=positive.dtype, text_encoder_projection_dim=projection)
    if cfg:
        positive, pooled = torch.cat([negative, positive]), torch.cat([negative_pooled, pooled])
        time_ids = torch.cat([time_ids, time_ids])
    rows = time_ids.to(device).repeat(request.num_samples, 1)
    return positive.to(device), {"text_embeds": pooled.to(device), "time_ids": rows}


def _decode_sd(pipe: Any, job: _Running) -> list[Image.Image]:
    vae = pipe.vae
    decoded = vae.decode(job.latents / vae.config.scaling_factor, return_dict=False, generator=job.generators)[0]
    decoded, nsfw = pipe.run_safety_checker(decoded, pipe._execution_device, job.embeds.dtype)
    denormalize = [True] * decoded.shape[0] if nsfw is None else [not flagged for flagged in nsfw]
    images: list[Image.Image] = pipe.image_processor.postprocess(decoded, output_type="pil", do_denormalize=denormalize)
    return images


def _decode_sdxl(pipe: Any, job: _Running) -> list[Image.Image]:
    vae, latents = pipe.vae, job.latents
    upcast = vae.dtype == torch.float16 and vae.config.force_upcast  # it overflows in fp16
    if upcast:
        pipe.upcast_vae()
        latents = latents.to(next(iter(vae.post_quant_conv.parameters())).dtype)
    mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
    if mean is not None and std is not None:
        mean = torch.tensor(mean).view(1, 4, 1, 1).to(latents.device, latents.dtype)
        std = torch.tensor(std).view(1, 4, 1, 1).to(latents.device, latents.dtype)
        latents = latents * std / vae.config.scaling_factor + mean
    else:
        latents = latents / vae.config.scaling_factor
    decoded = vae.decode(latents, return_dict=False)[0]
    if upcast:
        vae.to(dtype=torch.float16)
    if pipe.watermark is not None:
        decoded = pipe.watermark.apply_watermark(decoded)
    images: list[Image.Image] = pipe.image_processor.postprocess(decoded, output_type="pil")
    return images


@dataclass(frozen=True)
class _Architecture:
    """How one pipeline class encodes a prompt (embeddings + added conditions) and decodes its latents."""

    encode: Callable[[Any, GenerationRequest, Any, bool], tuple[torch.Tensor, Added]]
    decode: Callable[[Any, _Running], list[Image.Image]]


# the pipelines whose loop this module reproduces
ARCHITECTURES = {
    "StableDiffusionPipeline": _Architecture(_encode_sd, _decode_sd),
    "StableDiffusionXLPipeline": _Architecture(_encode_sdxl, _decode_sdxl),
}


def run(model: LoadedModel, first: Member, admit: Callable[[], list[Member]], generator_device: str) -> None:
    """Denoise `first` and every job `admit` hands over between two steps, until none is left.

    `admit` is asked before every denoiser call (it returns only jobs that fit and share `first`'s size and LoRAs). A
    finished job is decoded and handed to its `done` at once; a job whose hooks raise (cancelled, timed out) or
    whose set-up fails is handed to its `dropped` and leaves before the next step.
    """
    model.adapters.activate(model.base, first.request.loras)
    live: list[_Running] = []
    pending = [first]
    while True:
        pending += admit()
        for member in pending:
            if (job := _guarded(member, partial(_joined, model, member, generator_device))) is not None:
                live.append(job)
        pending = []
        if not live:
            return
        _step(model, live)
        for job in list(live):
            if _guarded(job.member, partial(_stepped, model, job)) is not True:
                live.remove(job)  # finished, stopped or failed


def warm_up(model: LoadedModel, request: GenerationRequest, generator_device: str) -> None:
    """Run `request` (the warm-up job) through this loop: its denoiser calls are not the pipeline's (per-row
    timesteps), so torch.compile traces them apart, and serving must not be the first to pay for it."""
    failures: list[Exception] = []
    run(model, Member(request, SilentHooks(), lambda _: None, failures.append), list, generator_device)
    if failures:
        raise failures[0]


def _joined(model: LoadedModel, member: Member, generator_device: str) -> _Running:
    member.hooks.check()  # cancelled or timed out while it waited
    return _start(model, member, generator_device)


def _stepped(model: LoadedModel, job: _Running) -> bool:
    """Report the step; decode and hand over a finished job. False = the job leaves the batch."""
    report_step(model, job.member.hooks, job.index, job.latents)
    if job.index < len(job.timesteps):
        return True
    job.member.done(_decode(model, job))
    return False


def _guarded(member: Member, action: Callable[[], _T]) -> _T | None:
    """`action()`, or None after handing what it raised to the member's `dropped` (it stops that job only)."""
    try:
        return action()
    except Exception as exc:
        member.dropped(exc)
        return None
