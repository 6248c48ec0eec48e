"""AUTOMATIC1111's prompt syntax as text: emphasis fragments, scheduling/alternation reduced, `<lora:…>` tags.

Torch-free, so the API layer can read LoRA tags and the engine can weight fragments (`pipelines.weighting`).
The emphasis rules follow A1111's `prompt_parser.parse_prompt_attention`: `(x)` × 1.1, `[x]` ÷ 1.1, `(x:w)` = w,
`\\(` a literal bracket, `BREAK` a chunk break. Prompt editing `[from:to:when]` and alternation `[a|b]` change
the prompt between steps in A1111; here they become plain text, and the infotext says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from worker.errors import InvalidRequest

UP, DOWN = 1.1, 1 / 1.1
# one token of the emphasis grammar (A1111's `re_attention`)
ATTENTION = re.compile(
    r"\\\(|\\\)|\\\[|\\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|]|[^\\()\[\]:]+|:",
    re.X,
)
BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")
# innermost bracket groups only (no brackets inside), so nested ones reduce from the inside out
SCHEDULED = re.compile(r"(?<!\\)\[([^\[\]:|]*?)(?::([^\[\]:|]*?))?:\s*([0-9]*\.?[0-9]+)\s*\]")
ALTERNATE = re.compile(r"(?<!\\)\[([^\[\]:]*\|[^\[\]:]*)\]")
REDUCED_NOTE = "[from:to:when] and [a|b] reduced to plain text"


@dataclass(frozen=True)
class Fragment:
    """A run of prompt text and its attention weight (1.0 = as written)."""

    text: str
    weight: float


def extract_loras(prompt: str, field: str = "prompt") -> tuple[str, list[tuple[str, float]]]:
    """`<lora:name:weight>` tags out of `prompt`: (prompt without them, [(name, weight)]).

    Other extra networks (`<hypernet:…>`, `<lyco:…>`) are refused by name: this worker has only LoRAs.
    """
    loras: list[tuple[str, float]] = []

    def take(match: re.Match[str]) -> str:
        kind, args = match.group(1), match.group(2).split(":")
        if kind != "lora":
            message = f"<{kind}:…> in the {field} is not supported here; only <lora:name:weight>"
            raise InvalidRequest(message, field=field)
        try:
            weight = float(args[1]) if len(args) > 1 and args[1] else 1.0
        except ValueError:
            raise InvalidRequest(f"<lora:{match.group(2)}>: the weight must be a number", field=field) from None
        loras.append((args[0], weight))
        return ""

    text = EXTRA_NETWORK.sub(take, prompt)
    return re.sub(r"\s*,\s*,", ",", text).strip(" ,") if loras else text, loras


def reduce_schedules(prompt: str, steps: int) -> tuple[str, bool]:
    """`[from:to:when]` → the text in effect for most of `steps`; `[a|b]` → "a b". Returns (text, changed)."""
    changed = False

    def scheduled(match: re.Match[str]) -> str:
        before, after, when = match.group(1), match.group(2), float(match.group(3))
        if after is None:  # [to:when] adds `to` after `when`
            before, after = "", before
        switch = when if when >= 1 else when * steps  # a step number, or a fraction of the steps
        return before if switch > steps / 2 else after

    def alternate(match: re.Match[str]) -> str:
        return " ".join(part.strip() for part in match.group(1).split("|") if part.strip())

    while True:
        reduced = ALTERNATE.sub(alternate, SCHEDULED.sub(scheduled, prompt))
        if reduced == prompt:
            return prompt, changed
        prompt, changed = reduced, True


def parse_attention(text: str) -> list[Fragment]:
    """Emphasis → weighted fragments, merged where neighbours share a weight; `BREAK` becomes a separator.

    Unbalanced brackets apply to the end of the text, as in A1111.
    """
    result: list[list[str | float]] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply(start: int, factor: float) -> None:
        for item in result[start:]:
            item[1] = float(item[1]) * factor

    for match in ATTENTION.finditer(BREAK.sub(" , ", text)):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\") and len(token) == 2:
            result.append([token[1], 1.0])
        elif token == "(":
            round_open.append(len(result))
        elif token == "[":
            square_open.append(len(result))
        elif weight is not None and round_open:
            multiply(round_open.pop(), float(weight))
        elif token == ")" and round_open:
            multiply(round_open.pop(), UP)
        elif token == "]" and square_open:
            multiply(square_open.pop(), DOWN)
        else:
            result.append([token, 1.0])
    for start in round_open:
        multiply(start, UP)
    for start in square_open:
        multiply(start, DOWN)
    fragments: list[Fragment] = []
    for text_part, weight_part in result:
        text_str, value = str(text_part), float(weight_part)
        if fragments and fragments[-1].weight == value:
            fragments[-1] = Fragment(fragments[-1].text + text_str, value)
        else:
            fragments.append(Fragment(text_str, value))
    return [f for f in fragments if f.text] or [Fragment("", 1.0)]


def plain_text(fragments: list[Fragment]) -> str:
    """The fragments' text without weights."""
    return "".join(f.text for f in fragments)


def is_weighted(fragments: list[Fragment]) -> bool:
    """True if any fragment has a weight other than 1."""
    return any(abs(f.weight - 1.0) > 1e-6 for f in fragments)


def notes(prompt: str | None, negative_prompt: str | None, steps: int, weighting: bool) -> list[tuple[str, str]]:
    """Infotext fields that say what the prompt syntax could not apply (for `prompt_syntax` requests)."""
    found: list[tuple[str, str]] = []
    texts = [t for t in (prompt, negative_prompt) if t]
    if any(reduce_schedules(t, steps)[1] for t in texts):
        found.append(("Prompt syntax", REDUCED_NOTE))
    if not weighting and any(is_weighted(parse_attention(reduce_schedules(t, steps)[0])) for t in texts):
        found.append(("Emphasis", "ignored: no prompt weighting for this model family"))
    return found
