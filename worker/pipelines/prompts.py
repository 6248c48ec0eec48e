"""Prompt embeddings per pipeline: what its text encoders produce, what its denoiser accepts, how to check it.

Split serving runs the pipeline's own `encode_prompt` on one worker and passes the tensors as the pipeline's
`prompt_embeds`-style keyword arguments on another, so the denoiser sees exactly what one worker doing both
would have computed (the pipelines repeat the embeddings per image themselves).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from worker.errors import InvalidRequest
from worker.pipelines.architectures import Layout, architecture_of

Tensors = dict[str, torch.Tensor]


def is_text_component(name: str) -> bool:
    """Tokenizers and text encoders: what a `text-encoder` worker loads and a `denoiser` worker leaves out."""
    return name.startswith(("text_encoder", "tokenizer"))


def layout_of(pipe: Any) -> Layout:
    """The embedding layout of a loaded base pipeline."""
    return architecture_of(pipe).layout


def encode(pipe: Any, prompt: str, negative_prompt: str | None, guidance: float) -> Tensors:
    """Run the pipeline's own prompt encoding for one prompt; negatives only when `guidance` uses them."""
    layout = layout_of(pipe)
    cfg = layout.uses_negatives(guidance)
    values = layout.encode(pipe, prompt, negative_prompt, cfg)
    wanted = layout.outputs if cfg else layout.positives
    return {name: value for name, value in zip(layout.outputs, values, strict=True) if name in wanted}


@dataclass(frozen=True)
class EmbeddingSpec:
    """What one loaded denoiser accepts: per name, the expected shape (None = any length)."""

    layout: Layout
    shapes: Mapping[str, tuple[int | None, ...]]

    def check_shape(self, name: str, shape: tuple[int, ...], where: str) -> None:
        """Raise InvalidRequest unless `name` is a known tensor of a shape this denoiser takes."""
        expected = self.shapes.get(name)
        if expected is None:
            raise InvalidRequest(
                f"unknown tensor {name!r}; this model takes {', '.join(self.layout.outputs)}", field=where
            )
        fits = len(shape) == len(expected) and all(e is None or e == s for e, s in zip(expected, shape, strict=True))
        if not fits or min(shape, default=1) < 1:
            wanted = "[" + ", ".join("N" if e is None else str(e) for e in expected) + "]"
            raise InvalidRequest(f"{name} has shape {list(shape)}; this model takes {wanted}", field=where)

    def check(self, tensors: Mapping[str, torch.Tensor], guidance: float, where: str) -> None:
        """Raise InvalidRequest if a tensor is missing for this guidance_scale or the pairs do not line up."""
        needed = self.layout.outputs if self.layout.uses_negatives(guidance) else self.layout.positives
        missing = [name for name in needed if name not in tensors]
        if missing:
            why = f" (guidance_scale {guidance:g} runs classifier-free guidance)" if self.layout.negatives else ""
            raise InvalidRequest(f"missing {', '.join(missing)}{why}; encode with the same guidance_scale", field=where)
        if self.layout.batched and "negative_prompt_embeds" in tensors:
            positive, negative = tensors["prompt_embeds"].shape, tensors["negative_prompt_embeds"].shape
            if positive != negative:
                raise InvalidRequest(
                    f"negative_prompt_embeds {list(negative)} must have the shape of prompt_embeds {list(positive)}",
                    field=where,
                )

    def placeholder(self, guidance: float, tokens: int = 8) -> Tensors:
        """Zero embeddings of the right shapes (the warm-up of a worker without text encoders)."""
        needed = self.layout.outputs if self.layout.uses_negatives(guidance) else self.layout.positives
        return {name: torch.zeros([tokens if d is None else d for d in self.shapes[name]]) for name in needed}

    def call_kwargs(
        self, tensors: Mapping[str, torch.Tensor], guidance: float, dtype: torch.dtype, images: int
    ) -> dict[str, Any]:
        """The pipeline keyword arguments for `images` images, in the denoiser's dtype (a no-op when the
        envelope already was). Where the pipeline would not repeat given embeddings per image, they are
        repeated here, as its own encoding does."""
        needed = self.layout.outputs if self.layout.uses_negatives(guidance) else self.layout.positives
        cast = {name: tensors[name].to(dtype) for name in needed}
        if not self.layout.batched:
            return {name: [value] for name, value in cast.items()}
        if self.layout.repeats_given:
            return cast
        repeated = {name: value.repeat(images, *[1] * (value.dim() - 1)) for name, value in cast.items()}
        return {**repeated, "num_images_per_prompt": 1}


def spec_of(pipe: Any) -> EmbeddingSpec:
    """The shapes the loaded denoiser of `pipe` accepts, read from its config."""
    architecture = architecture_of(pipe)
    return EmbeddingSpec(architecture.layout, architecture.shapes(pipe, architecture.layout))
