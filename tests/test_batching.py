"""Cross-request batching on the tiny SD1.5 pipeline: same images as solo, per-job events, cancellation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import numpy as np
import pytest

from tests.support import Calls, decode, live_server, parse_sse, pixels, slow_denoiser, worker_settings
from worker.backends.cpu import CpuBackend
from worker.engine.batching import batch_key
from worker.engine.protocol import GenerationRequest

JSON = {"Accept": "application/json"}
BODY = {"width": 64, "height": 64, "scheduler": "ddim", "steps": 4}
# Batched GEMMs and convolutions add in another order than solo ones (README, "Batching and encoding").
MAX_PIXEL_DIFF = 2


@contextmanager
def denoiser_batches(backend: CpuBackend) -> Iterator[list[tuple[int, ...]]]:
    """Record the input shape of every denoiser call (batch = 2 × images with classifier-free guidance)."""
    shapes: list[tuple[int, ...]] = []

    def record(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        sample = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
        shapes.append(tuple(sample.shape))

    handle = backend.model.denoiser.register_forward_pre_hook(record, with_kwargs=True)
    try:
        yield shapes
    finally:
        handle.remove()


def batch_sizes(shapes: list[tuple[int, ...]], width: int = 64) -> list[int]:
    """Denoiser batch sizes of the calls at `width` pixels (the blocker runs at another width)."""
    return [shape[0] for shape in shapes if shape[-1] == width // 8]


async def queue_behind_a_blocker(
    client: httpx.AsyncClient,
    unet: Calls,
    bodies: list[dict[str, Any]],
    stream: bool = False,
    others: tuple[Coroutine[Any, Any, Any], ...] = (),
) -> list[asyncio.Task[Any]]:
    """Occupy the (slowed) device with an incompatible 48-px job, queue `bodies` (and the jobs `others` send)
    behind it, let the blocker finish; returns the queued requests, which run once the blocker is done."""
    blocker = asyncio.create_task(
        client.post("/execute", json={**BODY, "prompt": "blocker", "width": 48, "steps": 6}, headers=JSON)
    )
    while unet.count == 0:
        await asyncio.sleep(0.01)
    headers = {} if stream else JSON
    tasks = [asyncio.create_task(client.post("/execute", json=body, headers=headers)) for body in bodies]
    tasks += [asyncio.create_task(other) for other in others]
    deadline = time.monotonic() + 30
    while (await client.get("/health")).json()["queue_depth"] < len(tasks):
        assert time.monotonic() < deadline, "the jobs never queued"
        await asyncio.sleep(0.01)
    assert (await blocker).status_code == 200
    return tasks


async def solo(client: httpx.AsyncClient, body: dict[str, Any]) -> list[np.ndarray]:
    """The images of `body`, run alone on an idle worker."""
    response = await client.post("/execute", json=body, headers=JSON)
    assert response.status_code == 200
    return [pixels(decode(image)) for image in response.json()["images"]]


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def check_events(events: list[tuple[str, dict[str, Any]]], body: dict[str, Any], steps: int) -> dict[str, Any]:
    """One job's own stream: its seeds, every step once and in order, every stage; returns `complete`."""
    job_id = events[-1][1]["job_id"]
    assert {data["job_id"] for _, data in events} == {job_id}
    started = next(data for name, data in events if name == "started")
    assert started["seeds"] == [body["seed"] + i for i in range(body.get("num_samples", 1))]
    assert [data["step"] for name, data in events if name == "progress"] == list(range(1, steps + 1))
    stages = [data["stage"] for name, data in events if name == "stage"]
    assert stages == ["encoding_prompt", "denoising", "decoding", "encoding_image"]
    assert events[-1][0] == "complete"
    return events[-1][1]


