"""Every script a user or a GPU run relies on runs, in a short form, so none can rot unnoticed.

Each runs in this process (its `main()` with a short argv), so the suite pays no extra torch import;
`mini_hive.py` is exercised by tests/test_hive.py.
"""

from __future__ import annotations

import importlib
import sys

import pytest

# script, its short argv, what its output must show
SCRIPTS = [
    ("bench_gpu", ["--smoke", "--runs", "1", "--modes", "eager"], ["sd15        64²×4 eager", "sdxl "]),
    ("bench_overhead", ["--steps", "2", "--size", "64", "--runs", "1"], ["HTTP + SSE end to end", "ratio"]),
    (
        "bench_open_loop",
        ["--jobs", "3", "--loads", "1.0", "--calibration-jobs", "2", "--steps", "2,3", "--guidance", "0,4"],
        ["solo capacity", "continuous/window"],
    ),
    ("soak", ["--jobs", "6", "--cancels", "2", "--failures", "1", "--concurrency", "2"], ["outcomes:", "RSS after"]),
    (
        "bench",
        [
            *("--models", "tiny", "--concurrency", "2", "--jobs", "1", "--reps", "1", "--runs", "1", "--steps", "4"),
            *("--encode-runs", "1", "--encode-sizes", "64"),
        ],
        ["(a)", "(b) 2 clients", "(d) encode"],
    ),
]


@pytest.mark.parametrize(("script", "args", "shows"), SCRIPTS, ids=[name for name, *_ in SCRIPTS])
def test_script_runs_its_short_form(
    script: str, args: list[str], shows: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", [f"{script}.py", *args])
    importlib.import_module(script).main()
    out = capsys.readouterr().out
    for expected in shows:
        assert expected in out, out
