"""Serving overhead: HTTP+SSE end-to-end time of a job ÷ the direct diffusers call, measured in one run.

    python scripts/bench_overhead.py [--model-path FOLDER] [--steps 20] [--size 256] [--runs 10] [--subprocess]

Without --model-path it builds the tiny SD1.5 pipeline. By default the worker app runs under a real uvicorn on a
loopback port *in this process*, so the direct call and the worker share one torch thread pool and the ratio is
the serving overhead alone (HTTP, queue, events, SSE, PNG encoding). `--subprocess` starts a real `sd-worker`
process instead; on a 2-core machine two processes with their own thread pools slow each other down, which
shows up as ~1.25 there (measured) and says nothing about the worker. Direct and HTTP runs are interleaved and
medians compared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import torch
from diffusers import DiffusionPipeline

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_tiny_models


def free_port() -> int:
    """A free loopback port."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(port: int, timeout: float = 120.0) -> bool:
    """Poll the worker's /ready on `port` until it answers 200 (True) or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready").status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    return False


def start_worker(model: Path | None, port: int, threads: int) -> subprocess.Popen[bytes]:
    """`sd-worker` serving `model` (a tiny SD1.5 folder; None = the bundled demo model) with `threads` torch
    threads, once /ready answers 200."""
    source = ["--sd-version", "v1-5", "--model-path", str(model)] if model is not None else ["--sd-version", "demo"]
    command = [sys.executable, "-c", "from worker.cli import main; main()", *source, "--port", str(port)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    if not wait_ready(port):
        process.kill()
        raise SystemExit("the worker did not become ready")
    return process


def start_in_process(model: Path, port: int) -> Any:
    """The worker app under uvicorn in a thread of this process, once /ready answers 200."""
    import threading

    import uvicorn

    from worker.api.app import create_app
    from worker.config import Settings

    server = uvicorn.Server(uvicorn.Config(create_app(Settings(sd_version="v1-5", model_path=model)), port=port,
                                           log_level="warning"))  # fmt: skip
    threading.Thread(target=server.run, daemon=True).start()
    if not wait_ready(port):
        raise SystemExit("the worker did not become ready")
    return server


def http_job(client: httpx.Client, body: dict[str, Any]) -> float:
    """Seconds from sending the request to receiving the `complete` event."""
    start = time.perf_counter()
    with client.stream("POST", "/execute", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("event: complete"):
                break
    return time.perf_counter() - start


def direct_job(pipe: Any, body: dict[str, Any]) -> float:
    """Seconds for the same call on the pipeline directly."""
    start = time.perf_counter()
    pipe(
        prompt=body["prompt"],
        num_inference_steps=body["steps"],
        guidance_scale=body["guidance_scale"],
        height=body["height"],
        width=body["width"],
        generator=[torch.Generator().manual_seed(body["seed"])],
    )
    return time.perf_counter() - start


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", type=Path)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="torch threads on both sides (1 on a busy machine: oversubscription wrecks timings)",
    )
    parser.add_argument("--subprocess", action="store_true", help="run the worker as its own sd-worker process")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model_path or make_tiny_models.build("sd15", Path(tmp) / "sd15")
        body = {
            "prompt": "a red cat on a beach",
            "steps": args.steps,
            "guidance_scale": 7.5,
            "seed": 1,
            "width": args.size,
            "height": args.size,
        }
        pipe = DiffusionPipeline.from_pretrained(str(model))
        pipe.set_progress_bar_config(disable=True)
        port = free_port()
        worker = start_worker(model, port, args.threads) if args.subprocess else start_in_process(model, port)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
                http_job(client, body), direct_job(pipe, body)  # warm both
                direct, http = [], []
                for _ in range(args.runs):
                    direct.append(direct_job(pipe, body))
                    http.append(http_job(client, body))
        finally:
            if args.subprocess:
                worker.terminate()
                worker.wait(30)
            else:
                worker.should_exit = True
    d, h = statistics.median(direct), statistics.median(http)
    print(
        json.dumps(
            {
                "model": str(args.model_path or "tiny sd15"),
                "size": args.size,
                "steps": args.steps,
                "runs": args.runs,
                "torch_threads": torch.get_num_threads(),
                "cpus": os.cpu_count(),
                "worker": "subprocess" if args.subprocess else "in-process uvicorn",
            }
        )
    )
    print(f"direct diffusers call   median {d * 1000:8.1f} ms")
    print(f"HTTP + SSE end to end   median {h * 1000:8.1f} ms")
    print(f"ratio (goal <= 1.03)           {h / d:8.3f}")


if __name__ == "__main__":
    main()
