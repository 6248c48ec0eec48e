"""The worker on a real local Ray Serve instance: 2 CPU replicas of the demo model behind Serve's HTTP proxy.

One Ray instance for the module (starting Ray and replicas costs most of the runtime); the fixed two-replica app
serves the tests in file order (the replica-killing test last), then the autoscaling test redeploys it. Killing a
replica and autoscaling wait for Serve to replace or add replicas (tens of seconds on 2 cores): they are `slow`,
which CI runs in a second pass; the default run keeps every routing, streaming, cancel and drain check.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray
import yaml
from ray import serve
from ray.serve.schema import ServeDeploySchema

from tests.support import free_port, parse_sse
from worker.config import Settings
from worker.deploy.affinity import replica_tag
from worker.deploy.options import FleetOptions, deployment_options, max_ongoing_requests
from worker.deploy.replica import DEPLOYMENT, SdWorkerReplica

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parent.parent
FAST_METRICS = {  # autoscaling metrics every 0.5 s instead of 10 s, so a burst is seen within the test
    "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5",
    "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5",
}
SETTINGS = Settings(device="cpu", sd_version="demo", max_queue=8, drain_timeout=5)
JOB = {"prompt": "a red circle on a blue background", "steps": 8}
JSON = {"Accept": "application/json"}


@pytest.fixture(scope="module")
def proxy_url() -> Iterator[str]:
    """A local Ray instance (2 CPUs, small object store) with Serve's proxy on a free port."""
    saved = {name: os.environ.get(name) for name in FAST_METRICS}
    os.environ.update(FAST_METRICS)  # read by the Serve actors that ray.init's local instance starts
    # Ray's session files go to a short folder of their own (its Unix socket paths must stay under 108 bytes),
    # removed afterwards, rather than piling up in /tmp/ray
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024**2, log_to_driver=False,
             _temp_dir=temp)  # fmt: skip
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def deploy(fleet: FleetOptions) -> None:
    """(Re)deploy app "fleet" with the options the CLI derives (`serve.run` replaces every replica)."""
    options = deployment_options(SETTINGS, fleet, gpu=False)
    serve.run(SdWorkerReplica.options(**options).bind(SETTINGS), name="fleet")


@pytest.fixture(scope="module")
def fleet(proxy_url: str) -> str:
    """Two fixed CPU replicas of the demo model (half a CPU each), deployed as app "fleet"."""
    deploy(FleetOptions(replicas=2, replica_cpus=0.5))
    return proxy_url


def replica_count(app: str) -> int:
    """Running replicas of the worker deployment in `app`."""
    status = serve.status().applications[app].deployments[DEPLOYMENT]
    return sum(count for state, count in status.replica_states.items() if state == "RUNNING")


async def test_concurrent_requests_all_succeed_on_both_replicas(fleet: str) -> None:
    async with httpx.AsyncClient(base_url=fleet, timeout=120) as client:
        responses = await asyncio.gather(*(
            client.post("/execute", json={**JOB, "seed": seed}, headers=JSON) for seed in range(8)
        ))  # fmt: skip
        assert [r.status_code for r in responses] == [200] * 8
        assert [r.json()["seed"] for r in responses] == list(range(8))
        workers = {r.headers["x-worker-id"] for r in responses}
        assert len(workers) == 2, workers
        health = await client.get("/health")
        assert len(health.headers.get_list("x-request-id")) == 1  # the proxy's; the worker took the same id
        assert health.json()["worker_id"] == health.headers["x-worker-id"] in workers


