"""What a job asks for, fully resolved (family defaults applied, inputs decoded): the engine's input."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from PIL import Image

Task = Literal["txt2img", "img2img", "inpaint"]
OutputFormat = Literal["png", "jpeg", "webp"]


@dataclass(frozen=True)
class GenerationRequest:
    """One generation job's parameters; `seeds[i]` drives image i."""

    task: Task
    prompt: str | None  # None when the job brings `embeddings` instead
    negative_prompt: str | None
    steps: int
    guidance_scale: float
    seeds: tuple[int, ...]
    width: int
    height: int
    scheduler: str | None
    output_format: OutputFormat
    strength: float | None = None
    image: Image.Image | None = field(default=None, repr=False)
    mask: Image.Image | None = field(default=None, repr=False)  # already blurred by `mask_blur`
    output_compression: int | None = None  # 0-100; None = the format's default
    loras: tuple[tuple[str, str, float, int], ...] = ()  # (name, path, weight, file version), see pipelines.lora
    previews: int = 0  # intermediate images to send, evenly spread over the denoising steps (OpenAI partials)
    preview_every: int = 0  # also one every N steps (native `preview_every`)
    echo: dict[str, Any] = field(default_factory=dict, repr=False)  # the request as sent, for metadata
    embeddings: Mapping[str, Any] | None = field(default=None, repr=False)  # prompt_embeds tensors, by name
    prompt_syntax: bool = False  # read A1111 emphasis, long prompts and [from:to:when] (see pipelines.syntax)
    clip_skip: int = 0  # CLIP layers skipped from the end (diffusers' clip_skip; A1111's CLIP skip − 1)

    @property
    def num_samples(self) -> int:
        """How many images the job makes."""
        return len(self.seeds)
