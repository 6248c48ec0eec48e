"""The seams stay torch-free: the HTTP layer and the engine load without torch (so `--help`, the API's import
and a future remote backend stay cheap); only `backends/` and `pipelines/` bring it in."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["worker.api.app", "worker.engine", "worker.engine.engine", "worker.engine.resolve"])
def test_module_loads_no_torch(module: str) -> None:
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'diffusers') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_backend_does_load_torch() -> None:
    """The check above can fail: importing a backend does pull torch in."""
    code = "import sys, worker.backends.cpu; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "True", result.stderr