async def test_batched_jobs_get_their_own_events_and_the_images_they_make_alone(
    client_for: Any, backend_for: Any
) -> None:
    backend = backend_for("sd15")
    bodies = [
        {**BODY, "prompt": "a red cat", "seed": 11},
        {**BODY, "prompt": "a blue dog", "seed": 22, "num_samples": 2, "preview_every": 2},
        {**BODY, "prompt": "a green bird", "negative_prompt": "blurry", "seed": 33},
    ]
    bodies[2]["negative_prompt"] = None  # (absent and null are the same request)
    async with client_for("sd15") as client:
        with slow_denoiser(backend, 0.05) as (unet, _), denoiser_batches(backend) as shapes:
            tasks = await queue_behind_a_blocker(client, unet, bodies, stream=True)
            responses = await asyncio.gather(*tasks)
        alone = [await solo(client, body) for body in bodies]
    assert batch_sizes(shapes)[:4] == [2 * 4] * 4, "one call for all four images (guidance doubles the batch)"
    diffs = []
    for body, response, reference in zip(bodies, responses, alone, strict=True):
        events = parse_sse(response.text)
        complete = check_events(events, body, steps=4)
        images = [pixels(decode(image)) for image in complete["images"]]
        assert len(images) == len(reference)
        diffs += [max_diff(a, b) for a, b in zip(images, reference, strict=True)]
        previews = [data["step"] for name, data in events if name == "preview"]
        assert previews == ([2, 4] if body.get("preview_every") else [])
    assert max(diffs) <= MAX_PIXEL_DIFF, diffs


async def test_incompatible_jobs_are_not_batched(client_for: Any, backend_for: Any) -> None:
    backend = backend_for("sd15")
    bodies = [
        {**BODY, "prompt": "a", "seed": 1},
        {**BODY, "prompt": "a", "seed": 1, "steps": 3},
        {**BODY, "prompt": "a", "seed": 1, "height": 56},
        {**BODY, "prompt": "a", "seed": 1, "guidance_scale": 3.0},
        {**BODY, "prompt": "a", "seed": 1, "negative_prompt": "blurry"},
        {**BODY, "prompt": "a", "seed": 1, "scheduler": "euler"},
    ]
    async with client_for("sd15", batching="window") as client:
        with slow_denoiser(backend, 0.01) as (unet, _), denoiser_batches(backend) as shapes:
            tasks = await queue_behind_a_blocker(client, unet, bodies)
            responses = await asyncio.gather(*tasks)
    assert all(r.status_code == 200 for r in responses)
    assert batch_sizes(shapes) == [2] * (4 * 5 + 3), "every job alone (one of them is 3 steps long)"


async def test_max_batch_counts_images_and_1_turns_batching_off(client_for: Any, backend_for: Any) -> None:
    backend = backend_for("sd15")
    bodies = [
        {**BODY, "prompt": "a", "seed": 1, "num_samples": 2},
        {**BODY, "prompt": "b", "seed": 2, "num_samples": 2},
        {**BODY, "prompt": "c", "seed": 3},
    ]
    async with client_for("sd15", batching="window", max_batch=3) as client:  # window packing: c passes b
        with slow_denoiser(backend, 0.01) as (unet, _), denoiser_batches(backend) as three:
            await asyncio.gather(*await queue_behind_a_blocker(client, unet, bodies))
    async with client_for("sd15", max_batch=1) as client:
        with slow_denoiser(backend, 0.01) as (unet, _), denoiser_batches(backend) as one:
            off = await asyncio.gather(*await queue_behind_a_blocker(client, unet, bodies))
        alone = [await solo(client, body) for body in bodies]
    assert batch_sizes(three) == [6] * 4 + [4] * 4, "a (2 images) + c (1) fill the 3 places; b runs next"
    assert sorted(batch_sizes(one)) == [2] * 4 + [4] * 8, "each job alone"
    for response, reference in zip(off, alone, strict=True):  # unbatched: byte for byte
        images = [pixels(decode(image)) for image in response.json()["images"]]
        assert all(np.array_equal(a, b) for a, b in zip(images, reference, strict=True))


async def test_a_crowd_waits_up_to_the_window_for_company(client_for: Any, backend_for: Any) -> None:
    backend = backend_for("sd15")
    bodies = [{**BODY, "prompt": "a", "seed": 1}, {**BODY, "prompt": "b", "seed": 2}]
    sizes = {}
    for window in (0, 5000):
        async with client_for("sd15", batching="window", batch_window_ms=window) as client:
            with slow_denoiser(backend, 0.05) as (unet, _), denoiser_batches(backend) as shapes:
                tasks = await queue_behind_a_blocker(client, unet, bodies)  # a crowd of three: expect a third
                await asyncio.sleep(0.3)
                late = await client.post("/execute", json={**BODY, "prompt": "c", "seed": 3}, headers=JSON)
                assert late.status_code == 200 and all(r.status_code == 200 for r in await asyncio.gather(*tasks))
        sizes[window] = batch_sizes(shapes)
    assert sizes == {0: [4] * 4 + [2] * 4, 5000: [6] * 4}


