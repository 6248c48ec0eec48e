"""Turn a job's PIL images into the `complete` payload: encoded bytes with metadata, base64, files on disk."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from PIL import Image

from worker import imaging
from worker.engine.job import Job
from worker.pipelines.families import SAMPLER_LABELS, SCHEDULER_CLASS_LABELS


def encode_result(
    job: Job, images: list[Image.Image], model_name: str, default_sampler: str, output_dir: Path | None
) -> dict[str, Any]:
    """Encode every image of `job` and build the payload of its `complete` event."""
    request = job.request
    if request.scheduler is not None:
        sampler = SAMPLER_LABELS[request.scheduler]
    else:
        sampler = SCHEDULER_CLASS_LABELS.get(default_sampler, default_sampler)
    encoded: list[str] = []
    for index, (image, seed) in enumerate(zip(images, request.seeds, strict=True)):
        text = imaging.infotext(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            steps=request.steps,
            sampler=sampler,
            guidance=request.guidance_scale,
            seed=seed,
            width=image.width,
            height=image.height,
            model=model_name,
            strength=request.strength,
        )
        data = imaging.encode_image(image, request.output_format, text, {**request.echo, "seed": seed})
        if output_dir is not None:
            (output_dir / f"{job.id}-{index}.{request.output_format}").write_bytes(data)
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
    }
