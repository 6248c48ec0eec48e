"""The hive protocol with real workers (in-process servers, and a real process for SIGTERM) and a real (mini) hive
on loopback ports."""

from __future__ import annotations

import json
import signal
import threading
import time
from typing import Any

import httpx
from mini_hive import create_hive

from tests.support import free_port, live_server, serve_app, wait_for, worker_process, worker_settings
from worker.config import Settings

JSON = {"Accept": "application/json"}


def worker_args(tiny: Any, hive_url: str, *extra: str) -> tuple[str, ...]:
    return (
        "--sd-version",
        "v1-5",
        "--model-path",
        str(tiny("sd15")),
        "--callback-url",
        f"{hive_url}/v1/register",
        "--heartbeat-interval",
        "0.5",
        *extra,
    )


def hive_worker(tiny: Any, hive_url: str) -> Settings:
    """Settings of a worker registering with the hive at `hive_url` (on a port of its own), heartbeat every 0.5 s."""
    callback = f"{hive_url}/v1/register"
    return worker_settings("sd15", tiny("sd15"), callback_url=callback, heartbeat_interval=0.5, port=free_port())


def test_registration_retries_through_failures_then_heartbeats(tiny_model: Any, backend_for: Any) -> None:
    hive_app = create_hive(fail_registrations=3)
    hive = hive_app.state.hive
    with serve_app(hive_app) as hive_url, live_server(hive_worker(tiny_model, hive_url), backend_for("sd15")) as url:
        # the worker serves while the hive keeps failing
        body = {"prompt": "a cat", "steps": 2, "width": 64, "height": 64}
        assert httpx.post(f"{url}/execute", json=body, headers=JSON, timeout=60).status_code == 200
        wait_for(lambda: len(hive.registrations) == 1, what="registration")
        assert hive.attempts == 4, "three 500s, then success on the 4th try"
        registration = hive.registrations[0]
        port = url.rsplit(":", 1)[1]
        assert registration["url"] == url and registration["worker_id"].endswith(f"-{port}")
        assert registration["backend"] == "sd-worker" and registration["model_version"] == "v1-5"
        assert registration["model_ref"] == str(tiny_model("sd15"))
        assert (registration["device"], registration["dtype"]) == ("cpu", "fp32")
        assert registration["capabilities"] == ["txt2img", "img2img", "inpaint", "encode", "prompt_embeds"]
        assert registration["vram_bytes"] > 0 and registration["version"]
        wait_for(lambda: len(hive.heartbeats) >= 2, what="heartbeats")
    beat = hive.heartbeats[0]
    assert set(beat) == {"worker_id", "timestamp", "health_status", "status", "queue_depth", "active_job"}
    assert beat["worker_id"] == registration["worker_id"] and beat["timestamp"].endswith("Z")
    assert (beat["health_status"], beat["status"], beat["queue_depth"], beat["active_job"]) == (
        "healthy",
        "idle",
        0,
        None,
    )


def test_a_restarted_hive_gets_a_re_registration_within_one_heartbeat(tiny_model: Any, backend_for: Any) -> None:
    port = free_port()
    hive_url = f"http://127.0.0.1:{port}"
    first, second = create_hive(), create_hive()
    with live_server(hive_worker(tiny_model, hive_url), backend_for("sd15")):
        with serve_app(first, port=port):  # the hive comes up after the worker: registration is retried
            wait_for(lambda: len(first.state.hive.registrations) == 1, what="registration")
        with serve_app(second, port=port):  # restarted with empty memory: the next heartbeat gets a 404
            restarted = time.monotonic()
            wait_for(lambda: len(second.state.hive.registrations) == 1, timeout=10, what="re-registration")
            elapsed = time.monotonic() - restarted
    assert elapsed < 0.5 + 1.0, f"re-registered {elapsed:.2f}s after the restart (heartbeat every 0.5s)"
    assert second.state.hive.heartbeats[0]["worker_id"] == first.state.hive.registrations[0]["worker_id"]