async def test_a_lone_client_never_waits_for_the_window(client_for: Any) -> None:
    async with client_for("sd15", batch_window_ms=5000) as client:
        for seed in (1, 2):
            start = time.monotonic()
            response = await client.post("/execute", json={**BODY, "prompt": "a", "seed": seed}, headers=JSON)
            assert response.status_code == 200 and time.monotonic() - start < 2.5


async def test_a_job_cancelled_inside_a_batch_ends_alone(client_for: Any, backend_for: Any) -> None:
    backend = backend_for("sd15")
    bodies = [{**BODY, "prompt": f"cat {seed}", "seed": seed, "steps": 8} for seed in (1, 2, 3)]
    async with client_for("sd15", batching="window") as client:
        with slow_denoiser(backend, 0.05) as (unet, decoder), denoiser_batches(backend) as shapes:
            tasks = await queue_behind_a_blocker(client, unet, bodies, stream=True)
            victim = await job_with_seed(client, 2)
            await wait_for_step(client, victim, 2)
            assert (await client.delete(f"/v1/jobs/{victim}")).status_code == 202
            responses = await asyncio.gather(*tasks)
            decodes = decoder.count
        alone = [await solo(client, body) for body in (bodies[0], bodies[2])]
    assert batch_sizes(shapes)[:8] == [6] * 8
    assert decodes == 2, "the blocker's decode and the batch's"
    cancelled = parse_sse(responses[1].text)
    error = {"job_id": victim, "code": "cancelled", "message": "cancelled by DELETE /v1/jobs"}
    assert cancelled[-1] == ("error", error)
    steps = [data["step"] for name, data in cancelled if name == "progress"]
    assert 2 <= len(steps) < 8 and steps == list(range(1, len(steps) + 1))
    for body, response, reference in zip((bodies[0], bodies[2]), (responses[0], responses[2]), alone, strict=True):
        complete = check_events(parse_sse(response.text), body, steps=8)
        assert max_diff(pixels(decode(complete["image"])), reference[0]) <= MAX_PIXEL_DIFF


async def test_a_batch_whose_jobs_are_all_cancelled_stops_before_decoding(client_for: Any, backend_for: Any) -> None:
    backend = backend_for("sd15")
    bodies = [{**BODY, "prompt": f"cat {seed}", "seed": seed, "steps": 20} for seed in (1, 2)]
    async with client_for("sd15") as client:
        with slow_denoiser(backend, 0.05) as (unet, decoder), denoiser_batches(backend) as shapes:
            tasks = await queue_behind_a_blocker(client, unet, bodies)
            ids = [await job_with_seed(client, seed) for seed in (1, 2)]
            await wait_for_step(client, ids[0], 1)
            for job_id in ids:
                await client.delete(f"/v1/jobs/{job_id}")
            responses = await asyncio.gather(*tasks)
            await asyncio.sleep(0.2)  # anything still running would show up now
            decodes = decoder.count
        after = await client.post("/execute", json={**BODY, "prompt": "after"}, headers=JSON)
    assert [r.json()["error"]["code"] for r in responses] == ["cancelled", "cancelled"]
    assert 1 <= len(batch_sizes(shapes)) < 20 and set(batch_sizes(shapes)) == {4}
    assert decodes == 1, "only the blocker was decoded"
    assert after.status_code == 200


async def test_jobs_that_time_out_inside_a_batch_end_with_timeout(client_for: Any, backend_for: Any) -> None:
    backend = backend_for("sd15")
    bodies = [{**BODY, "prompt": f"cat {seed}", "seed": seed, "steps": 40} for seed in (1, 2)]
    async with client_for("sd15", job_timeout=1.0) as client:
        with slow_denoiser(backend, 0.05) as (unet, decoder), denoiser_batches(backend) as shapes:
            responses = await asyncio.gather(*await queue_behind_a_blocker(client, unet, bodies))
            decodes = decoder.count
    assert [r.json()["error"]["code"] for r in responses] == ["timeout", "timeout"]
    assert 1 <= len(batch_sizes(shapes)) < 40 and set(batch_sizes(shapes)) == {4}
    assert decodes == 1, "only the blocker was decoded"