async def test_sse_streams_through_the_proxy_event_by_event(fleet: str) -> None:
    arrivals: list[tuple[float, str]] = []
    async with (
        httpx.AsyncClient(base_url=fleet, timeout=120) as client,
        client.stream("POST", "/execute", json={**JOB, "steps": 30}) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        async for chunk in response.aiter_text():
            arrivals += [(time.monotonic(), name) for name, _ in parse_sse(chunk)]
    names = [name for _, name in arrivals]
    assert names.count("progress") == 30 and names[-1] == "complete"
    assert names.index("progress") < names.index("complete")
    first_progress = next(t for t, name in arrivals if name == "progress")
    distinct = {round(t, 3) for t, name in arrivals if name == "progress"}
    # streamed as the steps happen: the first step is seen well before the end, in many separate arrivals
    assert arrivals[-1][0] - first_progress > 0.1
    assert len(distinct) >= 10


async def test_cancel_and_job_lookups_reach_the_replica_holding_the_job(fleet: str) -> None:
    async with httpx.AsyncClient(base_url=fleet, timeout=120) as client:
        async with client.stream("POST", "/execute", json={**JOB, "steps": 150}) as response:
            owner, job_id = response.headers["x-worker-id"], response.headers["x-job-id"]
            assert job_id.startswith(replica_tag(owner.rsplit("-", 1)[1]))
            events: list[tuple[str, dict[str, Any]]] = []
            chunks = response.aiter_text()
            async for chunk in chunks:
                events += parse_sse(chunk)
                if any(name == "progress" for name, _ in events):
                    break
            # six look-ups, all answered by the owner: a router ignoring the id would miss one with odds 63/64
            for _ in range(6):
                looked_up = await client.get(f"/v1/jobs/{job_id}")
                assert looked_up.status_code == 200 and looked_up.headers["x-worker-id"] == owner
            cancelled = await client.delete(f"/v1/jobs/{job_id}")
            assert cancelled.status_code in (200, 202) and cancelled.headers["x-worker-id"] == owner
            async for chunk in chunks:
                events += parse_sse(chunk)
        name, data = events[-1]
        assert name == "error" and data["code"] == "cancelled"
        final = (await client.get(f"/v1/jobs/{job_id}")).json()
        assert final["status"] == "cancelled" and final["progress"]["step"] < 150


async def test_a_client_leaving_through_the_proxy_cancels_its_job(fleet: str) -> None:
    async with httpx.AsyncClient(base_url=fleet, timeout=120) as client:
        async with client.stream("POST", "/execute", json={**JOB, "steps": 150}) as response:
            job_id = response.headers["x-job-id"]
            async for chunk in response.aiter_text():
                if "event: progress" in chunk:
                    break  # leave mid-denoising: the proxy cancels the request on the replica
        deadline = time.monotonic() + 30
        while (job := (await client.get(f"/v1/jobs/{job_id}")).json())["status"] != "cancelled":
            assert time.monotonic() < deadline, job["status"]
            await asyncio.sleep(0.1)
        assert job["progress"]["step"] < 150


@pytest.mark.slow
async def test_killing_a_replica_loses_only_its_own_requests_and_serve_replaces_it(fleet: str) -> None:
    async with httpx.AsyncClient(base_url=fleet, timeout=120) as client:
        before = {(await client.get("/health")).headers["x-worker-id"] for _ in range(12)}
        assert len(before) == 2

        async def generate(seed: int, admitted: asyncio.Queue[str]) -> tuple[str, str]:
            try:
                async with client.stream("POST", "/execute", json={**JOB, "steps": 40, "seed": seed}) as response:
                    worker = response.headers["x-worker-id"]
                    await admitted.put(worker)
                    text = "".join([chunk async for chunk in response.aiter_text()])
            except httpx.HTTPError:
                return worker, "broken"
            events = parse_sse(text)
            return worker, events[-1][0] if events else "empty"

        admitted: asyncio.Queue[str] = asyncio.Queue()
        tasks = [asyncio.create_task(generate(seed, admitted)) for seed in range(8)]
        holders = [await admitted.get() for _ in tasks]  # every request admitted (headers sent) before the kill
        # a burst can all land on one replica (the router's queue lengths are cached): add requests one at a time
        # until the other replica holds some too, so the kill has survivors to check
        for seed in range(8, 24):
            if len(set(holders)) == 2:
                break
            tasks.append(asyncio.create_task(generate(seed, admitted)))
            holders.append(await admitted.get())
        assert len(set(holders)) == 2, holders
        victim = holders[0]
        ray.kill(ray.get_actor(f"SERVE_REPLICA::fleet#{DEPLOYMENT}#{victim.rsplit('-', 1)[1]}", namespace="serve"))
        outcomes = await asyncio.gather(*tasks)
        survivors = [outcome for worker, outcome in outcomes if worker != victim]
        assert survivors and survivors == ["complete"] * len(survivors), outcomes

        deadline = time.monotonic() + 90
        while replica_count("fleet") < 2 or not await answered_by_new_replica(client, before):
            assert time.monotonic() < deadline, "Serve never brought a replacement replica up"
            await asyncio.sleep(0.5)


async def answered_by_new_replica(client: httpx.AsyncClient, known: set[str]) -> bool:
    """True once a generation through the proxy lands on a replica not in `known` (a few tries: two choices)."""
    for _ in range(8):
        response = await client.post("/execute", json={**JOB, "steps": 2}, headers=JSON)
        if response.status_code == 200 and response.headers["x-worker-id"] not in known:
            return True
    return False


@pytest.mark.slow
async def test_autoscaling_adds_a_replica_under_a_burst_and_removes_it_when_idle(fleet: str) -> None:
    deploy(FleetOptions(
        min_replicas=1, max_replicas=2, target_ongoing_requests=1, replica_cpus=0.5,
        upscale_delay_s=0.5, downscale_delay_s=2, look_back_period_s=1, metrics_interval_s=0.5,
    ))  # fmt: skip
    assert replica_count("fleet") == 1  # serve.run returns once the new version's min_replicas are up
    async with httpx.AsyncClient(base_url=fleet, timeout=120) as client:
        stop = asyncio.Event()

        async def keep_busy() -> None:
            while not stop.is_set():
                await client.post("/execute", json={**JOB, "steps": 20}, headers=JSON)

        burst = [asyncio.create_task(keep_busy()) for _ in range(3)]
        await until(lambda: replica_count("fleet") == 2, "the burst never scaled the deployment up to 2")
        seen: set[str] = set()
        deadline = time.monotonic() + 30
        while len(seen) < 2:  # the proxy hears of the new replica shortly after the controller counts it
            assert time.monotonic() < deadline, f"the added replica took no requests: {seen}"
            seen.add((await client.get("/health")).headers["x-worker-id"])
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*burst)
    await until(lambda: replica_count("fleet") == 1, "the deployment never scaled back down after the burst")


