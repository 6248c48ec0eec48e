"""Engine behaviour a user notices: queue positions, keep-alives, timeouts, faults, output files, readiness."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from tests.support import (
    b64_png,
    centre_mask,
    decode,
    init_image,
    parse_sse,
    pixels,
    slow_denoiser,
    wait_ready,
    worker_settings,
)
from worker.api.app import create_app
from worker.backends.cpu import CpuBackend

JSON = {"Accept": "application/json"}
SMALL = {"width": 64, "height": 64, "scheduler": "ddim"}


async def test_waiting_jobs_hear_their_position_move_up(client_for: Any, backend_for: Any) -> None:
    # window batching: with continuous batching the second job would join the running one instead of waiting
    async with client_for("sd15", batching="window") as client:
        with slow_denoiser(backend_for("sd15"), 0.03) as (unet, _):
            first = asyncio.create_task(client.post("/execute", json={**SMALL, "prompt": "a", "steps": 6}))
            while unet.count == 0:
                await asyncio.sleep(0.01)
            second = asyncio.create_task(client.post("/execute", json={**SMALL, "prompt": "b", "steps": 6}))
            await asyncio.sleep(0.2)
            third = asyncio.create_task(client.post("/execute", json={**SMALL, "prompt": "c", "steps": 6}))
            responses = await asyncio.gather(first, second, third)
    positions = [data["position"] for name, data in parse_sse(responses[2].text) if name == "queued"]
    assert positions == [1, 0]
    assert all(parse_sse(r.text)[-1][0] == "complete" for r in responses)


async def test_silent_streams_get_keepalive_comments(client_for: Any, backend_for: Any) -> None:
    async with client_for("sd15", keepalive_seconds=0.05) as client:
        with slow_denoiser(backend_for("sd15"), 0.15):
            response = await client.post("/execute", json={**SMALL, "prompt": "a", "steps": 3})
    assert ": keep-alive" in response.text
    assert parse_sse(response.text)[-1][0] == "complete"


async def test_a_job_past_its_time_limit_ends_with_a_timeout_event(client_for: Any, backend_for: Any) -> None:
    async with client_for("sd15", job_timeout=0.3) as client:
        with slow_denoiser(backend_for("sd15"), 0.1) as (unet, decoder):
            response = await client.post("/execute", json={**SMALL, "prompt": "a", "steps": 30})
            events = parse_sse(response.text)
            assert events[-1][0] == "error" and events[-1][1]["code"] == "timeout"
            assert unet.count < 10 and decoder.count == 0
        after = await client.post("/execute", json={**SMALL, "prompt": "a", "steps": 2}, headers=JSON)
    assert after.status_code == 200


async def test_a_pipeline_failure_fails_that_job_only(client_for: Any, backend_for: Any) -> None:
    backend = backend_for("sd15")
    calls = 0

    def explode_once(*_: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("injected fault")

    handle = backend.model.denoiser.register_forward_pre_hook(explode_once)
    try:
        async with client_for("sd15") as client:
            failed = await client.post("/execute", json={**SMALL, "prompt": "a", "steps": 4}, headers=JSON)
            ok = await client.post("/execute", json={**SMALL, "prompt": "a", "steps": 4}, headers=JSON)
            health = (await client.get("/health")).json()
    finally:
        handle.remove()
    assert failed.status_code == 500
    error = failed.json()["error"]
    assert (error["code"], error["message"]) == ("model_error", "generation failed: RuntimeError: injected fault")
    assert error["request_id"] == failed.headers["x-request-id"]
    assert ok.status_code == 200 and health["status"] == "healthy"


async def test_output_dir_keeps_every_image_under_a_server_made_name(client_for: Any, tmp_path: Path) -> None:
    async with client_for("sd15", output_dir=tmp_path / "out") as client:
        body = {**SMALL, "prompt": "a", "steps": 2, "num_samples": 2, "output_format": "webp"}
        response = await client.post("/execute", json=body, headers=JSON)
    job_id = response.headers["x-job-id"]
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == [f"{job_id}-0.webp", f"{job_id}-1.webp"]


async def test_not_ready_while_loading(tiny_model: Any) -> None:
    settings = worker_settings("sd15", tiny_model("sd15"))
    gate = threading.Event()

    class GatedBackend(CpuBackend):
        def load(self) -> None:
            gate.wait(30)
            super().load()

    app = create_app(settings, backend=GatedBackend(settings))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://w") as client:
            ready = await client.get("/ready")
            health = (await client.get("/health")).json()
            refused = await client.post("/execute", json={"prompt": "a"})
            gate.set()
            await wait_ready(client)
    assert ready.status_code == 503 and ready.json() == {"ready": False, "reason": "loading the model"}
    assert health["status"] == "loading"
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "not_ready"


async def test_inpaint_keeps_unmasked_pixels_even_with_a_blurred_mask(client_for: Any) -> None:
    body = {
        **SMALL,
        "prompt": "a",
        "steps": 3,
        "image": b64_png(init_image()),
        "mask": b64_png(centre_mask()),
        "mask_blur": 4,
    }
    async with client_for("sd15") as client:
        result = (await client.post("/inpaint", json=body, headers=JSON)).json()
    out, original = pixels(decode(result["image"])), pixels(init_image())
    far = np.ones((64, 64), bool)
    far[4:60, 4:60] = False  # 12 px away from the 32x32 centre square: beyond the blur
    assert np.array_equal(out[far], original[far])
    assert not np.array_equal(out[24:40, 24:40], original[24:40, 24:40])


async def test_img2img_size_defaults_to_the_uploaded_image(client_for: Any) -> None:
    body = {"prompt": "a", "steps": 2, "image": b64_png(init_image(48)), "scheduler": "ddim"}
    async with client_for("sd15") as client:
        result = (await client.post("/img2img", json=body, headers=JSON)).json()
    assert (result["width"], result["height"]) == (48, 48)


async def test_health_is_degraded_while_the_device_keeps_failing(client_for: Any, backend_for: Any) -> None:
    failing = True

    def maybe_fail(*_: Any) -> None:
        if failing:
            raise RuntimeError("injected device fault")

    handle = backend_for("sd15").model.denoiser.register_forward_pre_hook(maybe_fail)
    try:
        async with client_for("sd15") as client:
            statuses = []
            for _ in range(3):
                await client.post("/execute", json={**SMALL, "prompt": "a", "steps": 2}, headers=JSON)
                statuses.append((await client.get("/health")).json()["status"])
            failing = False
            ok = await client.post("/execute", json={**SMALL, "prompt": "a", "steps": 2}, headers=JSON)
            after = (await client.get("/health")).json()["status"]
    finally:
        handle.remove()
    assert statuses == ["healthy", "healthy", "degraded"]
    assert ok.status_code == 200 and after == "healthy"
