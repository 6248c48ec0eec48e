"""One record per diffusers architecture (SD, SDXL, SD3, Z-Image): its pipeline class, prompt-embedding layout and
shape reader, flow matching or not (and so size multiple, schedulers, default CUDA dtype, img2img step
arithmetic), and the fix-ups its loading needs. A model family (`families.py`) is a row of keyword arguments on
top of one of these, as diffusers' `auto_pipeline.py` maps names to classes.

Importing this module is cheap: no torch, no diffusers (fix-ups import diffusers when they run).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from worker.pipelines.schedulers import SCHEDULERS

Encode = Callable[[Any, str, str | None, bool], tuple[Any, ...]]
Shapes = Mapping[str, tuple[int | None, ...]]  # per embedding name, the expected shape (None = any length)
POOLED = ("pooled_prompt_embeds", "negative_pooled_prompt_embeds")


@dataclass(frozen=True)
class Layout:
    """One pipeline class's prompt-embedding keyword arguments, in the order its `encode_prompt` returns them."""

    outputs: tuple[str, ...]
    encode: Encode
    cfg_above: float  # guidance_scale above this runs classifier-free guidance (and needs the negatives)
    batched: bool = True  # tensors are [1, tokens, width] / [1, width]; else [tokens, width] passed as a list
    repeats_given: bool = True  # False: the pipeline does not repeat given embeddings per image (SD3)

    @property
    def negatives(self) -> tuple[str, ...]:
        """The names that only classifier-free guidance uses."""
        return tuple(name for name in self.outputs if name.startswith("negative_"))

    @property
    def positives(self) -> tuple[str, ...]:
        """The names every request needs."""
        return tuple(name for name in self.outputs if not name.startswith("negative_"))

    def uses_negatives(self, guidance: float) -> bool:
        """True if the pipeline runs classifier-free guidance at this guidance_scale."""
        return guidance > self.cfg_above


