"""OpenAI Images request bodies, plus our `nvext` extensions (also accepted at the top level), and their
`to_params()`."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from worker.api.openai.models import default_response_format
from worker.api.openai.params import ignored_params
from worker.engine.protocol import GenerationParams, Task
from worker.errors import InvalidRequest

SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
QUALITY_STEPS = {"low": 0.5, "high": 1.5, "hd": 1.5}  # × the family's default steps
Quality = Literal["auto", "low", "medium", "high", "standard", "hd"]


class NvExt(BaseModel):
    """Diffusion knobs OpenAI's API lacks (the name follows NVIDIA's NIM/Dynamo extension)."""

    model_config = ConfigDict(extra="forbid")

    negative_prompt: str | None = None
    num_inference_steps: int | None = Field(None, ge=1)
    guidance_scale: float | None = Field(None, ge=0, le=100, allow_inf_nan=False)
    seed: int | None = Field(None, ge=-1, lt=2**32)
    webhook_url: str | None = Field(None, max_length=2048, description="POSTed the job's final state (signed)")
    prompt_syntax: bool | None = Field(None, description="read A1111 prompt syntax (emphasis, long prompts)")


class ImageRequest(NvExt):
    """Fields shared by generations and edits."""

    prompt: str = Field(min_length=1)
    model: str | None = None
    n: int = Field(1, ge=1)
    size: str = "auto"
    response_format: Literal["url", "b64_json"] | None = None  # default: url for dall-e-*, else b64_json
    output_format: Literal["png", "jpeg", "webp"] = "png"
    output_compression: int | None = Field(None, ge=0, le=100)
    quality: Quality = "auto"
    background: Literal["auto", "opaque", "transparent"] = "auto"  # transparent: accepted, ignored
    style: str | None = Field(None, max_length=64)  # DALL·E 3's vivid/natural: accepted, ignored
    moderation: str | None = Field(None, max_length=64)  # accepted, ignored (no moderation here)
    input_fidelity: str | None = Field(None, max_length=64)  # edits: accepted, ignored
    user: str | None = None
    stream: bool = False
    partial_images: int = Field(0, ge=0, le=3)
    nvext: NvExt | None = None

    def extension(self, name: str) -> Any:
        """An extension value: `nvext.name` wins over the top-level `name`."""
        if self.nvext is not None and getattr(self.nvext, name) is not None:
            return getattr(self.nvext, name)
        return getattr(self, name)

    @property
    def answer_format(self) -> str:
        """`response_format`, or OpenAI's default for the model asked for."""
        return self.response_format or default_response_format(self.model)

    @property
    def ignored(self) -> list[str]:
        """The knobs this request set that cannot be honoured (for `X-Ignored-Params`)."""
        return ignored_params(self.model_dump(include={"style", "moderation", "input_fidelity", "background"}))

    def dimensions(self) -> tuple[int, int] | None:
        """(width, height) from "WxH", or None for "auto"."""
        if self.size == "auto":
            return None
        match = SIZE.match(self.size)
        if match is None:
            raise InvalidRequest(f"size must be 'auto' or 'WIDTHxHEIGHT', got {self.size!r}", field="size")
        return int(match.group(1)), int(match.group(2))

    def to_params(
        self, task: Task, default_steps: int, image: bytes | None = None, mask: bytes | None = None
    ) -> GenerationParams:
        """The neutral params; `quality` scales `default_steps` (the family's) unless steps are given.
        A mask is OpenAI's: fully transparent pixels are edited."""
        steps = self.extension("num_inference_steps")
        if steps is None and self.quality in QUALITY_STEPS:
            steps = max(1, round(default_steps * QUALITY_STEPS[self.quality]))
        size = self.dimensions()
        return GenerationParams(
            task=task,
            prompt=self.prompt,
            negative_prompt=self.extension("negative_prompt"),
            steps=steps,
            guidance_scale=self.extension("guidance_scale"),
            seed=self.extension("seed"),
            width=size[0] if size else None,
            height=size[1] if size else None,
            num_samples=self.n,
            output_format=self.output_format,
            output_compression=self.output_compression,
            strength=self.strength if isinstance(self, ImageEditRequest) else None,
            image=image,
            mask=mask,
            mask_alpha=True,
            previews=self.partial_images * self.stream,
            prompt_syntax=bool(self.extension("prompt_syntax")),
        )


class ImageGenerationRequest(ImageRequest):
    """`POST /v1/images/generations` (JSON)."""


class ImageEditRequest(ImageRequest):
    """`POST /v1/images/edits` (multipart form fields besides the files)."""

    strength: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
