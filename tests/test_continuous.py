"""Step-level continuous batching: the worker's own denoising loop equals diffusers, and jobs join and leave a
running batch between steps without changing anyone's image (beyond the batching bound)."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from PIL import Image

from worker.backends.cpu import CpuBackend
from worker.config import Settings
from worker.engine.engine import Engine, build_engine
from worker.engine.job import Job, JobStatus
from worker.engine.protocol import GenerationParams, GenerationRequest, Member
from worker.pipelines.runner import SilentHooks

# Batched GEMMs and convolutions add in another order than solo ones: the DESIGN bound, 1/255 per channel.
MAX_PIXEL_DIFF = 1
SCHEDULERS = [None, "euler_a", "dpmpp_2m", "ddim"]


@pytest.fixture(scope="module")
def demo() -> CpuBackend:
    backend = CpuBackend(Settings())  # the bundled demo model
    backend.load()
    return backend


def request(**overrides: Any) -> GenerationRequest:
    fields: dict[str, Any] = {
        "task": "txt2img",
        "prompt": "a red cube",
        "negative_prompt": None,
        "steps": 5,
        "guidance_scale": 4.0,
        "seeds": (3,),
        "width": 64,
        "height": 64,
        "scheduler": None,
        "output_format": "png",
    }
    return GenerationRequest(**{**fields, **overrides})


def _raise(exc: Exception) -> None:
    raise exc


def stepwise_images(backend: CpuBackend, req: GenerationRequest) -> list[Image.Image]:
    out: list[list[Image.Image]] = []
    backend.generate_stepwise(Member(req, SilentHooks(), out.append, _raise), list)
    return out[0]


def plain_images(backend: CpuBackend, req: GenerationRequest) -> list[Image.Image]:
    images = backend.generate([req], [SilentHooks()], lambda _i, exc: _raise(exc))[0]
    assert images is not None
    return images


@pytest.mark.parametrize("arch", ["demo", "sd15", "sd21", "sdxl"])
def test_a_job_alone_is_byte_identical_to_the_diffusers_call(arch: str, demo: CpuBackend, backend_for: Any) -> None:
    backend = demo if arch == "demo" else backend_for(arch)
    schedulers = SCHEDULERS if arch == "demo" else SCHEDULERS[1:3]  # the tiny ones: ancestral and multistep
    for scheduler in schedulers:
        index = SCHEDULERS.index(scheduler)
        # two images, no guidance and a negative prompt on some: each shapes the rows differently
        req = request(
            steps=4,
            scheduler=scheduler,
            seeds=(index, index + 1) if index % 2 else (index,),
            guidance_scale=1.0 if scheduler == "ddim" else 4.0,
            negative_prompt="blurry" if scheduler == "dpmpp_2m" else None,
        )
        assert backend.steps_continuously(req)
        plain, mine = plain_images(backend, req), stepwise_images(backend, req)
        assert [i.tobytes() for i in mine] == [i.tobytes() for i in plain], (arch, scheduler)


def test_what_the_loop_does_not_cover_runs_as_before(demo: CpuBackend, backend_for: Any) -> None:
    assert demo.steps_continuously(request())
    assert not demo.steps_continuously(request(prompt_syntax=True))
    assert not demo.steps_continuously(request(task="img2img", image=Image.new("RGB", (64, 64)), strength=0.5))
    sd3 = backend_for("sd3")
    assert not sd3.steps_continuously(request())
    with engine_on(sd3) as engine:  # a flow family: the window path, same bytes as under --batching window
        continuous = finish(submit(engine, steps=2, seed=5))
    engine = build_engine(Settings(batching="window"), sd3)
    engine.start()
    try:
        window = finish(submit(engine, steps=2, seed=5))
    finally:
        engine.stop(10)
    assert continuous.result is not None and window.result is not None
    assert continuous.result.images == window.result.images


# the engine -------------------------------------------------------------------------------------------------


@contextmanager
def engine_on(backend: CpuBackend, **overrides: Any) -> Iterator[Engine]:
    settings = Settings(batching="continuous", **overrides)
    engine = build_engine(settings, backend)
    engine.start()
    try:
        yield engine
    finally:
        engine.stop(10)


def submit(engine: Engine, **params: Any) -> Job:
    return engine.submit(engine.resolve(GenerationParams(**{"prompt": "a red cube", "width": 64, **params})))


def finish(job: Job, timeout: float = 60) -> Job:
    deadline = time.monotonic() + timeout
    while not job.status.final:
        assert time.monotonic() < deadline, f"job {job.id} never finished"
        time.sleep(0.01)
    return job


def pixels(job: Job) -> list[np.ndarray]:
    assert job.result is not None, job.error
    return [np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16) for data in job.result.images]


def assert_close(batched: Job, alone: Job) -> None:
    for a, b in zip(pixels(batched), pixels(alone), strict=True):
        assert int(np.abs(a - b).max()) <= MAX_PIXEL_DIFF


@contextmanager
def gate_at(backend: CpuBackend, *calls: int) -> Iterator[tuple[list[threading.Event], list[int]]]:
    """Hold the denoiser inside each of the call numbers `calls` until its event is set; record every call's
    batch rows."""
    gates = {call: threading.Event() for call in calls}
    rows: list[int] = []

    def hook(_module: Any, args: tuple[Any, ...]) -> None:
        rows.append(int(args[0].shape[0]))
        if (gate := gates.get(len(rows))) is not None:
            assert gate.wait(30)

    handle = backend.model.denoiser.register_forward_pre_hook(hook)
    try:
        yield list(gates.values()), rows
    finally:
        for gate in gates.values():
            gate.set()
        handle.remove()


def wait_for_rows(rows: list[int], count: int) -> None:
    deadline = time.monotonic() + 30
    while len(rows) < count:
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_a_job_admitted_at_step_7_of_20_makes_its_solo_image(demo: CpuBackend) -> None:
    with engine_on(demo) as engine:
        alone_a = finish(submit(engine, steps=20, seed=1))
        alone_b = finish(submit(engine, steps=10, seed=2, prompt="a blue ball", scheduler="euler_a"))
        with gate_at(demo, 7) as ([release], rows):
            a = submit(engine, steps=20, seed=1)
            wait_for_rows(rows, 7)  # A is inside its 7th denoiser call
            b = submit(engine, steps=10, seed=2, prompt="a blue ball", scheduler="euler_a", preview_every=5)
            release.set()
            finish(a), finish(b)
        assert rows[:7] == [2] * 7 and rows[7:17] == [4] * 10 and rows[17:] == [2] * 3  # B joined for 10 steps
        assert_close(a, alone_a)
        assert_close(b, alone_b)
        started = [e.event for e in b.events.snapshot() if type(e.event).__name__ == "Progress"]
        assert [p.step for p in started] == list(range(1, 11))  # its own step count
        previews = [e.event.step for e in b.events.snapshot() if type(e.event).__name__ == "Preview"]
        assert previews[:1] == [5] and set(previews) <= {5, 10}  # the second is skipped if the first still encodes


@pytest.mark.parametrize("arch", ["demo", "sdxl"])
def test_mixed_steps_schedulers_and_guidance_share_one_batch(arch: str, demo: CpuBackend, backend_for: Any) -> None:
    backend = demo if arch == "demo" else backend_for(arch)
    jobs = [
        {"steps": 6, "seed": 4, "scheduler": "ddim", "guidance_scale": 7.0},
        {"steps": 3, "seed": 5, "scheduler": "euler_a", "guidance_scale": 0.0},
        {"steps": 5, "seed": 6, "scheduler": "dpmpp_2m", "guidance_scale": 4.0, "num_samples": 2},
    ]
    with engine_on(backend) as engine:
        alone = [finish(submit(engine, **job)) for job in jobs]
        with gate_at(backend, 1) as ([release], rows):
            blocker = submit(engine, steps=2, seed=9, width=32, height=32)  # other size: never joins
            wait_for_rows(rows, 1)
            batched = [submit(engine, **job) for job in jobs]
            release.set()
            for job in [blocker, *batched]:
                finish(job)
        # after the blocker's 2 calls: 2 + 1 + 4 rows (guidance 0 brings no negative row) while all three run
        assert rows[2:5] == [7, 7, 7] and rows[5:] == [6, 6, 2]
        for job, solo in zip(batched, alone, strict=True):
            assert_close(job, solo)


def test_a_cancelled_job_leaves_at_the_next_step_and_the_others_are_unchanged(demo: CpuBackend) -> None:
    with engine_on(demo) as engine:
        alone = finish(submit(engine, steps=8, seed=11))
        with gate_at(demo, 1, 3) as ([first, third], rows):
            keep = submit(engine, steps=8, seed=11)
            wait_for_rows(rows, 1)
            doomed = submit(engine, steps=8, seed=12)
            first.set()
            wait_for_rows(rows, 3)
            engine.cancel(doomed, "cancelled by the test")
            third.set()
            finish(keep), finish(doomed)
        assert doomed.status is JobStatus.CANCELLED
        assert rows[2] == 4 and rows[3:] == [2] * 5  # the slot is free from the next call on
        assert_close(keep, alone)


def test_a_job_that_times_out_inside_a_batch_fails_alone(demo: CpuBackend) -> None:
    with engine_on(demo, job_timeout=2.0) as engine:
        alone = finish(submit(engine, steps=4, seed=21))
        with gate_at(demo, 2) as ([release], rows):
            slow = submit(engine, steps=30, seed=20)
            wait_for_rows(rows, 2)
            quick = submit(engine, steps=4, seed=21)
            time.sleep(2.1)  # `slow` is past its limit; `quick` has not started yet
            release.set()
            finish(slow), finish(quick)
        assert slow.status is JobStatus.FAILED and slow.error is not None and slow.error.code == "timeout"
        assert quick.status is JobStatus.COMPLETED
        assert_close(quick, alone)


def test_a_waiting_job_that_cannot_join_is_not_passed_over(demo: CpuBackend) -> None:
    with engine_on(demo) as engine, gate_at(demo, 1) as ([release], rows):
        running = submit(engine, steps=3, seed=1)
        wait_for_rows(rows, 1)
        other_size = submit(engine, steps=3, seed=2, width=32, height=32)
        compatible = submit(engine, steps=3, seed=3)  # could join, but waits behind `other_size`
        release.set()
        for job in (running, other_size, compatible):
            finish(job)
    assert rows == [2] * 9  # three jobs one after another, none joined
    assert running.started_at and other_size.started_at and compatible.started_at
    assert running.started_at < other_size.started_at < compatible.started_at


def test_batching_off_runs_one_job_per_call(demo: CpuBackend) -> None:
    settings = Settings(batching="off")
    engine = build_engine(settings, demo)
    engine.start()
    try:
        with gate_at(demo, 1) as ([release], rows):
            first = submit(engine, steps=2, seed=1)
            wait_for_rows(rows, 1)
            second = submit(engine, steps=2, seed=2)
            release.set()
            finish(first), finish(second)
    finally:
        engine.stop(10)
    assert rows == [2, 2, 2, 2]


def test_solo_requests_under_continuous_equal_window_bytes(demo: CpuBackend) -> None:
    req = {"steps": 4, "seed": 31, "scheduler": "euler_a"}
    with engine_on(demo) as engine:
        continuous = finish(submit(engine, **req))
    engine = build_engine(Settings(batching="window"), demo)
    engine.start()
    try:
        window = finish(submit(engine, **req))
    finally:
        engine.stop(10)
    assert continuous.result is not None and window.result is not None
    assert continuous.result.images == window.result.images


def test_batch_occupancy_is_a_histogram(demo: CpuBackend) -> None:
    with engine_on(demo) as engine:
        finish(submit(engine, steps=3, seed=1, num_samples=2))
        text = engine.metrics.render().decode()
    assert 'sd_worker_batch_images_bucket{le="2.0"} 3.0' in text
    assert 'sd_worker_batch_images_bucket{le="1.0"} 0.0' in text


def test_the_batching_option_reaches_the_settings(monkeypatch: Any) -> None:
    from typer.testing import CliRunner

    from worker import cli as cli_module

    served: list[Settings] = []
    monkeypatch.setattr(cli_module, "_serve", lambda settings: served.append(settings) or 0)
    result = CliRunner().invoke(cli_module.app, ["--batching", "continuous"])
    assert result.exit_code == 0, result.output
    assert served[0].batching == "continuous"
    refused = CliRunner().invoke(cli_module.app, ["--batching", "always"])
    assert refused.exit_code == 2 and "batching" in refused.output, refused.output
