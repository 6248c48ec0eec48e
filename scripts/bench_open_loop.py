"""Open-loop benchmark of --batching off | window | continuous, all in one run on one loaded model.

Jobs arrive as a Poisson process at fractions of the solo capacity (measured first, with the same job mix),
and nobody waits for a result before sending the next: this is the load a shared worker sees. Each job draws
its steps and guidance from the mix (default 10/20/30 steps, guidance 0/4/7; demo model, 64²). Every mode
sees the very same arrival times and jobs. Printed per load and mode: throughput (jobs/s over the whole run),
p50 and p99 latency (submit → result, encoding included), and mean images per denoiser call.

    .venv/bin/python scripts/bench_open_loop.py --jobs 60 --loads 0.5,0.8,1.0,1.5
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import dataclass
from typing import Any

import torch

from worker.backends.resolver import create_backend
from worker.config import Batching, Settings
from worker.engine.engine import Engine, build_engine
from worker.engine.job import Job
from worker.engine.protocol import GenerationParams

MODES: tuple[Batching, ...] = ("off", "window", "continuous")


@dataclass(frozen=True)
class Arrival:
    """One job of the workload: when it arrives (s after the start) and what it asks for."""

    at: float
    steps: int
    guidance: float
    seed: int


def workload(jobs: int, rate: float, steps: list[int], guidance: list[float], seed: int) -> list[Arrival]:
    """`jobs` Poisson arrivals at `rate` per second, each with a random steps/guidance pair from the mix."""
    rng = random.Random(seed)
    at, arrivals = 0.0, []
    for index in range(jobs):
        arrivals.append(Arrival(at, rng.choice(steps), rng.choice(guidance), index))
        at += rng.expovariate(rate)
    return arrivals


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def params(arrival: Arrival, size: int) -> GenerationParams:
    """The job an arrival stands for."""
    return GenerationParams(
        prompt="a red circle on a blue square",
        steps=arrival.steps,
        guidance_scale=arrival.guidance,
        seed=arrival.seed,
        width=size,
        height=size,
    )


def wait(jobs: list[Job]) -> None:
    """Block until every job has finished."""
    for job in jobs:
        while not job.status.final:
            time.sleep(0.002)


def play(engine: Engine, arrivals: list[Arrival], size: int) -> dict[str, float]:
    """Submit each arrival at its time; throughput, latencies and occupancy once all are done."""
    requests = [engine.resolve(params(arrival, size)) for arrival in arrivals]
    submitted: list[tuple[Job, float]] = []
    start = time.monotonic()
    for arrival, request in zip(arrivals, requests, strict=True):
        delay = start + arrival.at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        submitted.append((engine.submit(request), time.time()))
    jobs = [job for job, _ in submitted]
    wait(jobs)
    failed = [job.id for job in jobs if job.result is None]
    if failed:
        raise SystemExit(f"{len(failed)} jobs failed: {jobs[0].error}")
    latencies = [(job.finished_at or 0.0) - at for job, at in submitted]
    span = max(job.finished_at or 0.0 for job in jobs) - submitted[0][1]
    histogram = engine.metrics.batch_images
    calls = sum(sample.value for sample in histogram.collect()[0].samples if sample.name.endswith("_count"))
    images = sum(sample.value for sample in histogram.collect()[0].samples if sample.name.endswith("_sum"))
    return {
        "throughput": len(jobs) / span,
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
        "images_per_call": images / calls if calls else 0.0,
    }


def engine_for(backend: Any, mode: Batching) -> Engine:
    """A fresh engine (own queue, executor, metrics) with `mode` on the shared loaded backend."""
    engine = build_engine(Settings(batching=mode, max_queue=10_000, device="cpu"), backend)
    engine.start()
    return engine


def main() -> None:
    """Measure the solo capacity, then every load × mode; print one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=60, help="arrivals per load and mode")
    parser.add_argument("--loads", default="0.5,0.8,1.0,1.5", help="arrival rates as fractions of solo capacity")
    parser.add_argument("--steps", default="10,20,30")
    parser.add_argument("--guidance", default="0,4,7")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--calibration-jobs", type=int, default=9, help="jobs run one by one for the capacity")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps = [int(s) for s in args.steps.split(",")]
    guidance = [float(g) for g in args.guidance.split(",")]
    backend = create_backend(Settings(device="cpu"))  # the bundled demo model
    backend.load()

    engine = engine_for(backend, "off")
    calibration = workload(args.calibration_jobs, 1.0, steps, guidance, args.seed + 1)
    started = time.monotonic()
    for arrival in calibration:
        wait([engine.submit(engine.resolve(params(arrival, args.size)))])
    service = (time.monotonic() - started) / len(calibration)
    engine.stop()
    capacity = 1.0 / service
    print(f"solo capacity: {capacity:.2f} jobs/s ({service * 1000:.0f} ms per job), {args.threads} torch threads")
    print(f"{'load':>5} {'mode':>11} {'jobs/s':>7} {'p50 s':>7} {'p99 s':>7} {'img/call':>8}")
    for load in (float(x) for x in args.loads.split(",")):
        arrivals = workload(args.jobs, load * capacity, steps, guidance, args.seed)
        results = {}
        for mode in MODES:
            engine = engine_for(backend, mode)
            try:
                results[mode] = result = play(engine, arrivals, args.size)
            finally:
                engine.stop()
            print(
                f"{load:>5.2f} {mode:>11} {result['throughput']:>7.2f} {result['p50']:>7.2f} {result['p99']:>7.2f}"
                f" {result['images_per_call']:>8.2f}",
                flush=True,
            )
        cont, window = results["continuous"], results["window"]
        print(
            f"      continuous/window: throughput {cont['throughput'] / window['throughput']:.2f}×,"
            f" p50 {cont['p50'] / window['p50']:.2f}×, p99 {cont['p99'] / window['p99']:.2f}×",
            flush=True,
        )


if __name__ == "__main__":
    main()
