"""The A1111 service: an A1111 body → a `Plan` (checked, names mapped, images prepared) → one `GenerationParams`
per iteration (`Plan.to_params`), run one after another; then A1111's answer.

A field this worker cannot honour is refused by name (400) when it asks for something, and passes at its A1111
default; fields accepted without effect are named in the `X-Ignored-Params` header. `n_iter` runs as that many
jobs one after another (seeds continuing, as A1111's `all_seeds`), each of `batch_size` images with one seed per
image, so image i is reproducible alone.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import math
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageOps

from worker import __version__, imaging
from worker.api import serving
from worker.api.a1111 import masking, samplers
from worker.api.a1111 import options as opts
from worker.api.a1111.progress import Tracked, Tracker
from worker.api.a1111.protocol import A1111Request, Img2ImgRequest, Txt2ImgRequest
from worker.api.state import WorkerState
from worker.engine.job import Job
from worker.engine.protocol import GenerationParams, LoraRequest, OutputFormat, Task
from worker.errors import InvalidRequest, JobFailed, Unsupported
from worker.pipelines import syntax
from worker.pipelines.schedulers import sampler_label

SEED_SPACE = 2**32
IGNORED_WHEN_SET = ("eta", "image_cfg_scale", "force_task_id", "comments")
IGNORED_WHEN_TRUE = ("save_images", "do_not_save_samples", "do_not_save_grid")


@dataclass
class A1111State:
    """What the A1111 routes keep for the life of the process: options, and the tasks in flight."""

    options: opts.Options
    tracker: Tracker = field(default_factory=Tracker)


@dataclass(frozen=True)
class Plan:
    """One A1111 request in this worker's terms (names mapped, seed chosen, images prepared as PNG bytes)."""

    kind: Task
    prompt: str
    negative_prompt: str | None
    steps: int | None
    guidance: float | None
    width: int | None
    height: int | None
    choice: samplers.Choice | None
    batch_size: int
    n_iter: int
    seed: int
    loras: tuple[tuple[str, float], ...]
    output_format: OutputFormat
    preview_every: int
    clip_skip: int = 0
    image: bytes | None = field(default=None, repr=False)
    mask: bytes | None = field(default=None, repr=False)  # white = repaint
    strength: float = 0.75  # img2img/inpaint only
    mask_blur: int = 0
    only_masked: masking.OnlyMasked | None = None  # inpaint_full_res: pasted back after the job
    ignored: tuple[str, ...] = ()

    def to_params(self, seed: int) -> GenerationParams:
        """The neutral params of iteration with first seed `seed`."""
        image_task = self.kind != "txt2img"
        return GenerationParams(
            task=self.kind,
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            steps=self.steps,
            guidance_scale=self.guidance,
            seed=seed,
            width=self.width,
            height=self.height,
            num_samples=self.batch_size,
            scheduler=self.choice.scheduler if self.choice else None,
            output_format=self.output_format,
            strength=self.strength if image_task else None,
            image=self.image,
            mask=self.mask,
            mask_blur=self.mask_blur if self.kind == "inpaint" else 0,
            loras=tuple(LoraRequest(name, weight) for name, weight in self.loras),
            preview_every=self.preview_every,
            prompt_syntax=True,
            clip_skip=self.clip_skip,
        )


