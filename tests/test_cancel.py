"""Cancellation (client disconnect, DELETE), the bounded queue and 429s, against real servers."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx

from tests.support import live_server, parse_sse, slow_denoiser, worker_settings

JSON = {"Accept": "application/json"}
SMALL = {"width": 64, "height": 64, "scheduler": "ddim"}


async def wait_status(client: httpx.AsyncClient, job_id: str, status: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        view: dict[str, Any] = (await client.get(f"/v1/jobs/{job_id}")).json()
        if view["status"] == status:
            return view
        assert time.monotonic() < deadline, f"job stayed {view['status']}"
        await asyncio.sleep(0.05)


async def test_disconnect_cancels_the_job_within_one_step(backend_for: Any, tiny_model: Any) -> None:
    backend = backend_for("sd15")
    settings = worker_settings("sd15", tiny_model("sd15"))
    with live_server(settings, backend) as url, slow_denoiser(backend, 0.1) as (unet, decoder):
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            body = {**SMALL, "prompt": "a cat", "steps": 50}
            async with client.stream("POST", "/execute", json=body) as response:
                job_id = response.headers["x-job-id"]
                progress = 0
                async for line in response.aiter_lines():
                    if line == "event: progress":
                        progress += 1
                        if progress == 2:
                            break
            calls_at_disconnect = unet.count
            view = await wait_status(client, job_id, "cancelled")
            await asyncio.sleep(0.3)  # anything still running would show up now
    assert calls_at_disconnect >= 2
    assert unet.count <= 3, f"{unet.count} denoiser calls after disconnecting at step 2"
    assert decoder.count == 0, "the VAE decode must be skipped"
    assert view["error"]["code"] == "cancelled"


async def test_delete_cancels_a_running_job(client_for: Any, backend_for: Any) -> None:
    async with client_for("sd15") as client:
        with slow_denoiser(backend_for("sd15"), 0.05) as (unet, decoder):
            body = {**SMALL, "prompt": "a cat", "steps": 40}
            task = asyncio.create_task(client.post("/execute", json=body, headers=JSON))
            while not (jobs := [j for j in await _jobs(client) if j["status"] == "running"]):
                await asyncio.sleep(0.02)
            deleted = await client.delete(f"/v1/jobs/{jobs[0]['job_id']}")
            assert deleted.status_code == 202
            response = await task
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "cancelled"
    assert unet.count < 40 and decoder.count == 0


async def test_delete_of_a_running_job_says_cancelling_until_it_has_stopped(client_for: Any, backend_for: Any) -> None:
    denoiser = backend_for("sd15").model.denoiser
    inside, release = threading.Event(), threading.Event()

    def hold(*_: Any) -> None:  # the job stays inside one step until the test lets it go
        inside.set()
        release.wait(30)

    handle = denoiser.register_forward_hook(hold)
    try:
        async with client_for("sd15") as client:
            task = asyncio.create_task(
                client.post("/execute", json={**SMALL, "prompt": "a", "steps": 10}, headers=JSON)
            )
            assert await asyncio.to_thread(inside.wait, 30)
            job_id = (await _jobs(client))[0]["job_id"]
            deleted = await client.delete(f"/v1/jobs/{job_id}")
            assert (deleted.status_code, deleted.json()["status"]) == (202, "cancelling")
            assert (await client.get(f"/v1/jobs/{job_id}")).json()["status"] == "cancelling"
            handle.remove()
            release.set()
            assert (await task).json()["error"]["code"] == "cancelled"
            await wait_status(client, job_id, "cancelled")
            again = await client.delete(f"/v1/jobs/{job_id}")
            assert (again.status_code, again.json()["status"]) == (200, "cancelled")
            after = await client.post("/execute", json={**SMALL, "prompt": "b", "steps": 2}, headers=JSON)
            assert after.status_code == 200
    finally:
        handle.remove()
        release.set()


async def test_a_queued_job_whose_client_left_never_runs(backend_for: Any, tiny_model: Any) -> None:
    backend = backend_for("sd15")
    settings = worker_settings("sd15", tiny_model("sd15"))
    with live_server(settings, backend) as url, slow_denoiser(backend, 0.05) as (unet, _):
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            first = asyncio.create_task(
                client.post("/execute", json={**SMALL, "prompt": "a", "steps": 10}, headers=JSON)
            )
            while unet.count == 0:
                await asyncio.sleep(0.01)
            async with client.stream("POST", "/execute", json={**SMALL, "prompt": "b", "steps": 10}) as response:
                second_id = response.headers["x-job-id"]
                async for line in response.aiter_lines():
                    if line == "event: queued":
                        break
            assert (await first).status_code == 200
            view = await wait_status(client, second_id, "cancelled")
    assert unet.count == 10, "only the first job may have run"
    assert view["started_at"] is None


async def test_delete_a_queued_job(client_for: Any, backend_for: Any) -> None:
    async with client_for("sd15") as client:
        with slow_denoiser(backend_for("sd15"), 0.05) as (unet, _):
            first = asyncio.create_task(
                client.post("/execute", json={**SMALL, "prompt": "a", "steps": 8}, headers=JSON)
            )
            while unet.count == 0:
                await asyncio.sleep(0.01)
            second = asyncio.create_task(client.post("/execute", json={**SMALL, "prompt": "b", "steps": 8}))
            jobs = await _jobs(client)
            while sorted(j["status"] for j in jobs) != ["queued", "running"]:
                await asyncio.sleep(0.01)
                jobs = await _jobs(client)
            queued = next(j for j in jobs if j["status"] == "queued")
            await client.delete(f"/v1/jobs/{queued['job_id']}")
            events = parse_sse((await second).text)
            assert (await first).status_code == 200
    assert events[-1] == (
        "error",
        {"job_id": queued["job_id"], "code": "cancelled", "message": "cancelled by DELETE /v1/jobs"},
    )
    assert unet.count == 8


async def test_full_queue_answers_429_and_every_admitted_job_completes(client_for: Any, backend_for: Any) -> None:
    async with client_for("sd15", max_queue=1) as client:
        with slow_denoiser(backend_for("sd15"), 0.03):
            bodies = [{**SMALL, "prompt": f"cat {i}", "steps": 5, "seed": i} for i in range(6)]
            responses = await asyncio.gather(*(client.post("/execute", json=b, headers=JSON) for b in bodies))
    statuses = sorted(r.status_code for r in responses)
    assert 429 in statuses and 200 in statuses
    assert set(statuses) == {200, 429}
    for response in responses:
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) >= 1
            assert response.json()["error"]["code"] == "queue_full"
        else:
            assert response.json()["images"]


async def _jobs(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = (await client.get("/v1/jobs")).json()["jobs"]
    return jobs
