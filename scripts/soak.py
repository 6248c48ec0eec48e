"""Soak: 200 jobs on a tiny model with 50 cancels and 20 injected failures interleaved, against a real uvicorn.

    python scripts/soak.py [--jobs 200] [--cancels 50] [--failures 20] [--concurrency 4]

The worker runs in this process (so its RSS, threads and open files are this process's), on a loopback port;
failures are injected by a hook that raises inside the UNet for prompts marked "fail". Prints RSS at warm-up
and at the end (goal ≤ 5 % growth), threads and open files before/after, job outcomes, and /health latency
percentiles measured while jobs run (goal p99 < 50 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_tiny_models

from worker.api.app import create_app
from worker.backends.cpu import CpuBackend
from worker.config import Settings


def rss_mb() -> float:
    """Resident memory of this process."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def open_files() -> int:
    """File descriptors this process holds."""
    return len(os.listdir("/proc/self/fd"))


async def one_job(client: httpx.AsyncClient, index: int, kind: str, outcomes: dict[str, int]) -> None:
    """Run a job; `cancel` leaves after the 2nd progress event, `fail` hits the injected fault."""
    body = {"prompt": f"{'fail ' if kind == 'fail' else ''}a cat {index}", "steps": 8, "width": 64, "height": 64,
            "scheduler": "ddim", "seed": index}  # fmt: skip
    try:
        async with client.stream("POST", "/execute", json=body) as response:
            if response.status_code != 200:
                outcomes[f"http {response.status_code}"] = outcomes.get(f"http {response.status_code}", 0) + 1
                return
            progress, last = 0, ""
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    last = line[7:]
                    progress += last == "progress"
                    if kind == "cancel" and progress == 2:
                        break
            outcome = "left (cancelled)" if kind == "cancel" else last
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    except httpx.HTTPError as exc:
        outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1


async def poll_health(client: httpx.AsyncClient, stop: asyncio.Event, latencies: list[float]) -> None:
    """Time /health every 50 ms until told to stop."""
    while not stop.is_set():
        start = time.perf_counter()
        await client.get("/health")
        latencies.append((time.perf_counter() - start) * 1000)
        await asyncio.sleep(0.05)


async def soak(url: str, kinds: list[str], concurrency: int) -> tuple[dict[str, int], list[float]]:
    """All jobs, `concurrency` at a time, with /health polled alongside."""
    outcomes: dict[str, int] = {}
    latencies: list[float] = []
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        stop = asyncio.Event()
        poller = asyncio.create_task(poll_health(client, stop, latencies))

        async def guarded(index: int, kind: str) -> None:
            async with limit:
                await one_job(client, index, kind, outcomes)

        await asyncio.gather(*(guarded(i, kind) for i, kind in enumerate(kinds)))
        stop.set()
        await poller
    return outcomes, latencies


def main() -> None:
    """Run the soak and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--cancels", type=int, default=50)
    parser.add_argument("--failures", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    kinds = ["cancel"] * args.cancels + ["fail"] * args.failures
    kinds += ["ok"] * (args.jobs - len(kinds))
    random.Random(0).shuffle(kinds)
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_tiny_models.build("sd15", Path(tmp) / "sd15")
        settings = Settings(sd_version="v1-5", model_path=folder, max_queue=64)
        backend = CpuBackend(settings)
        backend.load()
        failing = threading.local()

        def inject(_module: Any, _args: Any) -> None:
            if getattr(failing, "on", False):
                raise RuntimeError("injected fault")

        original_run = backend.generate

        def generate(requests: Any, hooks: Any, on_drop: Any) -> Any:
            failing.on = any(request.prompt.startswith("fail") for request in requests)
            return original_run(requests, hooks, on_drop)

        backend.generate = generate  # type: ignore[method-assign]
        backend.model.denoiser.register_forward_pre_hook(inject)
        port = int(os.environ.get("SOAK_PORT", "0")) or _free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(settings, backend=backend), port=port, log_level="error"))
        threading.Thread(target=server.run, daemon=True).start()
        url = f"http://127.0.0.1:{port}"
        while not server.started:
            time.sleep(0.05)
        # warm-up: a few jobs so allocator pools and lazy state exist before the baseline
        asyncio.run(soak(url, ["ok"] * 8, args.concurrency))
        before = {"rss_mb": rss_mb(), "threads": threading.active_count(), "open_files": open_files()}
        started = time.perf_counter()
        outcomes, latencies = asyncio.run(soak(url, kinds, args.concurrency))
        elapsed = time.perf_counter() - started
        time.sleep(1.0)  # let cancelled jobs finish unwinding
        after = {"rss_mb": rss_mb(), "threads": threading.active_count(), "open_files": open_files()}
        server.should_exit = True
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    growth = 100 * (after["rss_mb"] - before["rss_mb"]) / before["rss_mb"]
    print(
        f"jobs {len(kinds)} (cancels {args.cancels}, injected failures {args.failures}) in {elapsed:.1f}s, "
        f"concurrency {args.concurrency}"
    )
    print("outcomes:", dict(sorted(outcomes.items())))
    print(
        f"RSS after warm-up {before['rss_mb']:.1f} MB, at the end {after['rss_mb']:.1f} MB: {growth:+.2f}% (goal <= 5%)"
    )
    print(
        f"threads {before['threads']} -> {after['threads']}, open files {before['open_files']} -> {after['open_files']}"
    )
    print(f"/health during generation: {len(latencies)} calls, p50 {p50:.1f} ms, p99 {p99:.1f} ms (goal < 50 ms)")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


if __name__ == "__main__":
    main()