async def until(condition: Callable[[], bool], failure: str, timeout: float = 90) -> None:
    """Poll `condition` twice a second until true; fail with `failure` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, failure
        await asyncio.sleep(0.5)


def test_serve_config_file_deploys_the_worker_with_autoscaling() -> None:
    config = ServeDeploySchema.model_validate(yaml.safe_load((ROOT / "deploy" / "ray-serve.yaml").read_text()))
    (app,) = config.applications
    assert app.import_path == "worker.deploy.replica:build"
    (deployment,) = app.deployments
    assert deployment.name == DEPLOYMENT
    assert deployment.autoscaling_config["max_replicas"] > deployment.autoscaling_config["min_replicas"]
    settings = Settings(**app.args)
    assert deployment.max_ongoing_requests == max_ongoing_requests(settings)


async def test_removing_replicas_lets_their_running_streams_finish(fleet: str) -> None:
    async with (
        httpx.AsyncClient(base_url=fleet, timeout=120) as client,
        client.stream("POST", "/execute", json={**JOB, "steps": 60}) as response,
    ):
        chunks = response.aiter_text()
        text = ""
        async for chunk in chunks:
            text += chunk
            if "event: progress" in text:
                break
        # deleting the app removes every replica the way a downscale removes one: Serve stops routing to it,
        # waits for its ongoing requests, then the worker's own shutdown drains the engine
        removal = asyncio.create_task(asyncio.to_thread(serve.delete, "fleet"))
        async for chunk in chunks:
            text += chunk
        await removal
    assert parse_sse(text)[-1][0] == "complete"
