"""Registration hygiene against rbee's hive and queen (test doubles from rbee's source), on a fake clock: a hive
that refuses gets one attempt per slow backoff period and one log line that says why; a hive that accepts the
ready callback but 404s every heartbeat is not re-registered more than once per backoff period."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from tests.rbee_peers import GenBHive, GenCQueen, create_gen_b_hive, create_gen_c_queen
from tests.support import serve_app
from worker.config import Settings
from worker.registration.pacing import Pacing
from worker.registration.queen import QueenView, build_queen_heartbeat
from worker.registration.registrar import build_registrar
from worker.registration.shapes import WorkerSnapshot

SNAPSHOT = WorkerSnapshot(
    worker_id="worker-1", url="http://127.0.0.1:1", model_ref="hf:sd-worker/demo", model_version="demo",
    device="cpu", dtype="fp32", capabilities=("txt2img",), vram_bytes=None, version="0.1.0", healthy=True,
    queue_depth=0, active_job=None,
)  # fmt: skip


class FakeTime:
    """A clock that jumps forward on every sleep; `until` ends the run at a simulated moment."""

    def __init__(self, until: float) -> None:
        self.now = 0.0
        self.until = until
        self.done = asyncio.Event()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.now >= self.until:
            self.done.set()
            await asyncio.Event().wait()  # parked until cancelled
        await asyncio.sleep(0)

    def pacing(self) -> Pacing:
        return Pacing(sleep=self.sleep, clock=self.clock)


@asynccontextmanager
async def running(starter: Any, time: FakeTime) -> AsyncIterator[None]:
    starter.start()
    try:
        await asyncio.wait_for(time.done.wait(), 60)
        yield
    finally:
        await starter.stop()


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 3) for a, b in itertools.pairwise(times)]


def assert_slow(delays: list[float]) -> None:
    """At least 10 s, doubling up to 5 min (upward jitter ≤ 10 %)."""
    assert delays, "more than one attempt"
    expected = 10.0
    for delay in delays:
        assert expected <= delay <= min(expected * 1.1, 300.0), delays
        expected = min(expected * 2, 300.0)


async def test_a_hive_answering_401_gets_one_ready_per_backoff_period_and_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    time = FakeTime(until=30 * 60)
    hive = GenBHive(token="the-right-token", clock=time.clock)
    with serve_app(create_gen_b_hive(hive)) as url:
        settings = Settings(callback_url=f"{url}/v1/workers/ready", hive_token="a-wrong-token", backend="cpu")
        registrar = build_registrar(settings, lambda: SNAPSHOT, time.pacing())
        assert registrar is not None
        with caplog.at_level(logging.INFO, logger="worker.registration"):
            async with running(registrar, time):
                pass
    assert hive.readies == [] and {r[1] for r in hive.refused} == {401}
    assert_slow(gaps(hive.ready_times))
    assert len(hive.ready_times) == 1 + 9, "10, 20, 40, 80, 160 s, then every 5 min over half an hour"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1, errors
    assert "401" in errors[0] and "INVALID_API_KEY" in errors[0] and "--hive-token" in errors[0], errors[0]


async def test_a_hive_that_accepts_ready_but_404s_heartbeats_is_re_registered_once_per_period() -> None:
    time = FakeTime(until=20 * 60)
    hive = GenBHive(token="t", clock=time.clock, readd_on_ready=False)  # rbee's literal code: ready is a no-op
    with serve_app(create_gen_b_hive(hive)) as url:
        settings = Settings(callback_url=f"{url}/v1/workers/ready", hive_token="t", heartbeat_interval=30)
        assert settings.resolved_hive_protocol() == "rbee-b"
        registrar = build_registrar(settings, lambda: SNAPSHOT, time.pacing())
        assert registrar is not None
        async with running(registrar, time):
            pass
    assert len(hive.heartbeats) >= 38, "heartbeats go on every 30 s"
    assert hive.readies[0] == {"worker_id": "worker-1", "url": "http://127.0.0.1:1", "model_ref": "hf:sd-worker/demo",
                               "backend": "cpu", "device": 0}  # fmt: skip
    reregistrations = gaps(hive.ready_times)
    assert reregistrations[0] == 30.0, "the first 404 re-registers at once (a restarted hive)"
    # then never sooner than the backoff period, which doubles (heartbeats are every 30 s, so rounded up to them)
    period = 10.0
    for gap in reregistrations[1:]:
        assert gap >= period, reregistrations
        period = min(period * 2, 300.0)
    assert reregistrations[-2:] == [300.0, 300.0], "capped at 5 min: 9 readies in 20 min, not 40"


async def test_a_queen_refusing_heartbeats_hears_from_the_worker_slowly(caplog: pytest.LogCaptureFixture) -> None:
    time = FakeTime(until=20 * 60)
    queen = GenCQueen(answer=422, clock=time.clock)
    view = QueenView("worker-cpu-9301", "hf:sd-worker/demo", "CPU-0", 9301, "ready", "0.1.0")
    with serve_app(create_gen_c_queen(queen)) as url:
        settings = Settings(queen_url=url, heartbeat_interval=1)
        assert settings.resolved_hive_protocol() == "rbee-c"
        beats = build_queen_heartbeat(settings, lambda: view, time.pacing())
        assert beats is not None
        with caplog.at_level(logging.INFO, logger="worker.registration"):
            async with running(beats, time):
                queen.answer = 200  # for the goodbye
    assert_slow(gaps(queen.beat_times[:-1]))  # the last one is the `stopped` goodbye
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1 and "422" in errors[0] and "--hive-protocol" in errors[0], errors
    assert queen.heartbeats[-1]["worker"]["status"] == "stopped"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"device": "1", "backend": "cuda"}, ("cuda", 1, 1)),
        ({"device": "0", "backend": "metal"}, ("mps", 0, 0)),
        ({"device": "0", "backend": "cpu"}, ("cpu", 0, 0)),
        ({"device": "2"}, ("auto", 2, 2)),  # Gen C: the binary, not a flag, says the kind; auto finds it
        ({"device": "cuda", "cuda_device": 1}, ("cuda", 1, None)),  # today's flags unchanged
    ],
)
def test_rbee_device_flags_map_onto_the_device_settings(given: dict[str, Any], expected: tuple[Any, ...]) -> None:
    settings = Settings(**given)
    assert (settings.device, settings.cuda_device, settings.device_index) == expected


def test_worker_ids_are_sanitised_for_rbee() -> None:
    assert Settings(worker_id="gpu.box.lan-8081").resolved_worker_id() == "gpu-box-lan-8081"
    assert len(Settings(worker_id="x" * 300).resolved_worker_id()) == 256


async def test_the_sd_worker_shape_is_refused_by_an_rbee_hive_once_logged_and_retried_slowly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    time = FakeTime(until=10 * 60)
    hive = GenBHive(token="t", clock=time.clock)
    with serve_app(create_gen_b_hive(hive)) as url:
        # what the worker sent before rbee support: the hive's serde cannot read a string `device`
        settings = Settings(callback_url=f"{url}/v1/workers/ready", hive_token="t", hive_protocol="sd-worker")
        registrar = build_registrar(settings, lambda: SNAPSHOT, time.pacing())
        assert registrar is not None
        with caplog.at_level(logging.INFO, logger="worker.registration"):
            async with running(registrar, time):
                pass
        assert {r[1] for r in hive.refused} == {422} and hive.readies == []
        async with httpx.AsyncClient() as client:
            assert (await client.post(f"{url}/v1/workers/ready", json={})).status_code == 401, "the double checks"
    assert_slow(gaps(hive.ready_times[:-1]))
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]  # (+ a warning: no goodbye)
    assert len(errors) == 1 and "422" in errors[0] and "--hive-protocol" in errors[0], errors


def test_a_protocol_without_its_urls_is_a_startup_error() -> None:
    with pytest.raises(ValueError, match="rbee-c heartbeats a queen"):
        Settings(hive_protocol="rbee-c", callback_url="http://hive/v1/workers/ready")
    with pytest.raises(ValueError, match="registers at --callback-url"):
        Settings(hive_protocol="rbee-b")
