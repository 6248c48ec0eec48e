"""A1111 prompt syntax as text, and A1111 sampler names, checked against the examples A1111 documents
(`modules/prompt_parser.py` doctests, `sd_samplers.get_sampler_and_scheduler`)."""

from __future__ import annotations

import pytest

from worker.api.a1111 import samplers
from worker.errors import InvalidRequest, Unsupported
from worker.pipelines import syntax
from worker.pipelines.families import FAMILIES


def weights(text: str) -> list[tuple[str, float]]:
    return [(f.text, round(f.weight, 4)) for f in syntax.parse_attention(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("normal text", [("normal text", 1.0)]),
        ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
        ("(unbalanced", [("unbalanced", 1.1)]),
        ("\\(literal\\]", [("(literal]", 1.0)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
        (
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            [
                ("a ", 1.0),
                ("house", 1.573),
                (" ", 1.1),
                ("on", 1.0),
                (" a ", 1.1),
                ("hill", 0.55),
                (", sun, ", 1.1),
                ("sky", 1.4641),
                (".", 1.1),
            ],
        ),
    ],
)
def test_emphasis_matches_a1111(text: str, expected: list[tuple[str, float]]) -> None:
    assert weights(text) == expected


def test_scheduling_and_alternation_reduce_to_plain_text() -> None:
    assert syntax.reduce_schedules("a [dog:cat:0.25] on [grass|sand]", 20) == ("a cat on grass sand", True)
    assert syntax.reduce_schedules("a [dog:cat:0.75]", 20) == ("a dog", True)
    assert syntax.reduce_schedules("[snow:5] field [rain::15]", 20) == ("snow field rain", True)
    assert syntax.reduce_schedules("a [small] (cat:1.2)", 20) == ("a [small] (cat:1.2)", False)
    notes = syntax.notes("a [x|y]", None, 20, weighting=True)
    assert notes == [("Prompt syntax", syntax.REDUCED_NOTE)]
    assert ("Emphasis", "ignored: no prompt weighting for this model family") in syntax.notes("(a:2)", None, 20, False)


def test_lora_tags() -> None:
    assert syntax.extract_loras("cat, <lora:ink:0.7>, sunny <lora:glow>") == (
        "cat, sunny",
        [("ink", 0.7), ("glow", 1.0)],
    )
    with pytest.raises(InvalidRequest, match="hypernet"):
        syntax.extract_loras("<hypernet:x:1>")


@pytest.mark.parametrize(
    ("sampler", "schedule", "scheduler"),
    [
        ("Euler a", None, "euler_a"),
        ("Euler a", "Automatic", "euler_a"),
        ("DPM++ 2M", None, "dpmpp_2m_karras"),  # A1111 1.9+: Karras is DPM++ 2M's automatic schedule
        ("DPM++ 2M", "uniform", "dpmpp_2m"),
        ("DPM++ 2M Karras", None, "dpmpp_2m_karras"),
        ("dpm++ 2m karras", "", "dpmpp_2m_karras"),
        ("DPM++ 2M SDE", "Automatic", "dpmpp_2m_sde_exponential"),
        ("Euler", "Karras", "euler_karras"),
        ("k_euler_a", None, "euler_a"),
        ("DDIM", "normal", "ddim"),  # SillyTavern's defaults; A1111 ignores schedules for DDIM
        ("PLMS", "Karras", "plms"),
        ("euler_a", None, "euler_a"),  # this worker's own names pass through
    ],
)
def test_sampler_names(sampler: str, schedule: str | None, scheduler: str) -> None:
    choice = samplers.choose(FAMILIES["v1-5"], sampler, schedule)
    assert choice is not None and choice.scheduler == scheduler


def test_flow_families_and_refusals() -> None:
    flow = FAMILIES["3-medium"]
    choice = samplers.choose(flow, "Euler", "Automatic")
    assert choice is not None and choice.scheduler == "flow_euler"
    with pytest.raises(Unsupported, match="flow matching"):
        samplers.choose(flow, "DPM++ 2M", None)
    with pytest.raises(Unsupported, match="no diffusers equivalent"):
        samplers.choose(FAMILIES["v1-5"], "DPM fast", None)
    with pytest.raises(Unsupported, match="Euler a"):
        samplers.choose(FAMILIES["v1-5"], "Euler a", "Karras")
    with pytest.raises(Unsupported) as bad:
        samplers.choose(FAMILIES["v1-5"], "Euler", "Align Your Steps")
    assert bad.value.field == "scheduler"
    assert samplers.choose(FAMILIES["v1-5"], None, None) is None
    assert [s["name"] for s in samplers.sampler_items(flow)] == ["Euler"]
