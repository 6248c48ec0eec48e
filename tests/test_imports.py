"""The seams stay torch-free: the HTTP layer and the engine load without torch (so `--help`, the API's import
and a future remote backend stay cheap); only `backends/` and `pipelines/` bring it in. And a plain worker never
imports Ray (an optional extra that only `sd-worker ray` and `worker.deploy` need)."""

from __future__ import annotations

import subprocess
import sys

TORCH_FREE = ["worker.api.app", "worker.engine", "worker.engine.engine", "worker.engine.resolve"]


def test_the_seams_load_no_torch_a_backend_does_and_nothing_imports_ray() -> None:
    # one fresh interpreter (each costs seconds): every torch-free module first, then a backend, which proves the
    # check can fail; then the whole plain worker (server, CLI, an app) and its help pages, Ray's included
    code = (
        "import importlib, sys\n"
        f"for module in {TORCH_FREE!r}:\n"
        "    importlib.import_module(module)\n"
        "    print(module, sorted(m for m in ('torch', 'diffusers') if m in sys.modules))\n"
        "import worker.backends.cpu\n"
        "print('worker.backends.cpu', sorted(m for m in ('torch', 'diffusers') if m in sys.modules))\n"
        "from typer.testing import CliRunner\n"
        "import worker.server\nfrom worker.cli import app\nfrom worker.api.app import create_app\n"
        "from worker.config import Settings\ncreate_app(Settings(device='cpu'))\n"
        "for args in (['--help'], ['ray', '--help']):\n"
        "    result = CliRunner().invoke(app, args)\n"
        "    assert result.exit_code == 0, result.output\n"
        "print('ray', sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines == [
        *(f"{module} []" for module in TORCH_FREE),
        "worker.backends.cpu ['diffusers', 'torch']",
        "ray []",
    ]
