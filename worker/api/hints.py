"""What a refused body should tell its sender: every mistake at once, and the fix for the common ones.

People arrive with bodies written for other servers (AUTOMATIC1111, diffusers, OpenAI); their field names get a
"did you mean", and a body that is not JSON at all gets the header to send instead of pydantic's wording.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# other servers' spellings → ours, on the native routes
NATIVE_SPELLINGS = {
    "num_steps": "steps",
    "num_inference_steps": "steps",
    "cfg_scale": "guidance_scale",
    "guidance": "guidance_scale",
    "sampler_name": "scheduler",
    "sampler": "scheduler",
    "batch_size": "num_samples",
    "n": "num_samples",
    "n_iter": "num_samples",
    "denoising_strength": "strength",
    "init_images": "image",
    "init_image": "image",
    "mask_image": "mask",
    "negative": "negative_prompt",
}
# … and on the OpenAI routes, whose own names win
OPENAI_SPELLINGS = {
    "steps": "num_inference_steps",
    "num_steps": "num_inference_steps",
    "cfg_scale": "guidance_scale",
    "num_samples": "n",
    "batch_size": "n",
    "width": "size",
    "height": "size",
}
EXAMPLE = '{"prompt": "a red circle on a blue background"}'


@dataclass(frozen=True)
class Refusal:
    """The status, code, message and (first) field of one refused body."""

    status: int
    code: str
    message: str
    field: str | None = None


def explain(
    errors: Sequence[Mapping[str, Any]], content_type: str | None, known: Collection[str], *, openai: bool = False
) -> Refusal:
    """Turn pydantic's errors for a body into one refusal; `known` are the body's field names (for typos)."""
    if any(error.get("type") == "json_invalid" for error in errors):
        return Refusal(400, "invalid_request", "the body is not valid JSON")
    if any(not _path(error) for error in errors):  # the body as a whole: absent, not JSON, not an object
        return _whole_body(errors, content_type)
    spellings = OPENAI_SPELLINGS if openai else NATIVE_SPELLINGS
    parts = [_describe(error, spellings, known) for error in errors]
    return Refusal(422, "invalid_request", "; ".join(parts), _path(errors[0]))


def _whole_body(errors: Sequence[Mapping[str, Any]], content_type: str | None) -> Refusal:
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        got = f"Content-Type {media_type}" if media_type else "no Content-Type"
        return Refusal(
            415,
            "unsupported_media_type",
            f"send the body as JSON with the header Content-Type: application/json (got {got}); "
            f"with curl: -H 'Content-Type: application/json' -d '{EXAMPLE}'",
        )
    if any(error.get("type") == "missing" for error in errors):
        return Refusal(400, "invalid_request", f"the body is empty: send a JSON object such as {EXAMPLE}")
    return Refusal(422, "invalid_request", f"the body must be a JSON object such as {EXAMPLE}")


def _describe(error: Mapping[str, Any], spellings: Mapping[str, str], known: Collection[str]) -> str:
    path = _path(error)
    if error.get("type") != "extra_forbidden":
        return f"{path}: {error.get('msg', 'invalid value')}"
    name = path.rsplit(".", 1)[-1]
    top_level = "." not in path
    suggestion = spellings.get(name) if top_level else None
    if suggestion is None and top_level:
        close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
        suggestion = close[0] if close else None
    hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
    return f"unknown field {path!r}{hint}"


def _path(error: Mapping[str, Any]) -> str:
    """The field's dotted path inside the body ('' for the body itself)."""
    loc = tuple(error.get("loc", ()))
    return ".".join(str(part) for part in (loc[1:] if loc[:1] == ("body",) else loc))