@dataclass(frozen=True)
class Architecture:
    """Everything the worker knows about one diffusers pipeline class."""

    name: str
    pipeline_class: str
    layout: Layout
    shapes: Callable[[Any, Layout], Shapes]  # the loaded pipeline → the embedding shapes its denoiser takes
    flow: bool = False  # flow matching: flow schedulers only, 16-px sizes, bf16 on CUDA
    text_encoder_fixup: Callable[[Any, str | Path, bool], None] | None = None  # (pipe, source, local_only)
    prompt_weighting: bool = False  # compel applies A1111 emphasis and long prompts (`pipelines.weighting`)
    # the pipeline applies `clip_skip`; SD1.x/2.x's path calls `text_encoder.text_model.final_layer_norm`, which
    # transformers 5's CLIPTextModel no longer has (diffusers 0.42 and compel 2.5 alike)
    clip_skip: bool = False

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this."""
        return 16 if self.flow else 8

    @property
    def cuda_dtype(self) -> str:
        """The default dtype on CUDA: fp16 for UNets, bf16 for the flow transformers."""
        return "bf16" if self.flow else "fp16"

    @property
    def schedulers(self) -> tuple[str, ...]:
        """Scheduler names a request may ask for."""
        return tuple(name for name, spec in SCHEDULERS.items() if spec.flow == self.flow)

    def start_index(self, steps: int, strength: float | None) -> int:
        """How many of `steps` timesteps img2img `strength` skips (diffusers' `get_timesteps`).

        UNet pipelines truncate `steps * strength` to an int; the flow pipelines (SD3, Z-Image) truncate the
        start index instead, so the two can differ by one step.
        """
        if strength is None:
            return 0
        if self.flow:
            return int(max(steps - steps * strength, 0.0))
        return steps - min(math.floor(steps * strength), steps)


# prompt encoding, as each pipeline's own `encode_prompt` is called --------------------------------------------


def _encode_positional(pipe: Any, prompt: str, negative: str | None, cfg: bool) -> tuple[Any, ...]:
    return tuple(pipe.encode_prompt(prompt, pipe._execution_device, 1, cfg, negative))


def _encode_by_keyword(pipe: Any, prompt: str, negative: str | None, cfg: bool, **fixed: None) -> tuple[Any, ...]:
    return tuple(
        pipe.encode_prompt(
            prompt=prompt,
            device=pipe._execution_device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=cfg,
            negative_prompt=negative,
            **fixed,
        )
    )


def _encode_zimage(pipe: Any, prompt: str, negative: str | None, cfg: bool) -> tuple[Any, ...]:
    positive, negatives = pipe.encode_prompt(
        prompt=prompt, device=pipe._execution_device, do_classifier_free_guidance=cfg, negative_prompt=negative
    )
    return positive[0], negatives[0] if negatives else None  # one variable-length [tokens, width] per prompt


# embedding shapes, read from the loaded denoiser's config -----------------------------------------------------


def _clip_shapes(sequence: int, pooled: int, layout: Layout) -> Shapes:
    return {name: (1, pooled) if name in POOLED else (1, None, sequence) for name in layout.outputs}


def _unet_shapes(pipe: Any, layout: Layout) -> Shapes:
    config = pipe.unet.config
    add = getattr(pipe.unet, "add_embedding", None)  # SDXL's pooled + time-id embedding
    pooled = add.linear_1.in_features - 6 * config.addition_time_embed_dim if add is not None else 0
    return _clip_shapes(config.cross_attention_dim, pooled, layout)


def _sd3_shapes(pipe: Any, layout: Layout) -> Shapes:
    config = pipe.transformer.config
    return _clip_shapes(config.joint_attention_dim, config.pooled_projection_dim, layout)


def _zimage_shapes(pipe: Any, layout: Layout) -> Shapes:
    return {name: (None, pipe.transformer.config.cap_feat_dim) for name in layout.outputs}


# load fix-ups ---------------------------------------------------------------------------------------------------


def _sd3_keep_transformer_config(pipe: Any, source: str | Path, local_only: bool) -> None:
    """SD3 without its T5 encoder pads with zeros as wide as the transformer's `joint_attention_dim`: a
    text-encoder worker keeps the transformer's config (no weights) so its embeddings have that width."""
    if pipe.text_encoder_3 is not None:
        return
    import diffusers

    config = diffusers.SD3Transformer2DModel.load_config(
        str(source), subfolder="transformer", local_files_only=local_only
    )
    object.__setattr__(pipe, "transformer", SimpleNamespace(config=SimpleNamespace(**config)))


_CLIP = ("prompt_embeds", "negative_prompt_embeds")
_CLIP_POOLED = (*_CLIP, *POOLED)

SD = Architecture(
    "sd",
    "StableDiffusionPipeline",
    Layout(_CLIP, _encode_positional, cfg_above=1.0),
    _unet_shapes,
    prompt_weighting=True,
)
SDXL = Architecture(
    "sdxl",
    "StableDiffusionXLPipeline",
    Layout(_CLIP_POOLED, _encode_by_keyword, cfg_above=1.0),
    _unet_shapes,
    prompt_weighting=True,
    clip_skip=True,
)
SD3 = Architecture(
    "sd3",
    "StableDiffusion3Pipeline",
    Layout(
        _CLIP_POOLED,
        functools.partial(_encode_by_keyword, prompt_2=None, prompt_3=None),
        cfg_above=1.0,
        repeats_given=False,
    ),
    _sd3_shapes,
    flow=True,
    text_encoder_fixup=_sd3_keep_transformer_config,
    clip_skip=True,
)
ZIMAGE = Architecture(
    "zimage",
    "ZImagePipeline",
    Layout(_CLIP, _encode_zimage, cfg_above=0.0, batched=False),
    _zimage_shapes,
    flow=True,
)

ARCHITECTURES: dict[str, Architecture] = {arch.pipeline_class: arch for arch in (SD, SDXL, SD3, ZIMAGE)}


def architecture_of(pipe: Any) -> Architecture:
    """The record of a loaded pipeline (the family registry admits only these classes)."""
    return ARCHITECTURES[type(pipe).__name__]