def test_sigterm_drains_the_running_job_refuses_new_ones_and_says_stopping(tiny_model: Any) -> None:
    hive_app = create_hive()
    hive = hive_app.state.hive
    with serve_app(hive_app) as hive_url:
        args = worker_args(tiny_model, hive_url)
        with worker_process(*args) as (process, url):
            wait_for(lambda: len(hive.registrations) == 1, what="registration")
            events: list[tuple[str, dict[str, Any]]] = []
            queued_events: list[tuple[str, dict[str, Any]]] = []
            long_job = {"prompt": "a cat", "steps": 40, "width": 256, "height": 256, "scheduler": "ddim"}
            first_progress = threading.Event()

            def stream(body: dict[str, Any], sink: list[tuple[str, dict[str, Any]]], signal_first: bool) -> None:
                with httpx.stream("POST", f"{url}/execute", json=body, timeout=120) as response:
                    name = ""
                    for line in response.iter_lines():
                        if line.startswith("event: "):
                            name = line[7:]
                        elif line.startswith("data: "):
                            sink.append((name, json.loads(line[6:])))
                            if name == "progress" and signal_first:
                                first_progress.set()

            running = threading.Thread(target=stream, args=(long_job, events, True))
            running.start()
            assert first_progress.wait(60)
            waiting = threading.Thread(target=stream, args=({**long_job, "steps": 2}, queued_events, False))
            waiting.start()
            wait_for(lambda: any(name == "queued" for name, _ in queued_events), what="second job queued")
            process.send_signal(signal.SIGTERM)
            wait_for(lambda: httpx.get(f"{url}/ready").status_code == 503, what="draining")
            refused = httpx.post(f"{url}/execute", json={"prompt": "late"}, headers=JSON)
            running.join(120)
            waiting.join(60)
            code = process.wait(60)
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "not_ready"
    assert events[-1][0] == "complete", "the running job finishes"
    assert queued_events[-1][0] == "error" and queued_events[-1][1]["code"] == "cancelled"
    assert "shutting down" in queued_events[-1][1]["message"]
    assert any(beat["status"] == "stopping" for beat in hive.heartbeats)
    assert code == 0


def test_jobs_through_the_hive_spread_over_two_workers(tiny_model: Any, backend_for: Any) -> None:
    hive_app = create_hive()
    hive = hive_app.state.hive
    with serve_app(hive_app) as hive_url:
        backend = backend_for("sd15")  # two workers, one shared model: the device lock takes turns
        with (
            live_server(hive_worker(tiny_model, hive_url), backend),
            live_server(hive_worker(tiny_model, hive_url), backend),
        ):
            wait_for(lambda: len(hive.workers) == 2, what="two registrations")
            body = {"prompt": "a cat", "steps": 6, "width": 128, "height": 128}
            results: list[httpx.Response] = []

            def send(i: int) -> None:
                results.append(httpx.post(f"{hive_url}/execute", json={**body, "seed": i}, headers=JSON, timeout=120))

            threads = [threading.Thread(target=send, args=(i,)) for i in range(6)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
    assert [r.status_code for r in results] == [200] * 6
    assert all(r.json()["images"] for r in results)
    per_worker = {r.headers["x-worker-id"] for r in results}
    assert len(per_worker) == 2, "both workers took jobs"


def test_the_mini_hive_evicts_a_silent_worker_and_404s_its_heartbeat() -> None:
    with serve_app(create_hive(evict_after=0.3)) as hive_url:
        worker = {"worker_id": "w1", "url": "http://127.0.0.1:1"}
        assert httpx.post(f"{hive_url}/v1/register", json=worker).status_code == 200
        assert [w["worker_id"] for w in httpx.get(f"{hive_url}/v1/workers").json()["workers"]] == ["w1"]
        time.sleep(0.5)
        assert httpx.get(f"{hive_url}/v1/workers").json()["workers"] == []
        assert httpx.post(f"{hive_url}/v1/heartbeat", json={"worker_id": "w1"}).status_code == 404
        assert httpx.post(f"{hive_url}/execute", json={"prompt": "x"}).status_code == 503
