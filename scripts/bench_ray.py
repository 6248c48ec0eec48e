"""Ray Serve fleet vs a plain worker with the demo model on this machine, in one run: throughput of 1 and 2
replicas, and what Serve's proxy adds to one request.

    python scripts/bench_ray.py [--steps 20] [--requests 16] [--clients 4] [--runs 8]

Rows, all on the same CPUs: a plain `sd-worker` process (2 torch threads); Ray Serve with 1 replica of 2 CPUs;
Ray Serve with 2 replicas of 1 CPU each (Ray sets each replica's OMP_NUM_THREADS to its CPUs). Per row: median
latency of one generation alone and of one `GET /health` (the HTTP path without the model: the proxy's own
cost), and images/s for `--requests` generations from `--clients` concurrent clients. The machine's load
average is printed before and after: on a shared machine the absolute numbers move, the same-run ratios less.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_overhead import free_port, start_worker

JSON = {"Accept": "application/json"}


def median_ms(url: str, method: str, path: str, body: dict[str, Any] | None, runs: int) -> float:
    """Median wall time of `runs` sequential requests (after one warm-up), in milliseconds."""
    times = []
    with httpx.Client(base_url=url, timeout=300, headers=JSON) as client:
        for run in range(runs + 1):
            start = time.perf_counter()
            response = client.request(method, path, json=body)
            response.raise_for_status()
            if run:
                times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


async def throughput(url: str, body: dict[str, Any], requests: int, clients: int) -> tuple[float, int]:
    """Images per second for `requests` generations shared by `clients` concurrent clients; workers that served."""
    todo = list(range(requests))
    workers: set[str] = set()

    async def client_loop(client: httpx.AsyncClient) -> None:
        while todo:
            seed = todo.pop()
            response = await client.post(
                "/execute", json={**body, "seed": seed}, headers={"Accept": "application/json"}
            )
            response.raise_for_status()
            workers.add(response.headers.get("x-worker-id", "?"))

    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
        return requests / (time.perf_counter() - start), len(workers)


def measure(name: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    """One row of the table."""
    body = {"prompt": "a red circle on a blue background", "steps": args.steps, "seed": 1}
    row = {
        "setup": name,
        "job_ms": median_ms(url, "POST", "/execute", body, args.runs),
        "health_ms": median_ms(url, "GET", "/health", None, args.runs * 4),
    }
    row["images_s"], row["replicas_seen"] = asyncio.run(throughput(url, body, args.requests, args.clients))
    print(f"  measured {name}", file=sys.stderr, flush=True)
    return row


def main() -> None:
    """Run the three setups and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--runs", type=int, default=8)
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows = []

    port = free_port()
    worker = start_worker(None, port, threads=2)
    try:
        rows.append(measure("plain worker, 2 threads", f"http://127.0.0.1:{port}", args))
    finally:
        worker.terminate()
        worker.wait(60)

    import ray
    from ray import serve

    from worker.config import Settings
    from worker.deploy.options import FleetOptions
    from worker.deploy.replica import application

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024**2, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    settings = Settings(device="cpu", sd_version="demo")
    try:
        for replicas, cpus in ((1, 2.0), (2, 1.0)):
            fleet = FleetOptions(replicas=replicas, replica_cpus=cpus)
            serve.run(application(settings, fleet, gpu=False), name="bench")
            rows.append(measure(f"Ray Serve, {replicas} x {cpus:g} CPU", f"http://127.0.0.1:{port}", args))
            serve.delete("bench")  # a rolling update would wait for CPUs the old replica still holds
    finally:
        serve.shutdown()
        ray.shutdown()

    plain, one, two = rows
    print(f"\ndemo model, 64x64, {args.steps} steps; {args.requests} requests from {args.clients} clients")
    print(f"load average before: {load_before[0]:.1f}, after: {os.getloadavg()[0]:.1f} (2 cores)\n")
    print(f"| {'setup':<26} | {'one job ms':>10} | {'/health ms':>10} | {'images/s':>8} | {'replicas served':>15} |")
    print(f"|{'-' * 28}|{'-' * 12}|{'-' * 12}|{'-' * 10}|{'-' * 17}|")
    for row in rows:
        print(
            f"| {row['setup']:<26} | {row['job_ms']:>10.0f} | {row['health_ms']:>10.1f} | {row['images_s']:>8.2f} "
            f"| {row['replicas_seen']:>15} |"
        )
    print(f"\nthroughput 2 replicas / 1 replica: {two['images_s'] / one['images_s']:.2f}x")
    print(f"proxy adds to one job: {one['job_ms'] - plain['job_ms']:+.0f} ms (median, 1 replica vs plain worker)")
    print(f"proxy adds to /health: {one['health_ms'] - plain['health_ms']:+.1f} ms")


if __name__ == "__main__":
    main()
