"""Shared fixtures: tiny real pipelines (built once per session), loaded backends, app clients, a live server."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from worker.api.app import create_app
from worker.backends.cpu import CpuBackend
from worker.config import Settings

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import make_tiny_models  # noqa: E402

# tiny architecture → the --sd-version it stands in for
ARCH_FAMILY = {"sd15": "v1-5", "sd21": "v2-1", "sdxl": "xl", "sd3": "3-medium", "zimage": "z-image-turbo"}


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


def worker_settings(arch: str, folder: Path, **overrides: Any) -> Settings:
    """Settings serving the tiny `arch` model at `folder`."""
    return Settings(sd_version=ARCH_FAMILY[arch], model_path=folder, **overrides)


@asynccontextmanager
async def app_client(settings: Settings, backend: CpuBackend) -> AsyncIterator[httpx.AsyncClient]:
    """A client talking to a fresh app (its own engine) on a shared loaded backend, once it is ready."""
    app = create_app(settings, backend=backend)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://worker", timeout=60) as client:
            auth = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
            await wait_ready(client, auth)
            yield client


async def wait_ready(client: httpx.AsyncClient, headers: dict[str, str] | None = None, timeout: float = 60.0) -> None:
    """Poll /ready until 200."""
    deadline = time.monotonic() + timeout
    while (await client.get("/ready", headers=headers)).status_code != 200:
        if time.monotonic() > deadline:
            raise TimeoutError("worker never became ready")
        await asyncio.sleep(0.05)


@pytest.fixture
def client_for(backend_for: Callable[[str], CpuBackend], tiny_model: Callable[[str], Path]) -> Any:
    """`async with client_for("sd15", max_queue=1) as client:` — an app client for a tiny arch."""

    def make(arch: str, **overrides: Any) -> Any:
        return app_client(worker_settings(arch, tiny_model(arch), **overrides), backend_for(arch))

    return make


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serve_app(app: Any, port: int | None = None, ready_path: str | None = None) -> Iterator[str]:
    """Any ASGI app under a real uvicorn on a loopback port, in a thread; yields its base URL."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not server.started or (ready_path and not _answers(f"{url}{ready_path}")):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} never became ready")
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def live_server(settings: Settings, backend: CpuBackend) -> Iterator[str]:
    """The worker app on a shared loaded backend under a real uvicorn; yields its URL once /ready says yes.

    It listens on `settings.port` when that is not the default (so the worker advertises its real URL).
    """
    port = settings.port if "port" in settings.model_fields_set else None
    with serve_app(create_app(settings, backend=backend), port=port, ready_path="/ready") as url:
        yield url


@contextmanager
def worker_process(*args: str, port: int | None = None) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A real `sd-worker` process (serve) on a loopback port; yields (process, URL) once /ready says yes."""
    with worker_processes(list(args), ports=[port]) as [started]:
        yield started


@contextmanager
def worker_processes(
    *arg_lists: list[str], ports: list[int | None] | None = None
) -> Iterator[list[tuple[subprocess.Popen[str], str]]]:
    """Several `sd-worker` processes started together (they load in parallel); yields [(process, URL)]."""
    ports = ports or [None] * len(arg_lists)
    started: list[tuple[subprocess.Popen[str], str]] = []
    try:
        for args, port in zip(arg_lists, ports, strict=True):
            port = port or free_port()
            command = [sys.executable, "-c", "from worker.cli import main; main()", "--port", str(port), *args]
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            started.append((process, f"http://127.0.0.1:{port}"))
        deadline = time.monotonic() + 120
        for process, url in started:
            while not _answers(f"{url}/ready"):
                if process.poll() is not None:
                    raise RuntimeError(f"worker exited: {process.stdout.read() if process.stdout else ''}")
                if time.monotonic() > deadline:
                    raise TimeoutError("worker never became ready")
                time.sleep(0.1)
        yield started
    finally:
        for process, _ in started:
            if process.poll() is None:
                process.kill()
                process.wait(30)


def parse_sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    """SSE text → [(event name, data)] (comments skipped)."""
    import json

    events = []
    for frame in text.strip().split("\n\n"):
        name, data = None, None
        for line in frame.splitlines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
        if name is not None and data is not None:
            events.append((name, data))
    return events


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `@pytest.mark.cuda` tests where no CUDA device is visible."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)
