"""A1111 prompt syntax applied to the text encoders: emphasis weights and prompts past 77 tokens, via `compel`.

compel (a maintained prompt-weighting library) does the embedding work: per-token weights, and long prompts
encoded as 77-token chunks concatenated (as A1111 does) instead of truncated. A1111's emphasis grammar is read
by `pipelines.syntax` and handed to compel as weighted fragments, so compel's own `word++` grammar never sees
user text. compel covers the CLIP-based UNet families (SD1.x/2.x, SDXL); SD3 and Z-Image get the plain text.
A prompt with no emphasis that fits in one chunk takes the pipeline's own encoding: pixels equal diffusers'.
"""

from __future__ import annotations

from typing import Any

import torch

from worker.errors import InvalidRequest
from worker.pipelines import syntax
from worker.pipelines.architectures import architecture_of


def text_kwargs(
    pipe: Any,
    prompt: str,
    negative_prompt: str | None,
    steps: int,
    guidance: float,
    cfg_above: float,
    clip_skip: int = 0,
) -> dict[str, Any]:
    """The text keyword arguments of base pipeline `pipe` for a `prompt_syntax` request: plain text, or compel
    embeddings (the task variants share the base's text encoders)."""
    positive = syntax.parse_attention(syntax.reduce_schedules(prompt, steps)[0])
    negative = syntax.parse_attention(syntax.reduce_schedules(negative_prompt, steps)[0]) if negative_prompt else None
    plain = {
        "prompt": syntax.plain_text(positive),
        "negative_prompt": syntax.plain_text(negative) if negative is not None else None,
    }
    if not architecture_of(pipe).prompt_weighting or not _needs_compel(pipe, positive, negative):
        return plain
    return _embeddings(pipe, positive, negative, cfg=guidance > cfg_above, clip_skip=clip_skip)


def _needs_compel(pipe: Any, positive: list[syntax.Fragment], negative: list[syntax.Fragment] | None) -> bool:
    window = pipe.tokenizer.model_max_length - 2  # tokens between the start and end markers
    for fragments in (positive, negative):
        if fragments is None:
            continue
        ids = pipe.tokenizer(syntax.plain_text(fragments), add_special_tokens=False).input_ids
        if syntax.is_weighted(fragments) or len(ids) > window:
            return True
    return False


def _compel(pipe: Any, clip_skip: int) -> Any:
    from compel import Compel, ReturnedEmbeddingsType  # imports every diffusers pipeline: only when needed

    xl = type(pipe).__name__ == "StableDiffusionXLPipeline"
    if clip_skip:  # compel reads SDXL's penultimate layer, nothing deeper
        raise InvalidRequest(
            "CLIP skip together with emphasis or a prompt past 77 tokens is not available",
            field="CLIP_stop_at_last_layers",
        )
    if xl:
        return Compel(
            tokenizer=[pipe.tokenizer, pipe.tokenizer_2],
            text_encoder=[pipe.text_encoder, pipe.text_encoder_2],
            returned_embeddings_type=ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED,
            requires_pooled=[False, True],
            truncate_long_prompts=False,
        )
    return Compel(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, truncate_long_prompts=False)


def _embeddings(
    pipe: Any, positive: list[syntax.Fragment], negative: list[syntax.Fragment] | None, cfg: bool, clip_skip: int
) -> dict[str, Any]:
    compel = _compel(pipe, clip_skip)
    provider = compel.conditioning_provider
    xl = type(pipe).__name__ == "StableDiffusionXLPipeline"

    def embed(fragments: list[syntax.Fragment]) -> torch.Tensor:
        texts, weights = [f.text for f in fragments], [f.weight for f in fragments]
        tensor: torch.Tensor = provider.get_embeddings_for_weighted_prompt_fragments(
            text_batch=[texts], fragment_weights_batch=[weights], device=compel.device
        )
        return tensor

    def pooled(fragments: list[syntax.Fragment]) -> torch.Tensor:
        tensor: torch.Tensor = provider.get_pooled_embeddings([syntax.plain_text(fragments)], device=compel.device)
        return tensor

    with torch.inference_mode():
        kwargs: dict[str, Any] = {"prompt_embeds": embed(positive)}
        if xl:
            kwargs["pooled_prompt_embeds"] = pooled(positive)
        # SDXL zeroes an absent negative prompt itself (force_zeros_for_empty_prompt); SD encodes "" for it
        zero_negative = xl and negative is None and pipe.config.force_zeros_for_empty_prompt
        if cfg and not zero_negative:
            negative = negative or [syntax.Fragment("", 1.0)]
            positive_embeds, negative_embeds = compel.pad_conditioning_tensors_to_same_length(
                [kwargs["prompt_embeds"], embed(negative)]
            )
            kwargs["prompt_embeds"], kwargs["negative_prompt_embeds"] = positive_embeds, negative_embeds
            if xl:
                kwargs["negative_pooled_prompt_embeds"] = pooled(negative)
    return kwargs
