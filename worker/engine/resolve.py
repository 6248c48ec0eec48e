"""Request resolution, one function for every protocol: neutral params → a checked `GenerationRequest`.

The loaded family's defaults, the configured limits, scheduler and guidance rules, seeds, image and mask
decoding, LoRA lookup and prompt-embedding unpacking all happen here, so a protocol adapter only maps its body
onto `GenerationParams`. Blocking (image decoding is heavy): call it off the event loop.
"""

from __future__ import annotations

import secrets
from typing import Any

from PIL import Image

from worker import imaging
from worker.config import Limits
from worker.engine.protocol import GenerationParams, GenerationRequest, ImageGenerationBackend, LoraUse, Tensors
from worker.errors import InvalidRequest, NotServed
from worker.pipelines.families import Family
from worker.pipelines.schedulers import SCHEDULERS

SEED_SPACE = 2**32
MAX_GUIDANCE = 100.0
MAX_CLIP_SKIP = 11  # CLIP ViT-L has 12 layers
DEFAULT_STRENGTH = {"img2img": 0.8, "inpaint": 1.0}


def resolve(params: GenerationParams, backend: ImageGenerationBackend, limits: Limits) -> GenerationRequest:
    """The engine request for `params` on this backend's model, or InvalidRequest naming the offending field."""
    family = backend.family
    if backend.components == "text-encoder":
        raise NotServed("this worker runs --components text-encoder: it serves /encode only")
    steps, guidance = _scalars(params, family, limits)
    embeddings = _embeddings(params, backend, guidance, limits)
    image, mask = _decode_inputs(params, limits)
    if image is not None and mask is not None:
        imaging.check_mask_size(image, mask)
    width, height = _size(params, family, image, limits, backend.min_side)
    strength = _strength(params)
    if steps - family.start_index(steps, strength) < 1:
        raise InvalidRequest(
            f"strength {strength:g} with {steps} steps runs no denoising step; raise one of them", field="strength"
        )
    if image is not None:
        image = imaging.fit_image(image, width, height)
    if mask is not None:
        mask = imaging.blur_mask(imaging.fit_image(mask, width, height), params.mask_blur)
    seed = params.seed if params.seed is not None and params.seed >= 0 else secrets.randbelow(SEED_SPACE)
    echo = _echo(params, strength)
    echo.update(task=params.task, steps=steps, guidance_scale=guidance, width=width, height=height, model=family.name)
    if params.prompt_embeds is not None:
        echo["embedding_id"] = params.prompt_embeds["embedding_id"]
    return GenerationRequest(
        task=params.task,
        prompt=params.prompt,
        negative_prompt=params.negative_prompt,
        steps=steps,
        guidance_scale=guidance,
        seeds=tuple((seed + i) % SEED_SPACE for i in range(params.num_samples)),
        width=width,
        height=height,
        scheduler=params.scheduler,
        output_format=params.output_format,
        strength=strength,
        image=image,
        mask=mask,
        output_compression=params.output_compression,
        loras=_loras(params, backend),
        previews=params.previews,
        preview_every=params.preview_every,
        echo=echo,
        embeddings=embeddings,
        prompt_syntax=params.prompt_syntax,
        clip_skip=_clip_skip(params, family),
    )


def check_before_load(params: GenerationParams, family: Family, limits: Limits) -> None:
    """The checks that need only the family, so `sd-worker generate` refuses a mistake before loading the model."""
    _scalars(params, family, limits)
    if params.image is None:
        _size(params, family, None, limits, min_side=family.size_multiple)


def _scalars(params: GenerationParams, family: Family, limits: Limits) -> tuple[int, float]:
    """Check the text, steps, seed, guidance, sample count and scheduler; return the steps and guidance to use."""
    check_text(params.prompt, params.negative_prompt, limits)
    steps = params.steps if params.steps is not None else family.steps
    if not 1 <= steps <= limits.max_steps:
        raise InvalidRequest(f"steps must be between 1 and {limits.max_steps}", field="steps")
    if params.seed is not None and not -1 <= params.seed < SEED_SPACE:
        raise InvalidRequest(f"seed must be -1 (random) or between 0 and {SEED_SPACE - 1}", field="seed")
    guidance = resolve_guidance(family, params.guidance_scale)
    if not 1 <= params.num_samples <= limits.max_samples:
        raise InvalidRequest(f"num_samples must be between 1 and {limits.max_samples}", field="num_samples")
    if params.scheduler is not None and params.scheduler not in family.schedulers:
        known = "" if params.scheduler in SCHEDULERS else "unknown "
        raise InvalidRequest(
            f"{known}scheduler {params.scheduler!r} is not valid for the {family.name!r} family; "
            f"valid: {', '.join(family.schedulers)}",
            field="scheduler",
        )
    return steps, guidance


def encode_prompt(
    backend: ImageGenerationBackend,
    limits: Limits,
    prompt: str,
    negative_prompt: str | None,
    guidance_scale: float | None,
    dtype: str | None,
) -> dict[str, Any]:
    """`/encode`: the embedding envelope of a prompt (blocking: runs the text encoders)."""
    if backend.components == "denoiser":
        raise NotServed("this worker runs --components denoiser: it has no text encoder to serve /encode")
    check_text(prompt, negative_prompt, limits)
    guidance = resolve_guidance(backend.family, guidance_scale)
    return backend.encode_prompt(prompt, negative_prompt, guidance, dtype)


def resolve_guidance(family: Family, requested: float | None) -> float:
    """The family's guidance_scale unless one is given; distilled families take only their own."""
    guidance = requested if requested is not None else family.guidance
    if not 0 <= guidance <= MAX_GUIDANCE:  # also refuses NaN
        raise InvalidRequest(f"guidance_scale must be between 0 and {MAX_GUIDANCE}", field="guidance_scale")
    if family.fixed_guidance is not None and guidance != family.fixed_guidance:
        raise InvalidRequest(
            f"the {family.name!r} family is distilled for guidance_scale {family.fixed_guidance:g} only",
            field="guidance_scale",
        )
    return guidance


