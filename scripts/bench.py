"""Throughput benchmark, in one run: serving overhead, cross-request batching, latency under load, encode cost.

    python scripts/bench.py [--models tiny,demo] [--concurrency 4,8] [--jobs 3] [--reps 2] [--runs 8]

For each model it loads one backend and serves it with two apps under in-process uvicorn servers (the servers
and the direct calls share one torch thread pool, so two workers never fight over the cores): the default
settings (batching on) and `--max-batch 1` (off). It prints, as a markdown table:

  (a) HTTP+SSE end to end ÷ the direct diffusers call with the same arguments (medians, runs interleaved), the
      client in a small process of its own (an in-process client takes this process's GIL for every event);
  (b) N concurrent clients (closed loop: each sends its next job when its last one completes, `--jobs` each),
      throughput with batching on ÷ off, phases interleaved on/off/off/on…;
  (c) p50/p99 latency of those jobs, on and off;
  (d) what encoding costs at 512² and 1024²: PNG at the default level and at zlib 6, JPEG and WebP (q90), each
      with base64, on an image the model made; and the default PNG's share of that request's time.

On CPU: the tiny SD1.5 pipeline and the bundled demo model at 64²×20, and (d) on the tiny pipeline with one
step and no guidance (the cheapest request at that size, so the share is an upper bound). On CUDA: the demo model
and full-size random-weight SD1.5 (512²×30) and SDXL (1024²×30) architectures built from their real configs
(`bench_gpu.build`), (d) on those two at their own sizes. The first line says which device it ran on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import diffusers
import httpx
import torch
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_tiny_models
from bench_overhead import free_port, wait_ready

from worker import imaging
from worker.api.app import create_app
from worker.backends.resolver import create_backend
from worker.config import Settings
from worker.engine.protocol import GenerationRequest
from worker.pipelines import runner

PROMPTS = ("a red circle on a blue background", "a green square on a yellow background", "a blue triangle")


@dataclass
class Plan:
    """One model to measure: how to load it and the job shape of (a)-(c); (d) sizes and steps."""

    name: str
    sd_version: str
    build: str | None  # None: the family's own source; "tiny": tiny SD1.5; "sd15"/"sdxl": full-size random
    size: int
    steps: int
    encode_sizes: tuple[int, ...] = ()
    encode_steps: int | None = None  # None: `steps`
    encode_guidance: float | None = None  # None: the family's
    folder: Path | None = field(default=None, repr=False)


def plans(device: str, names: list[str]) -> list[Plan]:
    """The models measured on this device."""
    if device == "cuda":
        table = [
            Plan("demo", "demo", None, 64, 20),
            Plan("sd15", "v1-5", "sd15", 512, 30, encode_sizes=(512,)),
            Plan("sdxl", "xl", "sdxl", 1024, 30, encode_sizes=(1024,)),
        ]
    else:
        table = [
            Plan("tiny", "v1-5", "tiny", 64, 20, encode_sizes=(512, 1024), encode_steps=1, encode_guidance=0.0),
            Plan("demo", "demo", None, 64, 20),
        ]
    return [plan for plan in table if plan.name in names]


def build(plan: Plan, tmp: Path) -> Path | None:
    """The model folder of `plan` (built now for random-weight ones)."""
    if plan.build is None:
        return None
    if plan.build == "tiny":
        return make_tiny_models.build("sd15", tmp / "tiny")
    from bench_gpu import build as build_full

    return build_full(plan.build, tmp / plan.build, smoke=False)


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """`app` under uvicorn in a thread of this process; yields its URL once /ready answers 200."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        if not wait_ready(port):
            raise SystemExit("the worker did not become ready")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