async def test_a_client_that_leaves_a_batch_cancels_only_its_job(backend_for: Any, tiny_model: Any) -> None:
    backend = backend_for("sd15")
    bodies = [{**BODY, "prompt": f"cat {seed}", "seed": seed, "steps": 8} for seed in (1, 2, 3)]

    async def leave_at_step_2(client: httpx.AsyncClient) -> str:
        async with client.stream("POST", "/execute", json=bodies[1]) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: ") and '"step":2' in line:
                    break
        return response.headers["x-job-id"]

    with live_server(worker_settings("sd15", tiny_model("sd15"), batching="window"), backend) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            with slow_denoiser(backend, 0.05) as (unet, _), denoiser_batches(backend) as shapes:
                stay = [bodies[0], bodies[2]]
                tasks = await queue_behind_a_blocker(client, unet, stay, stream=True, others=(leave_at_step_2(client),))
                *stayed, left = await asyncio.gather(*tasks)
                view = (await client.get(f"/v1/jobs/{left}")).json()
    assert batch_sizes(shapes)[:8] == [6] * 8
    assert view["status"] == "cancelled" and view["error"]["message"] == "client disconnected"
    assert 2 <= view["progress"]["step"] < 8
    for body, response in zip(stay, stayed, strict=True):
        check_events(parse_sse(response.text), body, steps=8)


async def job_with_seed(client: httpx.AsyncClient, seed: int) -> str:
    """The id of the remembered job whose first seed is `seed`."""
    jobs = (await client.get("/v1/jobs")).json()["jobs"]
    job_id: str = next(job["job_id"] for job in jobs if job["seeds"][0] == seed)
    return job_id


async def wait_for_step(client: httpx.AsyncClient, job_id: str, step: int) -> None:
    """Until the job has reported `step`."""
    deadline = time.monotonic() + 30
    while (await client.get(f"/v1/jobs/{job_id}")).json()["progress"]["step"] < step:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


class StepRecorder:
    """StepHooks that remember the steps and stages they were told about."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.stages: list[str] = []

    def stage(self, name: str) -> None:
        self.stages.append(name)

    def step(self, step: int) -> None:
        self.steps.append(step)

    def check(self) -> None:
        pass

    def wants_preview(self, step: int) -> int:
        return 0

    def preview(self, step: int, images: Any) -> None:
        pass


@pytest.mark.parametrize("arch", ["sd15", "sd21", "sdxl", "sd3", "zimage"])
@pytest.mark.parametrize("negative", [None, "blurry"])
def test_every_family_batches_within_the_bound(backend_for: Any, arch: str, negative: str | None) -> None:
    backend = backend_for(arch)
    family = backend.family
    scheduler = "flow_euler" if family.flow else "euler_a"  # ancestral: the scheduler draws noise per image too

    def request(prompt: str, seeds: tuple[int, ...]) -> GenerationRequest:
        return GenerationRequest(
            task="txt2img", prompt=prompt, negative_prompt=negative, steps=3, guidance_scale=family.guidance,
            seeds=seeds, width=64, height=64, scheduler=scheduler, output_format="png",
        )  # fmt: skip

    requests = [request("a red cat", (1,)), request("a blue dog", (5, 6)), request("green", (9,))]
    assert len({batch_key(r) for r in requests}) == 1
    alone = [
        backend.generate([r], [StepRecorder()], on_drop=lambda i, exc: pytest.fail(f"{i}: {exc}"))[0] for r in requests
    ]
    recorders = [StepRecorder() for _ in requests]
    batched = backend.generate(requests, list(recorders), on_drop=lambda i, exc: pytest.fail(f"{i}: {exc}"))
    for solo_images, images, recorder in zip(alone, batched, recorders, strict=True):
        assert images is not None and len(images) == len(solo_images)
        for a, b in zip(solo_images, images, strict=True):
            assert max_diff(pixels(a), pixels(b)) <= MAX_PIXEL_DIFF
        assert recorder.steps == [1, 2, 3] and recorder.stages == ["encoding_prompt", "denoising"]
