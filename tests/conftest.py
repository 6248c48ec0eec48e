"""Shared fixtures: tiny real pipelines (built once per session), loaded backends, app clients, a live server."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import app_client, worker_settings
from worker.backends.cpu import CpuBackend
from worker.config import Settings

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import make_tiny_models  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def contained_temp_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The worker processes the suite starts use a temp dir inside pytest's own, which a passing run removes: a
    process the suite SIGKILLs (crash tests, a hive evicting a silent worker) cannot remove its temp folder."""
    temp = tmp_path_factory.mktemp("tmp")
    saved = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(temp)
    try:
        yield temp
    finally:
        if saved is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tiny models of this session live."""
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def tiny_model(tiny_dir: Path) -> Callable[[str], Path]:
    """arch → folder of a tiny random-weight pipeline of that architecture (built on first use)."""
    built: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in built:
            built[arch] = make_tiny_models.build(arch, tiny_dir / arch)
        return built[arch]

    return get


@pytest.fixture(scope="session")
def backend_for(tiny_model: Callable[[str], Path]) -> Callable[[str], CpuBackend]:
    """arch → a loaded, warmed CPU backend on that tiny model (one per arch per session)."""
    loaded: dict[str, CpuBackend] = {}

    def get(arch: str) -> CpuBackend:
        if arch not in loaded:
            backend = CpuBackend(worker_settings(arch, tiny_model(arch)))
            backend.load()
            loaded[arch] = backend
        return loaded[arch]

    return get


@pytest.fixture(scope="session")
def demo_model_backend() -> CpuBackend:
    """A loaded CPU backend on the bundled demo model, with the default settings (one per session)."""
    backend = CpuBackend(Settings())
    backend.load()
    return backend


@pytest.fixture
def client_for(backend_for: Callable[[str], CpuBackend], tiny_model: Callable[[str], Path]) -> Any:
    """`async with client_for("sd15", max_queue=1) as client:` — an app client for a tiny arch."""

    def make(arch: str, **overrides: Any) -> Any:
        return app_client(worker_settings(arch, tiny_model(arch), **overrides), backend_for(arch))

    return make


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `@pytest.mark.cuda` tests where no CUDA device is visible."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)
