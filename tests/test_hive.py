"""The hive protocol with real workers (in-process servers, and a real process for SIGTERM) and a real (mini) hive
on loopback ports."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import httpx
import pytest
import uvicorn
from mini_hive import create_hive

from tests.support import (
    free_port,
    live_server,
    serve_app,
    slow_denoiser,
    wait_for,
    worker_process,
    worker_settings,
)
from worker.api.app import create_app
from worker.config import Settings
from worker.server import DrainingServer

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


@contextmanager
def draining_server(settings: Settings, backend: Any) -> Iterator[tuple[DrainingServer, str]]:
    """The worker's own `DrainingServer` (the one `sd-worker` runs) on a shared loaded backend, in a thread."""
    app = create_app(settings, backend=backend)
    config = uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning")
    server = DrainingServer(config, app.state.worker)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{settings.port}"
    try:
        wait_for(lambda: server.started and httpx.get(f"{url}/ready").status_code == 200, what="ready")
        yield server, url
    finally:
        server.should_exit = True
        thread.join(60)
    assert not thread.is_alive(), "the server stopped after draining"


def stream_events(
    url: str, body: dict[str, Any], sink: list[tuple[str, dict[str, Any]]], first: threading.Event
) -> None:
    """POST /execute and append each SSE (event, data) to `sink`; set `first` at the first progress event."""
    with httpx.stream("POST", f"{url}/execute", json=body, timeout=120) as response:
        name = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                sink.append((name, json.loads(line[6:])))
                if name == "progress":
                    first.set()


def stop_while_one_job_runs_and_one_waits(
    url: str, stop: Callable[[], None], long_job: dict[str, Any]
) -> dict[str, Any]:
    """Start `long_job`, queue a second, call `stop`; return both jobs' events and the answer to a late request."""
    running: list[tuple[str, dict[str, Any]]] = []
    waiting: list[tuple[str, dict[str, Any]]] = []
    first_progress, unused = threading.Event(), threading.Event()
    threads = [threading.Thread(target=stream_events, args=(url, long_job, running, first_progress))]
    threads[0].start()
    assert first_progress.wait(60)
    threads.append(threading.Thread(target=stream_events, args=(url, {**long_job, "steps": 2}, waiting, unused)))
    threads[1].start()
    wait_for(lambda: any(name == "queued" for name, _ in waiting), what="second job queued")
    stop()
    wait_for(lambda: httpx.get(f"{url}/ready").status_code == 503, what="draining")
    late = httpx.post(f"{url}/execute", json={"prompt": "late"}, headers=JSON)
    for thread in threads:
        thread.join(120)
    return {"running": running, "waiting": waiting, "late": late}


def assert_drained(outcome: dict[str, Any], heartbeats: list[dict[str, Any]]) -> None:
    """The running job finished, the waiting one was cancelled, the late one refused, the hive heard `stopping`."""
    late, running, waiting = outcome["late"], outcome["running"], outcome["waiting"]
    assert late.status_code == 503 and late.json()["error"]["code"] == "not_ready"
    assert running[-1][0] == "complete", "the running job finishes"
    assert waiting[-1][0] == "error" and waiting[-1][1]["code"] == "cancelled"
    assert "shutting down" in waiting[-1][1]["message"]
    assert any(beat["status"] == "stopping" for beat in heartbeats)


def test_a_stop_signal_drains_the_running_job_refuses_new_ones_and_says_stopping(
    tiny_model: Any, backend_for: Any
) -> None:
    # Fast form: the worker's own server in this process, its signal handler called as uvicorn's signal handling
    # calls it; `-m slow` sends a real SIGTERM to a real `sd-worker` process (below).
    hive_app = create_hive()
    long_job = {"prompt": "a cat", "steps": 20, "width": 64, "height": 64}  # 20 steps of 0.1 s
    with (
        serve_app(hive_app) as hive_url,
        draining_server(hive_worker(tiny_model, hive_url), backend_for("sd15")) as (server, url),
        slow_denoiser(backend_for("sd15"), 0.1),
    ):
        wait_for(lambda: len(hive_app.state.hive.registrations) == 1, what="registration")
        outcome = stop_while_one_job_runs_and_one_waits(
            url, partial(server.handle_exit, signal.SIGTERM, None), long_job
        )
        wait_for(lambda: bool(server.should_exit), what="the server stops after the drain")
    assert_drained(outcome, hive_app.state.hive.heartbeats)


@pytest.mark.slow
def test_sigterm_drains_a_real_process_which_then_exits_0(tiny_model: Any) -> None:
    hive_app = create_hive()
    with serve_app(hive_app) as hive_url, worker_process(*worker_args(tiny_model, hive_url)) as (process, url):
        wait_for(lambda: len(hive_app.state.hive.registrations) == 1, what="registration")
        long_job = {"prompt": "a cat", "steps": 40, "width": 256, "height": 256, "scheduler": "ddim"}
        outcome = stop_while_one_job_runs_and_one_waits(url, lambda: process.send_signal(signal.SIGTERM), long_job)
        code = process.wait(60)
    assert_drained(outcome, hive_app.state.hive.heartbeats)
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
