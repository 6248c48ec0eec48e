"""Turn a job's PIL images into its `Completed` event: encoded bytes with metadata, files on disk."""

from __future__ import annotations

import time

from PIL import Image

from worker import imaging
from worker.engine.events import Completed
from worker.engine.job import Job
from worker.outputs import OutputStore
from worker.pipelines import syntax
from worker.pipelines.schedulers import sampler_label


def encode_result(
    job: Job,
    images: list[Image.Image],
    model_name: str,
    default_sampler: str,
    store: OutputStore,
    png_level: int = imaging.PNG_COMPRESS_LEVEL,
    weighting: bool = True,
) -> Completed:
    """Encode every image of `job` (PNGs at zlib `png_level`), writing them to the store if it keeps all.

    `weighting`: whether the model applies prompt emphasis (else a `prompt_syntax` job's infotext says so)."""
    request = job.request
    extra = [("Clip skip", str(request.clip_skip + 1))] if request.clip_skip else []
    if request.prompt_syntax:
        extra += syntax.notes(request.prompt, request.negative_prompt, request.steps, weighting)
    sampler = sampler_label(request.scheduler, default_sampler)
    encoded: list[bytes] = []
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
        encoded.append(data)
    started = job.started_at or job.created_at
    return Completed(
        images=tuple(encoded),
        seeds=request.seeds,
        format=request.output_format,
        width=images[0].width,
        height=images[0].height,
        elapsed_ms=round((time.time() - started) * 1000),
        files=tuple(files),
    )
