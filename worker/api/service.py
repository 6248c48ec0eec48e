"""The generation service: turns a validated body into a resolved engine request, submits it, answers."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from PIL import Image
from starlette.concurrency import run_in_threadpool

from worker import imaging
from worker.api.schemas import EncodeBody, GenerationBody, Img2ImgBody, InpaintBody
from worker.config import Limits
from worker.engine.engine import Engine
from worker.engine.job import Job, JobStatus
from worker.engine.request import GenerationRequest, Task
from worker.errors import InvalidRequest, JobFailed, NotServed
from worker.pipelines import envelope
from worker.pipelines.families import SAMPLER_LABELS, Family

SEED_SPACE = 2**32
Inputs = tuple[Image.Image | None, Image.Image | None]


class GenerationService:
    """Applies the family's defaults and the configured limits, then queues the job on the engine."""

    def __init__(self, engine: Engine, family: Family, limits: Limits) -> None:
        self.engine = engine
        self.family = family
        self.limits = limits

    async def submit(self, task: Task, body: GenerationBody, job_id: str | None = None) -> Job:
        """Validate and decode off the event loop (base64 + image decoding is heavy), then queue."""
        request = await run_in_threadpool(self.resolve, task, body)
        return self.engine.submit(request, job_id)

    async def wait(self, job: Job, is_disconnected: Callable[[], Awaitable[bool]]) -> dict[str, Any]:
        """Wait for the job's result; a client that leaves meanwhile cancels it; a failed job raises JobFailed."""
        async for event in job.events.follow(keepalive=1.0):
            if event is None and await is_disconnected():
                self.engine.cancel(job, "client disconnected")
                break
        if job.status is JobStatus.COMPLETED and job.result is not None:
            return job.result
        error = job.error or {"code": "cancelled", "message": "the client went away"}
        raise JobFailed(job.error_status, error["code"], error["message"])

    def encode(self, body: EncodeBody) -> dict[str, Any]:
        """`/encode`: the embedding envelope of a prompt (blocking: runs the text encoders)."""
        backend = self.engine.backend
        if backend.components == "denoiser":
            raise NotServed("this worker runs --components denoiser: it has no text encoder to serve /encode")
        self._check_text(body.prompt, body.negative_prompt)
        guidance = self._guidance(body.guidance_scale)
        tensors = backend.encode_prompt(body.prompt, body.negative_prompt, guidance)
        dtype = body.dtype or envelope.envelope_dtype(next(iter(tensors.values())).dtype)
        return envelope.pack(tensors, self.family.name, dtype)

    def resolve(self, task: Task, body: GenerationBody, inputs: Inputs | None = None) -> GenerationRequest:
        """The engine request for `body`, or InvalidRequest naming the offending field.

        `inputs` are already-decoded (image, mask) for callers that received files rather than base64.
        """
        family, limits = self.family, self.limits
        if self.engine.backend.components == "text-encoder":
            raise NotServed("this worker runs --components text-encoder: it serves /encode only")
        self._check_text(body.prompt, body.negative_prompt)
        steps = body.steps if body.steps is not None else family.steps
        if steps > limits.max_steps:
            raise InvalidRequest(f"steps must be between 1 and {limits.max_steps}", field="steps")
        guidance = self._guidance(body.guidance_scale)
        embeddings = self._embeddings(body, guidance)
        if body.num_samples > limits.max_samples:
            raise InvalidRequest(f"num_samples must be between 1 and {limits.max_samples}", field="num_samples")
        if body.scheduler is not None and body.scheduler not in family.schedulers:
            known = "" if body.scheduler in SAMPLER_LABELS else "unknown "
            raise InvalidRequest(
                f"{known}scheduler {body.scheduler!r} is not valid for the {family.name!r} family; "
                f"valid: {', '.join(family.schedulers)}",
                field="scheduler",
            )
        image, mask = inputs if inputs is not None else self._decode_inputs(body)
        if image is not None and mask is not None:
            imaging.check_mask_size(image, mask)
        width, height = self._size(body, image)
        strength = body.strength if isinstance(body, Img2ImgBody | InpaintBody) else None
        if steps - family.start_index(steps, strength) < 1:
            raise InvalidRequest(
                f"strength {strength:g} with {steps} steps runs no denoising step; raise one of them",
                field="strength",
            )
        if image is not None:
            image = imaging.fit_image(image, width, height)
        if mask is not None:
            mask = imaging.blur_mask(imaging.fit_image(mask, width, height), getattr(body, "mask_blur", 0))
        loras = self._loras(body)
        seed = body.seed if body.seed is not None and body.seed >= 0 else secrets.randbelow(SEED_SPACE)
        seeds = tuple((seed + i) % SEED_SPACE for i in range(body.num_samples))
        echo: dict[str, Any] = body.model_dump(exclude={"image", "mask", "prompt_embeds", "webhook_url"})
        echo.update(task=task, steps=steps, guidance_scale=guidance, width=width, height=height, model=family.name)
        if body.prompt_embeds is not None:
            echo["embedding_id"] = body.prompt_embeds.embedding_id
        return GenerationRequest(
            task=task,
            prompt=body.prompt,
            negative_prompt=body.negative_prompt,
            steps=steps,
            guidance_scale=guidance,
            seeds=seeds,
            width=width,
            height=height,
            scheduler=body.scheduler,
            output_format=body.output_format,
            strength=strength,
            image=image,
            mask=mask,
            loras=loras,
            preview_every=body.preview_every,
            echo=echo,
            embeddings=embeddings,
        )

    def _guidance(self, requested: float | None) -> float:
        family = self.family
        guidance = requested if requested is not None else family.guidance
        if family.fixed_guidance is not None and guidance != family.fixed_guidance:
            raise InvalidRequest(
                f"the {family.name!r} family is distilled for guidance_scale {family.fixed_guidance:g} only",
                field="guidance_scale",
            )
        return guidance

    def _embeddings(self, body: GenerationBody, guidance: float) -> dict[str, Any] | None:
        """The checked tensors of `prompt_embeds`; or None when the text encoders will run on the prompt."""
        backend = self.engine.backend
        if body.prompt_embeds is None:
            if body.prompt is None:
                raise InvalidRequest("prompt is required (or prompt_embeds from /encode)", field="prompt")
            if backend.components == "denoiser":
                raise InvalidRequest(
                    "this worker runs --components denoiser and has no text encoder: send prompt_embeds made "
                    "by a text-encoder worker's /encode instead of prompt",
                    field="prompt",
                )
            return None
        for field in ("prompt", "negative_prompt"):
            if getattr(body, field) is not None:
                raise InvalidRequest(
                    f"give prompt_embeds or {field}, not both (encode the {field} with /encode)", field=field
                )
        spec = backend.embedding_spec
        tensors = envelope.unpack(
            body.prompt_embeds.model_dump(), self.family.name, spec, self.limits.max_embedding_bytes
        )
        spec.check(tensors, guidance, "prompt_embeds")
        return tensors

    def _loras(self, body: GenerationBody) -> tuple[tuple[str, str, float, int], ...]:
        if not body.loras:
            return ()
        library = self.engine.backend.loras
        if library is None:
            raise InvalidRequest("this worker has no LoRA folder (start it with --lora-dir)", field="loras")
        names = [spec.name for spec in body.loras]
        if len(set(names)) != len(names):
            raise InvalidRequest("each LoRA may be named once per request", field="loras")
        return tuple(
            library.resolve(spec.name, f"loras.{i}.name").use(spec.weight) for i, spec in enumerate(body.loras)
        )

    def _check_text(self, prompt: str | None, negative_prompt: str | None) -> None:
        limit = self.limits.max_prompt_chars
        for field, text in (("prompt", prompt), ("negative_prompt", negative_prompt)):
            if text is not None and len(text) > limit:
                raise InvalidRequest(f"{field} is {len(text)} characters; the limit is {limit}", field=field)

    def _decode_inputs(self, body: GenerationBody) -> Inputs:
        if not isinstance(body, Img2ImgBody | InpaintBody):
            return None, None
        image = imaging.decode_image(body.image, "image", self.limits.max_upload_pixels)
        if not isinstance(body, InpaintBody):
            return image, None
        return image, imaging.decode_mask(body.mask, "mask", self.limits.max_upload_pixels)

    def _size(self, body: GenerationBody, image: Image.Image | None) -> tuple[int, int]:
        """Requested size; else the init image's (rounded down to the family's multiple); else the default."""
        multiple = self.family.size_multiple
        if image is not None:
            default_w = max(multiple, image.width // multiple * multiple)
            default_h = max(multiple, image.height // multiple * multiple)
        else:
            default_w, default_h = self.family.width, self.family.height
        width = body.width if body.width is not None else default_w
        height = body.height if body.height is not None else default_h
        for field, value in (("width", width), ("height", height)):
            if value % multiple:
                raise InvalidRequest(
                    f"{field} must be a multiple of {multiple} for the {self.family.name!r} family (got {value})",
                    field=field,
                )
        if width * height > self.limits.max_pixels:
            raise InvalidRequest(
                f"{width}x{height} is {width * height} pixels; the limit is {self.limits.max_pixels}",
                field="width",
            )
        return width, height
