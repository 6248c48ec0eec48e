"""Helpers shared by the test modules (fixtures live in conftest.py): settings and clients for tiny models, real
servers and worker processes, SSE parsing, test pictures, and hooks that slow a denoiser down."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
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
import numpy as np
import uvicorn
from PIL import Image

from worker.api.app import create_app
from worker.backends.cpu import CpuBackend
from worker.config import Settings

# tiny architecture → the --sd-version it stands in for
ARCH_FAMILY = {"sd15": "v1-5", "sd21": "v2-1", "sdxl": "xl", "sd3": "3-medium", "zimage": "z-image-turbo"}


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

    It listens on `settings.port` when that was given (so the worker advertises its real URL).
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


def init_image(size: int = 64) -> Image.Image:
    """A deterministic, structured RGB picture (gradients and a block), for img2img/inpaint."""
    y, x = np.mgrid[0:size, 0:size]
    rgb = np.stack([x * 255 // size, y * 255 // size, (x + y) * 127 // size], axis=-1).astype(np.uint8)
    rgb[size // 4 : size // 2, size // 4 : size // 2] = (250, 30, 30)
    return Image.fromarray(rgb, "RGB")


def centre_mask(size: int = 64) -> Image.Image:
    """White (repaint) square in the centre, black elsewhere."""
    mask = np.zeros((size, size), np.uint8)
    mask[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 255
    return Image.fromarray(mask, "L")


def b64_png(image: Image.Image, fmt: str = "PNG") -> str:
    """An image as base64 text, as clients send it."""
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def decode(data: str) -> Image.Image:
    """base64 from a response → PIL image (fully loaded)."""
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return image


def pixels(image: Image.Image) -> np.ndarray:
    """RGB pixel array, for byte-for-byte comparisons."""
    return np.asarray(image.convert("RGB"))


class Calls:
    """Counts forward calls of a module."""

    def __init__(self) -> None:
        self.count = 0


@contextmanager
def slow_denoiser(backend: CpuBackend, delay: float) -> Iterator[tuple[Calls, Calls]]:
    """Make every denoiser call take `delay` seconds (a GPU-sized step); count denoiser and VAE-decoder calls."""
    denoiser_calls, decoder_calls = Calls(), Calls()

    def on_denoiser(*_: Any) -> None:
        denoiser_calls.count += 1
        time.sleep(delay)

    def on_decoder(*_: Any) -> None:
        decoder_calls.count += 1

    handles = [
        backend.model.denoiser.register_forward_hook(on_denoiser),
        backend.model.base.vae.decoder.register_forward_hook(on_decoder),
    ]
    try:
        yield denoiser_calls, decoder_calls
    finally:
        for handle in handles:
            handle.remove()


def wait_for(condition: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `sd-worker ARGS` as a user would."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    command = [sys.executable, "-c", "from worker.cli import main; main()", *args]
    return subprocess.run(command, capture_output=True, text=True, env=full_env, timeout=timeout)