class A1111Service:
    """txt2img and img2img, A1111 style, over this worker's engine."""

    def __init__(self, state: WorkerState, a1111: A1111State) -> None:
        self.state = state
        self.a1111 = a1111

    def plan(self, body: Txt2ImgRequest | Img2ImgRequest) -> Plan:
        """Check and map an A1111 body (blocking: decodes and prepares the init image and mask)."""
        family = self.state.backend.family
        _refuse_unsupported(body)
        limit = self.state.settings.limits.max_samples
        if (body.batch_size or 1) > limit:
            raise InvalidRequest(f"batch_size must be between 1 and {limit} (use n_iter for more)", field="batch_size")
        options = self.a1111.options.merged(body.override_settings)
        choice = samplers.choose(family, body.sampler_name or body.sampler_index, body.scheduler)
        prompt, loras = syntax.extract_loras(body.prompt or "")
        if body.disable_extra_networks:
            loras = []
        for name, _ in loras:
            self._check_lora(name)
        seed = body.seed if body.seed is not None and body.seed >= 0 else secrets.randbelow(SEED_SPACE)
        plan = Plan(
            kind="txt2img",
            prompt=prompt,
            negative_prompt=body.negative_prompt or None,
            steps=body.steps,
            guidance=body.cfg_scale,
            width=body.width,
            height=body.height,
            choice=choice,
            batch_size=body.batch_size or 1,
            n_iter=body.n_iter or 1,
            seed=seed,
            loras=tuple(loras),
            output_format=opts.output_format(options),
            preview_every=opts.preview_every(options),
            clip_skip=opts.clip_skip(options),
            ignored=_ignored(body),
        )
        if isinstance(body, Img2ImgRequest):
            plan = self._with_images(plan, body)
        return plan

    async def run(self, plan: Plan, is_disconnected: Callable[[], Awaitable[bool]]) -> tuple[Tracked, list[Job]]:
        """Run the iterations one after another; an interrupt ends the loop, a skip ends one iteration."""
        tracker = self.a1111.tracker
        task = tracker.begin("img2img" if plan.kind != "txt2img" else "txt2img", plan.n_iter)
        engine = self.state.engine
        done: list[Job] = []
        try:
            for index in range(plan.n_iter):
                if task.interrupted:
                    break
                seed = (plan.seed + index * plan.batch_size) % SEED_SPACE
                job = await serving.submit(engine, functools.partial(plan.to_params, seed))
                task.jobs.append(job)
                try:
                    await serving.wait(engine, job, is_disconnected)
                except JobFailed as exc:
                    if exc.code != "cancelled" or not (task.interrupted or task.skipped):
                        raise
                    task.skipped = False
                    continue
                done.append(job)
        finally:
            tracker.end(task)
        return task, done

    def response(self, body: A1111Request, plan: Plan, task: Tracked, done: list[Job]) -> dict[str, Any]:
        """A1111's `TextToImageResponse` (blocking: reads each image's infotext back from its bytes)."""
        results = [job.result for job in done if job.result is not None]
        images = [image for result in results for image in result.images]
        if plan.only_masked is not None:
            level = self.state.settings.png_compression
            images = [plan.only_masked.paste(image, level) for image in images]
        seeds = [seed for result in results for seed in result.seeds]
        resolved = task.jobs[0].request if task.jobs else None
        subseed = body.subseed if body.subseed is not None else -1
        sampler = plan.choice.sampler_name if plan.choice else self._default_sampler()
        prompt, negative = body.prompt or "", body.negative_prompt or ""
        info: dict[str, Any] = {
            "prompt": prompt, "all_prompts": [prompt] * len(seeds),
            "negative_prompt": negative, "all_negative_prompts": [negative] * len(seeds),
            "seed": seeds[0] if seeds else plan.seed, "all_seeds": seeds,
            "subseed": subseed, "all_subseeds": [subseed] * len(seeds), "subseed_strength": 0,
            "width": resolved.width if resolved else plan.width,
            "height": resolved.height if resolved else plan.height,
            "sampler_name": sampler, "cfg_scale": resolved.guidance_scale if resolved else plan.guidance,
            "steps": resolved.steps if resolved else plan.steps, "batch_size": plan.batch_size,
            "restore_faces": False, "face_restoration_model": None,
            "sd_model_name": opts.checkpoint_title(self.state.backend), "sd_model_hash": None,
            "sd_vae_name": None, "sd_vae_hash": None, "seed_resize_from_w": -1, "seed_resize_from_h": -1,
            "denoising_strength": plan.strength if plan.kind != "txt2img" else None,
            "extra_generation_params": {}, "index_of_first_image": 0,
            "infotexts": [_infotext(image) for image in images], "styles": [], "job_timestamp": task.timestamp,
            "clip_skip": plan.clip_skip + 1, "is_using_inpainting_conditioning": False, "version": __version__,
            "interrupted": task.interrupted,
        }  # fmt: skip
        parameters = body.model_dump()
        if isinstance(body, Img2ImgRequest) and not body.include_init_images:
            parameters.update(init_images=None, mask=None)
        encoded = [imaging.to_base64(image) for image in images] if body.send_images is not False else []
        return {"images": encoded, "parameters": parameters,
                "info": json.dumps(info)}  # fmt: skip

    def _with_images(self, plan: Plan, body: Img2ImgRequest) -> Plan:
        if not body.init_images:
            raise Unsupported("init_images: send one base64 image", field="init_images")
        if len(body.init_images) > 1:
            raise Unsupported("init_images: one image per request is supported here", field="init_images")
        limit = self.state.settings.limits.max_upload_pixels
        raw = imaging.b64decode_field(body.init_images[0], "init_images.0")
        image = imaging.open_upload(raw, "init_images.0", limit).convert("RGB")
        mask = _decode_mask(body.mask, limit) if body.mask else None
        if mask is not None:
            imaging.check_mask_size(image, mask)
            if body.inpainting_mask_invert:
                mask = ImageOps.invert(mask)
        width, height = self._target_size(plan, image)
        if body.resize_mode == 1:
            image = masking.crop_resize(image, width, height)
            mask = masking.crop_resize(mask, width, height) if mask is not None else None
        blur = body.mask_blur if body.mask_blur is not None else body.mask_blur_x or 0
        only_masked = None
        if mask is not None and body.inpaint_full_res:
            image, mask = imaging.fit_image(image, width, height), imaging.fit_image(mask, width, height)
            only_masked, image, mask = masking.OnlyMasked.prepare(image, mask, blur, body.inpaint_full_res_padding or 0)
        if mask is not None and body.inpainting_fill == 0:
            image = masking.fill(image, mask)
        strength = body.denoising_strength if body.denoising_strength is not None else 0.75
        kind: Task = "inpaint" if mask is not None else "img2img"
        return dataclasses.replace(
            plan,
            kind=kind,
            image=_png(image),
            mask=_png(mask) if mask is not None else None,
            strength=strength,
            mask_blur=blur,
            width=width,
            height=height,
            only_masked=only_masked,
        )

    def _target_size(self, plan: Plan, image: Image.Image) -> tuple[int, int]:
        multiple = self.state.backend.family.size_multiple
        width = plan.width or max(multiple, image.width // multiple * multiple)
        height = plan.height or max(multiple, image.height // multiple * multiple)
        return width, height

    def _check_lora(self, name: str) -> None:
        library = self.state.backend.loras
        if library is None:
            raise Unsupported(f"<lora:{name}> needs a LoRA folder: start the worker with --lora-dir", field="prompt")
        library.resolve(name, "prompt")

    def _default_sampler(self) -> str:
        return sampler_label(None, self.state.backend.default_scheduler)


def _refuse_unsupported(body: A1111Request) -> None:
    """400 naming the first field that asks for something this worker cannot do."""
    refusals: list[tuple[str, bool, str]] = [
        ("enable_hr", bool(getattr(body, "enable_hr", False)), "the hires fix is not available; upscale separately"),
        ("restore_faces", bool(body.restore_faces), "face restoration is not available"),
        ("tiling", bool(body.tiling), "tiling is not available"),
        ("script_name", bool(body.script_name), "scripts are not available (GET /sdapi/v1/scripts is empty)"),
        ("script_args", bool(body.script_args), "scripts are not available"),
        ("alwayson_scripts", bool(body.alwayson_scripts),
         f"extensions are not available: {list(body.alwayson_scripts or {})}"),
        ("styles", bool(body.styles), "prompt styles are not available (GET /sdapi/v1/prompt-styles is empty)"),
        ("subseed_strength", bool(body.subseed_strength), "variation seeds are not available"),
        ("seed_resize_from_w", (body.seed_resize_from_w or 0) > 0, "seed resizing is not available"),
        ("seed_resize_from_h", (body.seed_resize_from_h or 0) > 0, "seed resizing is not available"),
        ("refiner_checkpoint", bool(body.refiner_checkpoint), "a refiner is not available: one model per worker"),
        ("infotext", bool(body.infotext), "pasting an infotext is not supported; send the fields themselves"),
        ("s_churn", body.s_churn not in (None, 0), "sampler noise settings are not available"),
        ("s_noise", body.s_noise not in (None, 1), "sampler noise settings are not available"),
        ("s_tmin", body.s_tmin not in (None, 0), "sampler noise settings are not available"),
        ("s_tmax", body.s_tmax not in (None, 0, math.inf), "sampler noise settings are not available"),
        ("s_min_uncond", body.s_min_uncond not in (None, 0), "negative guidance minimum sigma is not available"),
    ]  # fmt: skip
    if isinstance(body, Img2ImgRequest):
        masked = bool(body.mask)
        refusals += [
            ("resize_mode", body.resize_mode not in (None, 0, 1), "0 (resize) and 1 (crop and resize) only"),
            ("inpainting_fill", masked and body.inpainting_fill not in (None, 0, 1),
             "inpainting_fill 0 (fill) and 1 (original) only; latent noise/nothing are not available"),
            ("initial_noise_multiplier", body.initial_noise_multiplier not in (None, 1), "not available"),
            ("latent_mask", bool(body.latent_mask), "a separate latent mask is not available"),
            ("mask_blur_y", body.mask_blur is None and (body.mask_blur_x or 0) != (body.mask_blur_y or 0),
             "one blur radius for both axes only: set mask_blur, or equal mask_blur_x and mask_blur_y"),
        ]  # fmt: skip
    for name, refused, why in refusals:
        if refused:
            raise Unsupported(f"{name}: {why}", field=name)


def _ignored(body: A1111Request) -> tuple[str, ...]:
    """Fields accepted without effect, for `X-Ignored-Params`."""
    names = [name for name in IGNORED_WHEN_SET if getattr(body, name, None) is not None]
    names += [name for name in IGNORED_WHEN_TRUE if getattr(body, name, None)]
    return tuple(names)


def _decode_mask(data: str, limit: int) -> Image.Image:
    """A1111's mask: its alpha channel when it has a transparent part (`create_binary_mask`), else its grey."""
    image = imaging.open_upload(imaging.b64decode_field(data, "mask"), "mask", limit)
    if image.mode == "RGBA" and image.getextrema()[-1] != (255, 255):
        return image.getchannel("A").point(lambda alpha: 255 if alpha > 128 else 0)
    return image.convert("L")


def _png(image: Image.Image) -> bytes:
    """A prepared image as PNG bytes (lossless), as `GenerationParams` carries uploads."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def _infotext(data: bytes) -> str:
    """The infotext an encoded image carries (PNG `parameters` chunk, or EXIF UserComment)."""
    image = Image.open(io.BytesIO(data))
    text = image.info.get("parameters")
    if isinstance(text, str):
        return text
    comment = imaging.read_user_comment(image) or ""
    return comment.partition("\nsd-worker: ")[0]