async def sse_job(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    """POST a job and read its SSE stream up to the `complete` payload (raises on an `error` event)."""
    async with client.stream("POST", "/execute", json=body) as response:
        event = None
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event in ("complete", "error"):
                data: dict[str, Any] = json.loads(line[6:])
                if event == "error":
                    raise RuntimeError(f"job failed: {data}")
                return data
    raise RuntimeError("the stream ended without a complete event")


# (a)'s client runs in a process of its own: a client in this process would hold this process's GIL while it
# parses each SSE event, and that showed up as 2-4 % "serving overhead" that no real client causes.
CLIENT = """
import sys, time, httpx
with httpx.Client(base_url=sys.argv[1], timeout=3600) as client:
    for _ in sys.stdin:
        start = time.perf_counter()
        with client.stream("POST", "/execute", content=sys.argv[2], headers={"Content-Type": "application/json"}) as r:
            complete = False
            for line in r.iter_lines():
                complete = complete or line == "event: complete"
                if complete and line.startswith("data: "):
                    break
        print(time.perf_counter() - start, flush=True)
"""


class ClientProcess:
    """A blocking HTTP+SSE client in its own process, sending `body` on each `job()`."""

    def __init__(self, url: str, body: dict[str, Any]) -> None:
        command = [sys.executable, "-c", CLIENT, url, json.dumps(body)]
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def job(self) -> float:
        """Seconds from sending the request to having its `complete` payload."""
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write("go\n")
        self._process.stdin.flush()
        return float(self._process.stdout.readline())

    def close(self) -> None:
        """Let the client process end."""
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._process.wait(30)


def lone_job(client: httpx.Client, body: dict[str, Any]) -> tuple[float, str]:
    """(seconds from sending the request to having its `complete` line, the line), with a blocking client."""
    start = time.perf_counter()
    with client.stream("POST", "/execute", json=body) as response:
        complete = False
        for line in response.iter_lines():
            if line == "event: complete":
                complete = True
            elif complete and line.startswith("data: "):
                return time.perf_counter() - start, line[6:]
    raise RuntimeError("the stream ended without a complete event")


async def timed_job(client: httpx.AsyncClient, body: dict[str, Any]) -> float:
    """Seconds from sending the request to having its `complete` payload."""
    start = time.perf_counter()
    await sse_job(client, body)
    return time.perf_counter() - start


async def closed_loop(url: str, body: dict[str, Any], clients: int, jobs: int, phase: int) -> tuple[float, list[float]]:
    """`clients` concurrent clients, each sending `jobs` jobs one after another; (wall seconds, latencies)."""
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=3600, limits=limits) as client:
        latencies: list[float] = []

        async def one_client(c: int) -> None:
            for j in range(jobs):
                job = {**body, "prompt": PROMPTS[(c + j) % len(PROMPTS)], "seed": phase * 10_000 + c * 100 + j}
                latencies.append(await timed_job(client, job))

        start = time.perf_counter()
        await asyncio.gather(*(one_client(c) for c in range(clients)))
        return time.perf_counter() - start, latencies


