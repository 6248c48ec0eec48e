"""rbee interop, end to end: rbee's Gen B hive spawns `sd-worker` with its exact command line and registers,
probes, forgets and evicts it; rbee's Gen C queen hears its heartbeats and drives the job API. The hive and the
queen are test doubles written from rbee's source (tests/rbee_peers.py); the workers are real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.rbee_peers import GenBHive, GenCQueen, HiveWorker, create_gen_b_hive, create_gen_c_queen, follow, operation
from tests.support import _answers, b64_png, centre_mask, decode, free_port, init_image, pixels, serve_app, wait_for

DEMO = Path(__file__).resolve().parent.parent / "worker" / "models" / "demo"
TOKEN = "hive-token-0123456789"
BEAT = "0.3"  # --heartbeat-interval, through the environment: rbee's command line is fixed
JSON = {"Accept": "application/json"}


def sd_worker_command() -> list[str]:
    """The installed `sd-worker` console script (what an rbee hive would be pointed at)."""
    script = Path(sys.executable).parent / "sd-worker"
    return [str(script)] if script.exists() else [sys.executable, "-c", "from worker.cli import main; main()"]


@dataclass
class Fleet:
    """The hive with its spawned worker, the queen and a worker spawned the Gen C way."""

    hive: GenBHive
    spawned: HiveWorker
    queen: GenCQueen
    gen_c: subprocess.Popen[str]
    gen_c_id: str
    gen_c_url: str


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    """Both workers start together (they load in parallel) and are killed at the end."""
    hive, queen = GenBHive(token=TOKEN), GenCQueen()
    with serve_app(create_gen_b_hive(hive)) as hive_url, serve_app(create_gen_c_queen(queen)) as queen_url:
        hive.port = int(hive_url.rsplit(":", 1)[1])
        env = {"SD_WORKER_HEARTBEAT_INTERVAL": BEAT}
        spawned = hive.spawn(sd_worker_command(), str(DEMO), "hf:sd-worker/demo", "cpu", 0, free_port(), env)
        port = free_port()
        gen_c_id = f"worker-cpu-{port}"  # rbee-hive operations/worker.rs: format!("worker-{}-{}", worker, port)
        command = [*sd_worker_command(), "--worker-id", gen_c_id, "--model", str(DEMO), "--device", "0",
                   "--port", str(port), "--queen-url", queen_url]  # fmt: skip
        gen_c = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 env={**os.environ, **env})  # fmt: skip
        fleet = Fleet(hive, spawned, queen, gen_c, gen_c_id, f"http://127.0.0.1:{port}")
        try:
            for process, url in ((spawned.process, spawned.url), (gen_c, fleet.gen_c_url)):
                assert process is not None
                wait_for(lambda p=process, u=url: _answers(f"{u}/ready") or p.poll() is not None, 120, "loading")
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
            yield fleet
        finally:
            for process in (spawned.process, gen_c):
                if process is not None and process.poll() is None:
                    process.kill()
                    process.wait(30)


def test_the_gen_b_hive_spawns_registers_and_probes_the_worker(fleet: Fleet) -> None:
    hive, worker = fleet.hive, fleet.spawned
    wait_for(lambda: len(hive.readies) >= 1, what="the ready callback")
    assert hive.readies[0] == {"worker_id": worker.id, "url": worker.url, "model_ref": "hf:sd-worker/demo",
                               "backend": "cpu", "device": 0}  # fmt: skip
    wait_for(lambda: len(hive.heartbeats) >= 2 and any(p[0] == worker.id for p in hive.probes), what="heartbeats")
    assert hive.refused == [], "the Bearer token (inherited LLORCH_API_TOKEN) and every body were accepted"
    beat = hive.heartbeats[0]
    assert set(beat) == {"worker_id", "timestamp", "health_status"}
    assert (beat["worker_id"], beat["health_status"]) == (worker.id, "healthy")
    assert datetime.fromisoformat(beat["timestamp"]).tzinfo is not None
    # the port is open while the model loads: probes then say "loading" (200), and "healthy" once it is ready
    wait_for(lambda: any(p[0] == worker.id and p[2]["status"] == "healthy" for p in hive.probes), what="probe")
    mine = [p for p in hive.probes if p[0] == worker.id]
    first_healthy = next(i for i, p in enumerate(mine) if p[2]["status"] == "healthy")
    assert all(p[1] == 200 and p[2]["worker_id"] == worker.id for p in mine)
    assert {p[2]["status"] for p in mine[:first_healthy]} <= {"loading"}
    assert hive.workers[worker.id].state == "idle"
    body = {"prompt": "a cat", "steps": 2, "width": 64, "height": 64}
    assert httpx.post(f"{worker.url}/execute", json=body, headers=JSON, timeout=60).status_code == 200


def test_a_forgotten_worker_registers_again_and_a_silent_one_is_evicted(fleet: Fleet) -> None:
    hive, worker = fleet.hive, fleet.spawned
    wait_for(lambda: len(hive.readies) >= 1, what="the ready callback")
    hive.forget(worker.id)
    forgotten = time.monotonic()
    wait_for(lambda: len(hive.readies) == 2, timeout=10, what="re-registration")
    assert time.monotonic() - forgotten < 3 * float(BEAT) + 1, "re-registered within a few heartbeats"
    wait_for(lambda: worker.id in hive.workers and hive.workers[worker.id].last_heartbeat is not None,
             what="heartbeats accepted again")  # fmt: skip
    assert worker.process is not None
    worker.process.send_signal(signal.SIGSTOP)  # alive but silent: no heartbeat, no answer
    wait_for(lambda: (worker.id, "stale heartbeat") in hive.removed, timeout=15, what="eviction")
    assert worker.process.wait(10) == -signal.SIGKILL, "the hive killed the silent worker, as rbee's monitor does"
    assert len(hive.readies) == 2


def test_the_queen_hears_heartbeats_and_drives_each_operation(fleet: Fleet) -> None:
    queen, url = fleet.queen, fleet.gen_c_url
    wait_for(lambda: "ready" in queen.statuses(fleet.gen_c_id), what="a ready heartbeat")
    beat = next(b for b in queen.heartbeats if b["worker"]["id"] == fleet.gen_c_id)
    port = int(url.rsplit(":", 1)[1])
    assert {k: beat["worker"][k] for k in ("device", "port", "implementation")} == {
        "device": "CPU-0", "port": port, "implementation": "sd-worker"}  # fmt: skip
    assert queen.statuses(fleet.gen_c_id)[0] == "starting", "the queen hears about the worker while it loads"
    image, mask = b64_png(init_image(64)), b64_png(centre_mask(64))
    common = {"prompt": "a red barn", "steps": 6}
    jobs = {
        "image_generation": operation("image_generation", **common, seed=11, width=64, height=64),
        "image_transform": operation("image_transform", **common, seed=12, input_image=image),
        "image_inpaint": operation("image_inpaint", **common, seed=13, init_image=image, mask_image=mask),
    }
    for route, (kind, body) in zip(("/v1/jobs", "/v1/inference", "/v1/jobs"), jobs.items(), strict=True):
        answer = httpx.post(f"{url}{route}", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        created = answer.json()
        assert created["sse_url"] == f"/v1/jobs/{created['job_id']}/stream"
        events = follow(url, created["sse_url"])
        names = [name for name, _ in events]
        assert names[-1] == "complete" and "error" not in names, (kind, names)
        progress = [data for name, data in events if name == "progress"]
        total = progress[-1]["total"]
        assert [p["step"] for p in progress] == list(range(1, total + 1))
        assert set(progress[0]) == {"type", "step", "total", "percent"} and progress[-1]["percent"] == 100.0
        previews = [data for name, data in events if name == "preview"]
        steps = [p["step"] for p in previews]
        assert steps[-1] == total and all(s % 5 == 0 or s == total for s in steps), (kind, steps)
        assert all(p["format"] == "png" and decode(p["image"]).format == "PNG" for p in previews)
        complete = events[-1][1]
        final = decode(complete["image"])
        assert (complete["type"], complete["format"], final.format, final.size) == ("complete", "png", "PNG", (64, 64))
        assert complete["seed"] == body["seed"]
        if kind == "image_inpaint":
            outside = pixels(centre_mask(64).convert("RGB")) == 0
            assert np.array_equal(pixels(final)[outside], pixels(init_image(64))[outside]), "unmasked pixels kept"


def test_gen_c_seeds_match_the_native_api_and_delete_cancels(fleet: Fleet) -> None:
    queen, url = fleet.queen, fleet.gen_c_url
    body = operation("image_generation", prompt="a lighthouse", steps=4, seed=2024, width=64, height=64)
    created = httpx.post(f"{url}/v1/jobs", json=body, timeout=30).json()
    rbee_image = decode(follow(url, created["sse_url"])[-1][1]["image"])
    assert httpx.get(f"{url}/v1/jobs/{created['job_id']}").json()["seeds"] == [2024]
    native_body = {"prompt": "a lighthouse", "steps": 4, "seed": 2024, "width": 64, "height": 64, "guidance_scale": 7.5}
    native = httpx.post(f"{url}/execute", json=native_body, headers=JSON, timeout=60)
    assert np.array_equal(pixels(rbee_image), pixels(decode(native.json()["image"])))

    long = operation("image_generation", prompt="a slow one", steps=150, seed=1, width=128, height=128)
    created = httpx.post(f"{url}/v1/jobs", json=long, timeout=30).json()
    with httpx.stream("GET", f"{url}{created['sse_url']}", timeout=60) as stream:
        lines = stream.iter_lines()
        assert next(line for line in lines if line.startswith("event: ")) == "event: progress"
        wait_for(lambda: "busy" in queen.statuses(fleet.gen_c_id), what="a busy heartbeat")
        assert httpx.delete(f"{url}/v1/jobs/{created['job_id']}").status_code == 202  # running: "cancelling"
        rest = [line for line in lines if line.startswith(("event: ", "data: "))]
    assert rest[-2] == "event: error" and '"code":"cancelled"' in rest[-1], rest[-2:]
    assert httpx.get(f"{url}/v1/jobs/{created['job_id']}").json()["status"] == "cancelled"


def test_bad_rbee_bodies_get_clear_errors(fleet: Fleet) -> None:
    url = fleet.gen_c_url
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"operation": "infer", "hive_id": "h", "model": "m", "prompt": "x"}, 422, "operation"),
        ({"hive_id": "h", "model": "m", "prompt": "x"}, 422, "operation"),
        (operation("image_generation", prompt=""), 422, "prompt"),
        (operation("image_generation", prompt="x", seed=2**40), 422, "seed"),
        (operation("image_transform", prompt="x"), 422, "input_image"),
        (operation("image_inpaint", prompt="x", init_image="%%", mask_image="AAAA"), 400, "init_image"),
        (operation("image_generation", prompt="x", loras=[{"path": "a.safetensors"}]), 422, "loras.0.path"),
    ]
    for body, status, field in cases:
        answer = httpx.post(f"{url}/v1/jobs", json=body, timeout=30)
        assert answer.status_code == status and answer.json()["error"]["field"] == field, (body, answer.text)


def test_gen_c_worker_says_stopping_then_stopped_and_exits_0(fleet: Fleet) -> None:
    fleet.gen_c.send_signal(signal.SIGTERM)
    assert fleet.gen_c.wait(30) == 0
    statuses = fleet.queen.statuses(fleet.gen_c_id)
    assert statuses[-2:] == ["stopping", "stopped"], statuses