def check_text(prompt: str | None, negative_prompt: str | None, limits: Limits) -> None:
    """Refuse prompts over the configured length."""
    limit = limits.max_prompt_chars
    for field, text in (("prompt", prompt), ("negative_prompt", negative_prompt)):
        if text is not None and len(text) > limit:
            raise InvalidRequest(f"{field} is {len(text)} characters; the limit is {limit}", field=field)


def _clip_skip(params: GenerationParams, family: Family) -> int:
    if params.clip_skip and not family.supports_clip_skip:
        raise InvalidRequest(
            f"skipping CLIP layers is not available for the {family.name!r} family (SDXL and SD3 only)",
            field="clip_skip",
        )
    if not 0 <= params.clip_skip <= MAX_CLIP_SKIP:
        raise InvalidRequest(f"clip_skip must be between 0 and {MAX_CLIP_SKIP}", field="clip_skip")
    return params.clip_skip


def _strength(params: GenerationParams) -> float | None:
    if params.task == "txt2img":
        return None
    strength = params.strength if params.strength is not None else DEFAULT_STRENGTH[params.task]
    if not 0 < strength <= 1:
        raise InvalidRequest("strength must be above 0 and at most 1", field="strength")
    return strength


def _echo(params: GenerationParams, strength: float | None) -> dict[str, Any]:
    """The request as sent (without images or embeddings), for the output metadata."""
    echo: dict[str, Any] = {
        "prompt": params.prompt, "negative_prompt": params.negative_prompt, "steps": params.steps,
        "guidance_scale": params.guidance_scale, "seed": params.seed, "height": params.height, "width": params.width,
        "num_samples": params.num_samples, "scheduler": params.scheduler, "output_format": params.output_format,
        "loras": [{"name": lora.name, "weight": lora.weight} for lora in params.loras],
        "preview_every": params.preview_every,
    }  # fmt: skip
    if strength is not None:
        echo["strength"] = strength
    if params.task == "inpaint":
        echo["mask_blur"] = params.mask_blur
    if params.prompt_syntax:
        echo["prompt_syntax"] = True
    if params.clip_skip:
        echo["clip_skip"] = params.clip_skip
    return echo


def _embeddings(
    params: GenerationParams, backend: ImageGenerationBackend, guidance: float, limits: Limits
) -> Tensors | None:
    """The checked tensors of `prompt_embeds`; or None when the text encoders will run on the prompt."""
    if params.prompt_embeds is None:
        if params.prompt is None:
            raise InvalidRequest("prompt is required (or prompt_embeds from /encode)", field="prompt")
        if backend.components == "denoiser":
            raise InvalidRequest(
                "this worker runs --components denoiser and has no text encoder: send prompt_embeds made "
                "by a text-encoder worker's /encode instead of prompt",
                field="prompt",
            )
        return None
    for field in ("prompt", "negative_prompt"):
        if getattr(params, field) is not None:
            raise InvalidRequest(
                f"give prompt_embeds or {field}, not both (encode the {field} with /encode)", field=field
            )
    return backend.embeddings(params.prompt_embeds, guidance, limits.max_embedding_bytes)


def _loras(params: GenerationParams, backend: ImageGenerationBackend) -> tuple[LoraUse, ...]:
    if not params.loras:
        return ()
    library = backend.loras
    if library is None:
        raise InvalidRequest("this worker has no LoRA folder (start it with --lora-dir)", field="loras")
    names = [lora.name for lora in params.loras]
    if len(set(names)) != len(names):
        raise InvalidRequest("each LoRA may be named once per request", field="loras")
    return tuple(library.resolve(lora.name, f"loras.{i}.name").use(lora.weight) for i, lora in enumerate(params.loras))


def _decode_inputs(params: GenerationParams, limits: Limits) -> tuple[Image.Image | None, Image.Image | None]:
    """The init image as RGB and the mask as white-repaints grey, from their uploaded bytes."""
    image = mask = None
    if params.image is not None:
        image = imaging.open_upload(params.image, "image", limits.max_upload_pixels).convert("RGB")
    if params.mask is not None:
        opened = imaging.open_upload(params.mask, "mask", limits.max_upload_pixels)
        mask = imaging.alpha_mask(opened, "mask") if params.mask_alpha else opened.convert("L")
    return image, mask


def _size(
    params: GenerationParams, family: Family, image: Image.Image | None, limits: Limits, min_side: int
) -> tuple[int, int]:
    """Requested size; else the init image's (rounded down to the family's multiple); else the default."""
    multiple = family.size_multiple
    if image is not None:
        default_w = max(multiple, image.width // multiple * multiple)
        default_h = max(multiple, image.height // multiple * multiple)
    else:
        default_w, default_h = family.width, family.height
    width = params.width if params.width is not None else default_w
    height = params.height if params.height is not None else default_h
    for field, value in (("width", width), ("height", height)):
        if value % multiple or value < multiple:
            raise InvalidRequest(
                f"{field} must be a multiple of {multiple} for the {family.name!r} family (got {value})", field=field
            )
        if value < min_side:
            raise InvalidRequest(f"{field} must be at least {min_side} for this model (got {value})", field=field)
    if max(width, height) > family.max_size:
        raise InvalidRequest(f"{width}x{height} is too big: {family.size_note()}", field="width")
    if width * height > limits.max_pixels:
        raise InvalidRequest(
            f"{width}x{height} is {width * height} pixels; the limit is {limits.max_pixels}", field="width"
        )
    return width, height