@contextlib.contextmanager
def denoiser_batches(backend: Any) -> Iterator[list[int]]:
    """Record the batch size of every denoiser call (to report how full the batches were)."""
    sizes: list[int] = []

    def record(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        sample = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
        sizes.append(int(sample.shape[0]))

    handle = backend.model.denoiser.register_forward_pre_hook(record, with_kwargs=True)
    try:
        yield sizes
    finally:
        handle.remove()


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def direct_call(model: Any, request: GenerationRequest) -> float:
    """Seconds for the plain diffusers call the worker makes for `request` (same pipeline object, no hooks)."""
    kwargs = runner.call_kwargs(model, request, "cpu")
    start = time.perf_counter()
    model.variants[request.task](**kwargs)
    return time.perf_counter() - start


def encode_costs(image: Any, repeats: int = 5) -> dict[str, float]:
    """Milliseconds to encode `image` (with metadata) and base64 it, per format, median of `repeats`."""
    text = "a red circle\nSteps: 20, Sampler: DDIM, CFG scale: 7.5, Seed: 1, Size: 512x512, Model: demo"
    echo = {"prompt": "a red circle", "seed": 1}
    variants = {
        "png": ("png", None, imaging.PNG_COMPRESS_LEVEL),
        "png6": ("png", None, 6),
        "jpeg": ("jpeg", None, 6),
        "webp": ("webp", None, 6),
    }
    costs = {}
    for name, (fmt, compression, level) in variants.items():
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            imaging.to_base64(imaging.encode_image(image, fmt, text, echo, compression, level))
            times.append(time.perf_counter() - start)
        costs[name] = statistics.median(times) * 1000
    return costs


class Table:
    """Rows of the markdown table printed at the end (and as they come)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, ...]] = []

    def add(self, *row: str) -> None:
        self.rows.append(row)
        print("  " + " | ".join(row), flush=True)

    def markdown(self) -> str:
        head = ("model", "shape", "measure", "value", "goal")
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


def verdict(value: float, goal: float, higher: bool) -> str:
    met = value >= goal if higher else value <= goal
    return f"{'≥' if higher else '≤'} {goal:g}: {'met' if met else 'NOT met'}"


def measure(plan: Plan, args: argparse.Namespace, device: str, table: Table) -> None:
    """(a)-(d) for one model."""
    settings = Settings(sd_version=plan.sd_version, model_path=plan.folder, device=device, **args.worker)  # type: ignore[arg-type]
    backend = create_backend(settings)
    backend.load()
    family = backend.family
    shape = f"{plan.size}²×{plan.steps}"
    body = {"steps": plan.steps, "width": plan.size, "height": plan.size, "guidance_scale": family.guidance}
    on_app = create_app(settings, backend=backend)
    off_app = create_app(settings.model_copy(update={"max_batch": 1}), backend=backend)
    with serve(on_app) as on_url, serve(off_app) as off_url:
        urls = {"on": on_url, "off": off_url}
        # (a) overhead: a lone client (in its own process), the default (batching-on) worker vs the direct call
        request = GenerationRequest(
            task="txt2img", prompt=PROMPTS[0], negative_prompt=None, steps=plan.steps,
            guidance_scale=family.guidance, seeds=(1,), width=plan.size, height=plan.size, scheduler=None,
            output_format="png",
        )  # fmt: skip
        model = backend.model  # type: ignore[attr-defined]
        lone = {**body, "prompt": PROMPTS[0], "seed": 1}
        client = ClientProcess(on_url, lone)
        try:
            client.job()
            direct_call(model, request)
            direct, http = [], []
            for _ in range(args.runs):
                direct.append(direct_call(model, request))
                http.append(client.job())
        finally:
            client.close()
        d, h = statistics.median(direct), statistics.median(http)
        table.add(plan.name, shape, "(a) HTTP+SSE ÷ direct call, medians", f"{h / d:.3f} ({h * 1000:.0f} / "
                  f"{d * 1000:.0f} ms)", verdict(h / d, 1.03, higher=False))  # fmt: skip
        # (b), (c): closed-loop load, on/off phases interleaved
        for clients in args.concurrency:
            for mode in ("on", "off"):  # warm each batch size once
                asyncio.run(closed_loop(urls[mode], body, clients, 1, phase=0))
            walls: dict[str, float] = {"on": 0.0, "off": 0.0}
            latencies: dict[str, list[float]] = {"on": [], "off": []}
            calls: dict[str, list[int]] = {"on": [], "off": []}
            for rep in range(args.reps):
                for mode in ("on", "off") if rep % 2 == 0 else ("off", "on"):
                    with denoiser_batches(backend) as sizes:
                        wall, lat = asyncio.run(closed_loop(urls[mode], body, clients, args.jobs, phase=rep + 1))
                    walls[mode] += wall
                    latencies[mode] += lat
                    calls[mode] += sizes
            per_call = statistics.mean(calls["on"]) / (2 if family.guidance > 1 else 1)
            jobs = clients * args.jobs * args.reps
            on_rate, off_rate = jobs / walls["on"], jobs / walls["off"]
            goal = verdict(on_rate / off_rate, 1.5, higher=True) if clients == 4 else ""
            table.add(plan.name, shape, f"(b) {clients} clients: throughput on ÷ off", f"{on_rate / off_rate:.2f}× "
                      f"({on_rate:.2f} / {off_rate:.2f} jobs/s; on: {per_call:.1f} jobs a call)", goal)  # fmt: skip
            for mode in ("on", "off"):
                values = latencies[mode]
                p50, p99 = percentile(values, 50), percentile(values, 99)
                table.add(plan.name, shape, f"(c) {clients} clients, batching {mode}: p50 / p99 latency",
                          f"{p50:.2f} / {p99:.2f} s (n={len(values)})", "")  # fmt: skip
        # (d) encoding at big sizes
        with httpx.Client(base_url=on_url, timeout=3600) as client:
            sizes = [int(size) for size in args.encode_sizes.split(",")] if args.encode_sizes else plan.encode_sizes
            for size in sizes:
                steps = plan.encode_steps or plan.steps
                guidance = family.guidance if plan.encode_guidance is None else plan.encode_guidance
                big = {"prompt": PROMPTS[0], "seed": 1, "steps": steps, "width": size, "height": size,
                       "guidance_scale": guidance}  # fmt: skip
                _, line = lone_job(client, big)  # warm this size
                times = [lone_job(client, big)[0] for _ in range(args.encode_runs)]
                result = json.loads(line)
                request_ms = statistics.median(times) * 1000
                costs = encode_costs(imaging.open_upload(imaging.b64decode_field(result["image"], "image"), "i", 10**9))
                share = costs["png"] / request_ms
                table.add(plan.name, f"{size}²×{steps}, cfg {guidance:g}", "(d) encode + base64, ms: "
                          "png (level 1) / png6 / jpeg / webp",
                          " / ".join(f"{costs[k]:.1f}" for k in ("png", "png6", "jpeg", "webp")), "")  # fmt: skip
                table.add(plan.name, f"{size}²×{steps}, cfg {guidance:g}", "(d) default PNG share of the request",
                          f"{100 * share:.2f}% of {request_ms:.0f} ms", "")  # fmt: skip


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,demo,sd15,sdxl", help="which of this device's models")
    parser.add_argument("--concurrency", default="4,8", help="client counts for (b)/(c)")
    parser.add_argument("--jobs", type=int, default=3, help="jobs per client per phase")
    parser.add_argument("--reps", type=int, default=2, help="on/off phase pairs per client count")
    parser.add_argument("--runs", type=int, default=8, help="lone-client runs for (a)")
    parser.add_argument("--encode-runs", type=int, default=2, help="requests per size for (d)")
    parser.add_argument("--encode-sizes", help="sizes for (d), e.g. 64,128 (default: each model's own)")
    parser.add_argument("--steps", type=int, help="denoising steps of (a)-(c) jobs (default: each model's own)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    parser.add_argument("--max-batch", type=int, help="the batching-on worker's --max-batch (default: its default)")
    parser.add_argument("--batch-window-ms", type=float, help="the batching-on worker's --batch-window-ms")
    args = parser.parse_args()
    given = {"max_batch": args.max_batch, "batch_window_ms": args.batch_window_ms}
    args.worker = {key: value for key, value in given.items() if value is not None}
    args.concurrency = [int(n) for n in args.concurrency.split(",")]
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name() if device == "cuda" else f"cpu ({os.cpu_count()} cores)"
    worker = {k: Settings.model_fields[k].default for k in ("max_batch", "batch_window_ms", "png_compression")}
    print(json.dumps({"device": name, "torch": torch.__version__, "diffusers": diffusers.__version__,
                      "torch_threads": torch.get_num_threads(), "jobs_per_client": args.jobs, "reps": args.reps,
                      "worker": {**worker, **args.worker}}), flush=True)  # fmt: skip
    table = Table()
    with tempfile.TemporaryDirectory() as tmp:
        for plan in plans(device, args.models.split(",")):
            plan.steps = args.steps or plan.steps
            plan.folder = build(plan, Path(tmp))
            measure(plan, args, device, table)
    print(f"\ndevice: {name}\n")
    print(table.markdown())


if __name__ == "__main__":
    main()
