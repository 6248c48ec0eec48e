"""The seams stay torch-free: the HTTP layer and the engine load without torch (so `--help`, the API's import
and a future remote backend stay cheap); only `backends/` and `pipelines/` bring it in."""

from __future__ import annotations

import subprocess
import sys

TORCH_FREE = ["worker.api.app", "worker.engine", "worker.engine.engine", "worker.engine.resolve"]


def test_the_seams_load_no_torch_and_a_backend_does() -> None:
    # one fresh interpreter (each costs seconds): every torch-free module first, then a backend, which proves the
    # check can fail
    code = (
        "import importlib, sys\n"
        f"for module in {TORCH_FREE!r}:\n"
        "    importlib.import_module(module)\n"
        "    print(module, sorted(m for m in ('torch', 'diffusers') if m in sys.modules))\n"
        "import worker.backends.cpu\n"
        "print('worker.backends.cpu', sorted(m for m in ('torch', 'diffusers') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines == [*(f"{module} []" for module in TORCH_FREE), "worker.backends.cpu ['diffusers', 'torch']"]
