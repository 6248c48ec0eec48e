"""Jobs that outlive their connection: `Prefer: respond-async`, resumable event streams, stream tokens, CORS."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import live_server, parse_sse, slow_denoiser, worker_settings

BODY = {"prompt": "a lighthouse", "steps": 3, "width": 64, "height": 64, "seed": 21, "num_samples": 2}
ASYNC = {"Prefer": "respond-async"}


@pytest.fixture(scope="module")
def server(backend_for: Any, tiny_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    state = tmp_path_factory.mktemp("state")
    settings = worker_settings("sd15", tiny_model("sd15"), state_dir=state)
    with live_server(settings, backend_for("sd15")) as url:
        yield url


def poll(url: str, timeout: float = 60.0) -> dict[str, Any]:
    """GET a job until it is final (each poll a fresh connection)."""
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = httpx.get(url).json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def test_respond_async_answers_202_and_the_job_runs_without_its_client(server: str) -> None:
    with httpx.Client(base_url=server) as client:  # closed right after the 202
        accepted = client.post("/execute", json=BODY, headers=ASYNC)
    assert accepted.status_code == 202
    body = accepted.json()
    assert accepted.headers["location"] == body["location"] == f"/v1/jobs/{body['job_id']}"
    assert body["status"] == "queued" and accepted.headers["preference-applied"] == "respond-async"
    job = poll(server + body["location"])
    assert job["status"] == "completed" and job["seeds"] == [21, 22]
    sync = httpx.post(f"{server}/execute", json=BODY, headers={"Accept": "application/json"}, timeout=60)
    assert job["result"]["images"] == sync.json()["images"]  # byte for byte (PNG, metadata included)


def test_a_plain_request_still_cancels_when_its_client_leaves(server: str) -> None:
    with (
        httpx.Client(base_url=server) as client,
        client.stream("POST", "/execute", json={**BODY, "steps": 40}) as stream,
    ):
        job_id = stream.headers["x-job-id"]
        next(stream.iter_lines())
    assert poll(f"{server}/v1/jobs/{job_id}")["status"] == "cancelled"


def test_events_resume_after_last_event_id_and_end_with_204(server: str) -> None:
    accepted = httpx.post(f"{server}/execute", json=BODY, headers={**ASYNC}).json()
    poll(server + accepted["location"])
    events_url = server + accepted["events"]
    full = httpx.get(events_url)
    ids = [int(line[4:]) for line in full.text.splitlines() if line.startswith("id: ")]
    names = [name for name, _ in parse_sse(full.text)]
    assert names[0] == "queued" and names[-1] == "complete" and ids == list(range(len(ids)))
    resumed = httpx.get(events_url, headers={"Last-Event-ID": str(ids[-3])})
    assert [name for name, _ in parse_sse(resumed.text)] == names[-2:]
    assert [int(line[4:]) for line in resumed.text.splitlines() if line.startswith("id: ")] == ids[-2:]
    done = httpx.get(events_url, headers={"Last-Event-ID": str(ids[-1])})
    assert done.status_code == 204 and done.content == b""


async def test_a_stream_token_opens_that_jobs_events_only(client_for: Any) -> None:
    async with client_for("sd15", api_key="k3y") as client:
        auth = {"Authorization": "Bearer k3y"}
        first = (await client.post("/execute", json=BODY, headers={**auth, **ASYNC})).json()
        second = (await client.post("/execute", json=BODY, headers={**auth, **ASYNC})).json()
        # an EventSource sends no headers: the token in the query is enough, for this job's events only
        events = await client.get(f"{first['events']}?token={first['stream_token']}")
        assert events.status_code == 200 and parse_sse(events.text)[-1][0] == "complete"
        assert (await client.get(f"{second['events']}?token={first['stream_token']}")).status_code == 401
        assert (await client.get(f"{first['location']}?token={first['stream_token']}")).status_code == 401
        assert (await client.get(first["events"])).status_code == 401
        assert (await client.get(f"{second['events']}?token={second['stream_token']}")).status_code == 200


async def test_cors_preflight_allows_any_requested_header(client_for: Any) -> None:
    async with client_for("sd15", cors_origin=["https://app.example"], api_key="k") as client:
        asked = "authorization, content-type, x-stainless-os, x-stainless-lang, openai-organization, last-event-id"
        preflight = await client.options("/v1/images/generations", headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": asked,
        })  # fmt: skip
        assert preflight.status_code == 200
        allowed = preflight.headers["access-control-allow-headers"].lower()
        assert all(name in allowed for name in ("x-stainless-os", "openai-organization", "last-event-id"))
        stranger = await client.options("/v1/images/generations", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-stainless-os",
        })  # fmt: skip
        assert stranger.status_code == 400  # the origins stay an allowlist


async def test_a_job_interrupted_twice_is_failed_with_the_reason(client_for: Any, tmp_path: Path) -> None:
    from worker.journal import JobJournal

    journal = JobJournal(tmp_path)
    journal.accept("ab" * 16, "txt2img", {**BODY, "num_samples": 1}, None)
    journal.running("ab" * 16)
    journal.requeue("ab" * 16, 1)  # one restart already found it running
    journal.running("ab" * 16)
    journal.close()
    async with client_for("sd15", state_dir=tmp_path) as client:
        job = (await client.get(f"/v1/jobs/{'ab' * 16}")).json()
        assert job["status"] == "failed" and "restarted 2 times" in job["error"]["message"]
        events = await client.get(f"/v1/jobs/{'ab' * 16}/events")
        assert parse_sse(events.text)[-1][0] == "error"
        await asyncio.sleep(0)


async def test_jobs_a_killed_worker_left_in_its_journal_run_after_a_restart(
    client_for: Any, backend_for: Any, tmp_path: Path
) -> None:
    # Fast form of test_crash_recovery (a real `sd-worker` SIGKILLed, `-m slow`): the journal is copied as it stands
    # while one job runs and three wait, the way a kill leaves it, and a new app starts on the copy.
    bodies = [{**BODY, "num_samples": 1, "seed": 300 + i} for i in range(4)]
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    async with client_for("sd15", state_dir=tmp_path / "live", max_batch=1) as client:  # alone: exact bytes
        with slow_denoiser(backend_for("sd15"), 0.2):
            ids = [(await client.post("/execute", json=body, headers=ASYNC)).json()["job_id"] for body in bodies]
            while (await client.get(f"/v1/jobs/{ids[0]}")).json()["status"] != "running":
                await asyncio.sleep(0.01)
            with (
                sqlite3.connect(tmp_path / "live" / "jobs.sqlite3") as live,
                sqlite3.connect(crashed / "jobs.sqlite3") as copy,
            ):
                live.backup(copy)  # one consistent snapshot, as a SIGKILL leaves the file
                left = dict(copy.execute("SELECT id, status FROM jobs").fetchall())
            assert [left[job_id] for job_id in ids] == ["running", "queued", "queued", "queued"]
            for job_id in ids:
                await client.delete(f"/v1/jobs/{job_id}")
    async with client_for("sd15", state_dir=crashed, max_batch=1) as client:
        jobs = [await poll_async(client, f"/v1/jobs/{job_id}") for job_id in ids]
        assert [job["status"] for job in jobs] == ["completed"] * 4
        for body, job in zip(bodies, jobs, strict=True):
            clean = await client.post("/execute", json=body, headers={"Accept": "application/json"})
            assert job["result"]["images"] == clean.json()["images"]  # same seeds → the same bytes


async def poll_async(client: httpx.AsyncClient, path: str, timeout: float = 60.0) -> dict[str, Any]:
    """GET a job through an in-process client until it is final."""
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = (await client.get(path)).json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.05)
