"""rbee Gen C job bodies, from rbee's `operations-contract` (`Operation`, tagged by `"operation"`).

Field names, defaults and optionality follow `ImageGenerationRequest`, `ImageTransformRequest` and
`ImageInpaintRequest`; like rbee's serde structs, fields this worker does not know are ignored. `hive_id`,
`model` and `worker_id` route the job inside rbee; the worker that receives it serves its one model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from worker import imaging
from worker.engine.protocol import GenerationParams, LoraRequest
from worker.errors import InvalidRequest

OPERATIONS = ("image_generation", "image_transform", "image_inpaint")
PREVIEW_EVERY = 5  # rbee previews every 5th step (and the last one, which the serializer adds)


class LoraRef(BaseModel):
    """rbee's `LoRAConfig`: a .safetensors path (here: inside --lora-dir) and its strength."""

    model_config = ConfigDict(extra="ignore")

    path: str = Field(min_length=1, max_length=4096)
    strength: float = Field(1.0, ge=-4, le=4, allow_inf_nan=False)


class RbeeOperation(BaseModel):
    """Fields every image operation has."""

    model_config = ConfigDict(extra="ignore")

    hive_id: str
    model: str
    prompt: str = Field(min_length=1)
    negative_prompt: str | None = None
    steps: int = Field(20, ge=1)
    guidance_scale: float = Field(7.5, ge=0, le=100, allow_inf_nan=False)
    seed: int | None = Field(None, ge=0, lt=2**32, description="absent: random")
    loras: list[LoraRef] = Field(default_factory=list, max_length=8)
    worker_id: str | None = None

    def _params(self, lora_names: Sequence[str], **task: Any) -> GenerationParams:
        loras = tuple(LoraRequest(name, ref.strength) for name, ref in zip(lora_names, self.loras, strict=True))
        return GenerationParams(
            prompt=self.prompt, negative_prompt=self.negative_prompt, steps=self.steps,
            guidance_scale=self.guidance_scale, seed=self.seed, output_format="png", loras=loras,
            preview_every=PREVIEW_EVERY, **task,
        )  # fmt: skip


class ImageGeneration(RbeeOperation):
    """Text-to-image."""

    operation: Literal["image_generation"]
    width: int = Field(512, ge=8)
    height: int = Field(512, ge=8)

    def to_params(self, lora_names: Sequence[str]) -> GenerationParams:
        """Neutral params (`lora_names`: the LoRA paths as names in --lora-dir)."""
        return self._params(lora_names, task="txt2img", width=self.width, height=self.height)


class ImageTransform(RbeeOperation):
    """Image-to-image: `input_image` (base64) re-noised by `strength`; the size is the input's."""

    operation: Literal["image_transform"]
    input_image: str = Field(min_length=1)
    strength: float = Field(0.8, gt=0, le=1, allow_inf_nan=False)

    def to_params(self, lora_names: Sequence[str]) -> GenerationParams:
        """Neutral params (the base64 image decoded: blocking)."""
        image = imaging.b64decode_field(self.input_image, "input_image")
        return self._params(lora_names, task="img2img", image=image, strength=self.strength)


class ImageInpaint(RbeeOperation):
    """Inpainting: `mask_image` white = repaint; the size is the input's."""

    operation: Literal["image_inpaint"]
    init_image: str = Field(min_length=1)
    mask_image: str = Field(min_length=1)

    def to_params(self, lora_names: Sequence[str]) -> GenerationParams:
        """Neutral params (the base64 images decoded: blocking)."""
        image = imaging.b64decode_field(self.init_image, "init_image")
        mask = imaging.b64decode_field(self.mask_image, "mask_image")
        return self._params(lora_names, task="inpaint", image=image, mask=mask)


Operation = Annotated[ImageGeneration | ImageTransform | ImageInpaint, Field(discriminator="operation")]
_OPERATION: TypeAdapter[ImageGeneration | ImageTransform | ImageInpaint] = TypeAdapter(Operation)


def parse_operation(body: dict[str, Any]) -> ImageGeneration | ImageTransform | ImageInpaint:
    """The operation in `body`, or InvalidRequest naming the field as rbee spells it (no tag in the path)."""
    try:
        return _OPERATION.validate_python(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] in ("union_tag_not_found", "union_tag_invalid"):
            given = body.get("operation")
            raise InvalidRequest(
                f"operation must be one of {', '.join(OPERATIONS)} (got {given!r}); this worker serves images only",
                field="operation",
            ) from None
        field = ".".join(str(part) for part in first["loc"][1:])  # [0] is the operation tag
        raise InvalidRequest(f"{field}: {first['msg']}", field=field) from None
