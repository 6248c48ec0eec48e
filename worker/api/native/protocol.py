"""Request bodies of the native API and their `to_params()`. Static bounds live here; configurable limits and
family rules are checked by the engine's resolver."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from worker import imaging
from worker.engine.protocol import GenerationParams, LoraRequest, Task


class LoraSpec(BaseModel):
    """One LoRA for one job: a file name (without .safetensors) from --lora-dir and its strength."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    weight: float = Field(1.0, ge=-4, le=4, allow_inf_nan=False)


class TensorSpec(BaseModel):
    """One tensor of an embedding envelope."""

    model_config = ConfigDict(extra="forbid")

    shape: list[int] = Field(min_length=1, max_length=4)
    dtype: Literal["f32", "f16", "bf16"]


class EmbeddingEnvelope(BaseModel):
    """Prompt embeddings from a text-encoder worker's `/encode` (DESIGN.md, "Embedding envelope")."""

    model_config = ConfigDict(extra="forbid")

    embedding_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    model_type: str = Field(min_length=1, max_length=64)
    tensors: dict[str, TensorSpec] = Field(min_length=1, max_length=8)
    data: str
    uncompressed_size: int = Field(ge=0)
    checksum: int = Field(ge=0, lt=2**32, description="CRC32 of the uncompressed bytes")


class EncodeBody(BaseModel):
    """`POST /encode`: a prompt (and negative prompt) to run through the text encoders."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1)
    negative_prompt: str | None = None
    guidance_scale: float | None = Field(
        None, ge=0, le=100, allow_inf_nan=False, description="the negatives are included when this uses them"
    )
    dtype: Literal["f32", "f16", "bf16"] | None = Field(None, description="default: the text encoder's (lossless)")


class GenerationBody(BaseModel):
    """`POST /execute`: text-to-image. Omitted fields take the loaded family's defaults."""

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = Field(None, min_length=1, description="required unless prompt_embeds is given")
    negative_prompt: str | None = None
    steps: int | None = Field(None, ge=1)
    guidance_scale: float | None = Field(None, ge=0, le=100, allow_inf_nan=False)
    seed: int | None = Field(None, ge=-1, lt=2**32, description="absent or -1: random")
    height: int | None = Field(None, ge=8)
    width: int | None = Field(None, ge=8)
    num_samples: int = Field(1, ge=1)
    scheduler: str | None = None
    output_format: Literal["png", "jpeg", "webp"] = "png"
    loras: list[LoraSpec] = Field(default_factory=list, max_length=8)
    preview_every: int = Field(0, ge=0, description="send a `preview` event every N steps (0 = off)")
    prompt_embeds: EmbeddingEnvelope | None = Field(None, description="from /encode, instead of prompt")
    webhook_url: str | None = Field(
        None, max_length=2048, description="POSTed the job's final state, signed (hosts per --webhook-allow)"
    )
    prompt_syntax: bool = Field(
        False, description="read A1111 prompt syntax: (emphasis:1.2), prompts past 77 tokens, [from:to:when]"
    )

    def to_params(self, task: Task) -> GenerationParams:
        """The neutral params of this body (base64 images decoded to their file bytes: blocking)."""
        image = mask = None
        strength, mask_blur = None, 0
        if isinstance(self, Img2ImgBody | InpaintBody):
            image, strength = imaging.b64decode_field(self.image, "image"), self.strength
        if isinstance(self, InpaintBody):
            mask, mask_blur = imaging.b64decode_field(self.mask, "mask"), self.mask_blur
        return GenerationParams(
            task=task,
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            steps=self.steps,
            guidance_scale=self.guidance_scale,
            seed=self.seed,
            width=self.width,
            height=self.height,
            num_samples=self.num_samples,
            scheduler=self.scheduler,
            output_format=self.output_format,
            strength=strength,
            image=image,
            mask=mask,
            mask_blur=mask_blur,
            loras=tuple(LoraRequest(lora.name, lora.weight) for lora in self.loras),
            preview_every=self.preview_every,
            prompt_embeds=self.prompt_embeds.model_dump() if self.prompt_embeds is not None else None,
            prompt_syntax=self.prompt_syntax,
        )


class Img2ImgBody(GenerationBody):
    """`POST /img2img`: an init image (base64) and how much of it to re-noise."""

    image: str = Field(min_length=1)
    strength: float = Field(0.8, gt=0, le=1, allow_inf_nan=False)


class InpaintBody(GenerationBody):
    """`POST /inpaint`: image + mask (white = repaint); unmasked pixels come back unchanged."""

    image: str = Field(min_length=1)
    mask: str = Field(min_length=1)
    strength: float = Field(1.0, gt=0, le=1, allow_inf_nan=False)
    mask_blur: int = Field(0, ge=0, le=256)


TASK_BODIES: dict[str, type[GenerationBody]] = {
    "txt2img": GenerationBody,
    "img2img": Img2ImgBody,
    "inpaint": InpaintBody,
}
