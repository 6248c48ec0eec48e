"""Ray Serve fleet vs a plain worker with the demo model on this machine, in one run: throughput of 1 and 2
replicas, and what Serve's proxy adds to one request.

    python scripts/bench_ray.py [--steps 20] [--requests 16] [--clients 4] [--runs 8]

Setups, all on the same 2 CPUs: a plain `sd-worker` process (2 torch threads); Ray Serve with 1 replica of 2 CPUs;
Ray Serve with 2 replicas of 1 CPU each (Ray sets a replica's OMP_NUM_THREADS to its CPUs). The plain worker and
the 1-replica fleet run side by side and their single requests alternate, so the proxy's cost (one generation
alone, and one `GET /health`: the HTTP path without the model) is measured under the same load. Throughput is
images/s for `--requests` generations from `--clients` concurrent clients. The load average is printed: on a
shared machine the absolute numbers move, the same-run differences less.
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
BODY = {"prompt": "a red circle on a blue background", "seed": 1}


def timed_ms(client: httpx.Client, method: str, path: str, body: dict[str, Any] | None) -> float:
    """Wall time of one request, in milliseconds."""
    start = time.perf_counter()
    client.request(method, path, json=body, headers=JSON).raise_for_status()
    return (time.perf_counter() - start) * 1000


def alternating_medians(urls: list[str], method: str, path: str, body: dict[str, Any] | None, runs: int) -> list[float]:
    """Median time of one request to each URL, the URLs taking turns (after one warm-up each)."""
    times: list[list[float]] = [[] for _ in urls]
    clients = [httpx.Client(base_url=url, timeout=300) for url in urls]
    for run in range(runs + 1):
        for client, samples in zip(clients, times, strict=True):
            took = timed_ms(client, method, path, body)
            if run:
                samples.append(took)
    for client in clients:
        client.close()
    return [statistics.median(samples) for samples in times]


async def throughput(url: str, body: dict[str, Any], requests: int, clients: int) -> tuple[float, int]:
    """Images per second for `requests` generations shared by `clients` concurrent clients; workers that served."""
    todo = list(range(requests))
    workers: set[str] = set()

    async def client_loop(client: httpx.AsyncClient) -> None:
        while todo:
            response = await client.post("/execute", json={**body, "seed": todo.pop()}, headers=JSON)
            response.raise_for_status()
            workers.add(response.headers.get("x-worker-id", "?"))

    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
        return requests / (time.perf_counter() - start), len(workers)


def main() -> None:
    """Start the plain worker and the fleet, measure, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--runs", type=int, default=8)
    args = parser.parse_args()
    body = {**BODY, "steps": args.steps}
    load_before = os.getloadavg()[0]

    import ray
    from ray import serve

    from worker.config import Settings
    from worker.deploy.options import FleetOptions
    from worker.deploy.replica import application

    plain_port, proxy_port = free_port(), free_port()
    plain_url, proxy_url = f"http://127.0.0.1:{plain_port}", f"http://127.0.0.1:{proxy_port}"
    worker = start_worker(None, plain_port, threads=2)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024**2, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": proxy_port})
    settings = Settings(device="cpu", sd_version="demo")
    try:
        serve.run(application(settings, FleetOptions(replicas=1, replica_cpus=2), gpu=False), name="bench")
        job_ms = alternating_medians([plain_url, proxy_url], "POST", "/execute", body, args.runs)
        health_ms = alternating_medians([plain_url, proxy_url], "GET", "/health", None, args.runs * 4)
        plain = asyncio.run(throughput(plain_url, body, args.requests, args.clients))
        one = asyncio.run(throughput(proxy_url, body, args.requests, args.clients))
        serve.delete("bench")  # a rolling update would wait for the CPUs the old replica still holds
        serve.run(application(settings, FleetOptions(replicas=2, replica_cpus=1), gpu=False), name="bench")
        two = asyncio.run(throughput(proxy_url, body, args.requests, args.clients))
    finally:
        worker.terminate()
        serve.shutdown()
        ray.shutdown()
        worker.wait(60)

    print(f"\ndemo model, 64x64, {args.steps} steps; {args.requests} requests from {args.clients} clients")
    print(
        f"load average (1 min) before: {load_before:.1f}, after: {os.getloadavg()[0]:.1f}, on {os.cpu_count()} CPUs\n"
    )
    print("| setup                    | images/s | replicas that served |")
    print("|--------------------------|----------|----------------------|")
    for name, (rate, served) in (("plain worker, 2 threads", plain), ("Ray Serve, 1 x 2 CPUs", one),
                                 ("Ray Serve, 2 x 1 CPU", two)):  # fmt: skip
        print(f"| {name:<24} | {rate:>8.2f} | {served:>20} |")
    print(f"\nthroughput, 2 replicas / 1 replica: {two[0] / one[0]:.2f}x")
    print("\n| one request alone (median) | plain worker | through Serve's proxy | proxy adds |")
    print("|----------------------------|--------------|-----------------------|------------|")
    for name, (direct, proxied) in (("generation, ms", job_ms), ("GET /health, ms", health_ms)):
        print(f"| {name:<26} | {direct:>12.1f} | {proxied:>21.1f} | {proxied - direct:>+10.1f} |")


if __name__ == "__main__":
    main()
