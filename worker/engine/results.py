"""Turn a job's PIL images into the `complete` payload: encoded bytes with metadata, base64, files on disk."""

from __future__ import annotations

import time
from typing import Any

from PIL import Image

from worker import imaging
from worker.engine.job import Job
from worker.outputs import OutputStore
from worker.pipelines import syntax
from worker.pipelines.families import SAMPLER_LABELS, SCHEDULER_CLASS_LABELS


def encode_result(
    job: Job,
    images: list[Image.Image],
    model_name: str,
    default_sampler: str,
    store: OutputStore,
    png_level: int = imaging.PNG_COMPRESS_LEVEL,
    weighting: bool = True,
) -> dict[str, Any]:
    """Encode every image of `job` and build the payload of its `complete` event (PNGs at zlib `png_level`).

    `weighting`: whether the model applies prompt emphasis (else a `prompt_syntax` job's infotext says so)."""
    request = job.request
    extra = [("Clip skip", str(request.clip_skip + 1))] if request.clip_skip else []
    if request.prompt_syntax:
        extra += syntax.notes(request.prompt, request.negative_prompt, request.steps, weighting)
    if request.scheduler is not None:
        sampler = SAMPLER_LABELS[request.scheduler]
    else:
        sampler = SCHEDULER_CLASS_LABELS.get(default_sampler, default_sampler)
    encoded: list[str] = []
    files: list[str] = []
    for index, (image, seed) in enumerate(zip(images, request.seeds, strict=True)):
        text = imaging.infotext(
            prompt=request.prompt or "",  # empty when the job brought prompt_embeds
            negative_prompt=request.negative_prompt,
            steps=request.steps,
            sampler=sampler,
            guidance=request.guidance_scale,
            seed=seed,
            width=image.width,
            height=image.height,
            model=model_name,
            strength=request.strength,
            extra=extra,
        )
        echo = {**request.echo, "seed": seed}
        data = imaging.encode_image(image, request.output_format, text, echo, request.output_compression, png_level)
        if store.persist_all:
            files.append(store.save(job.id, index, request.output_format, data))
        encoded.append(imaging.to_base64(data))
    started = job.started_at or job.created_at
    return {
        "image": encoded[0],
        "images": encoded,
        "seed": request.seeds[0],
        "seeds": list(request.seeds),
        "format": request.output_format,
        "width": images[0].width,
        "height": images[0].height,
        "elapsed_ms": round((time.time() - started) * 1000),
        **({"files": files} if files else {}),
    }
