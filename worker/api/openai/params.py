"""OpenAI's parameter names for our fields (errors name what the client sent), and the knobs accepted but not
honoured (named in `X-Ignored-Params`, never dropped silently)."""

from __future__ import annotations

from typing import Any

# a native field (as the resolver names it in errors) → the OpenAI parameter that carried it
OPENAI_PARAMS = {
    "num_samples": "n",
    "width": "size",
    "height": "size",
    "steps": "nvext.num_inference_steps",
    "guidance_scale": "nvext.guidance_scale",
    "seed": "nvext.seed",
    "negative_prompt": "nvext.negative_prompt",
    "webhook_url": "nvext.webhook_url",
}


def openai_param(field: str | None) -> str | None:
    """The OpenAI name of a field named in an error (body fields keep the name the client sent)."""
    return OPENAI_PARAMS.get(field, field) if field is not None else None


def ignored_params(values: dict[str, Any]) -> list[str]:
    """The OpenAI knobs a request set that this worker cannot honour, in OpenAI's order."""
    ignored = [name for name in ("style", "moderation", "input_fidelity") if values.get(name) is not None]
    if values.get("background") == "transparent":  # diffusion makes opaque pixels
        ignored.append("background")
    return ignored
