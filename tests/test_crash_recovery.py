"""A 202 is a promise: a real `sd-worker` SIGKILLed with accepted async jobs finishes them after a restart."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import worker_process

ASYNC = {"Prefer": "respond-async"}
# the demo model (the CLI's default) at its native 64x64; the first job is slow enough to be caught running
BODIES = [{"prompt": f"a red boat {i}", "steps": 100 if i == 0 else 4, "seed": 300 + i} for i in range(4)]


def status(url: str, job_id: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


@pytest.mark.slow  # the fast form, on a copy of a live journal in-process: test_async_jobs
def test_sigkill_with_one_running_and_three_queued_then_restart(tmp_path: Path) -> None:
    # --max-batch 1: each job runs alone, so its bytes equal a clean run's exactly (batched: within 1/255)
    args = [
        "--device",
        "cpu",
        "--max-batch",
        "1",
        "--state-dir",
        str(tmp_path / "state"),
        "--output-dir",
        str(tmp_path / "out"),
    ]
    with worker_process(*args) as (process, url):
        ids = [httpx.post(f"{url}/execute", json=body, headers=ASYNC).json()["job_id"] for body in BODIES]
        deadline = time.monotonic() + 60
        while (first := status(url, ids[0])["status"]) != "running":
            assert first == "queued" and time.monotonic() < deadline, first
            time.sleep(0.01)
        assert {status(url, job_id)["status"] for job_id in ids[1:]} == {"queued"}
        process.kill()  # SIGKILL: no drain, no goodbye
        killed_at = time.time()
        process.wait(30)
    with worker_process(*args) as (_, url):
        deadline = time.monotonic() + 120
        while (jobs := [status(url, job_id) for job_id in ids]) and any(
            job["status"] not in ("completed", "failed", "cancelled") for job in jobs
        ):
            assert time.monotonic() < deadline, jobs
            time.sleep(0.1)
        assert [job["status"] for job in jobs] == ["completed"] * 4
        assert jobs[0]["started_at"] > killed_at  # the interrupted job ran again from the start
        for body, job in zip(BODIES, jobs, strict=True):
            clean = httpx.post(f"{url}/execute", json=body, headers={"Accept": "application/json"}, timeout=120)
            assert job["result"]["images"] == clean.json()["images"]  # same seeds → the same bytes
            for file_id in job["result"]["files"]:
                assert httpx.get(f"{url}/v1/files/{file_id}").status_code == 200
        assert not list((tmp_path / "out").glob(".*.partial"))
