"""The SSE contract, seeds, output formats and the job routes, on the tiny SD1.5 pipeline."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np

from tests.support import decode, parse_sse, pixels
from worker.imaging import read_user_comment

JSON = {"Accept": "application/json"}
SMALL = {"width": 64, "height": 64}


async def test_stream_is_started_then_one_progress_per_step_then_complete(client_for: Any) -> None:
    async with client_for("sd15") as client:
        body = {**SMALL, "prompt": "a cat", "steps": 7, "seed": 3, "scheduler": "ddim"}
        response = await client.post("/execute", json=body)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = parse_sse(response.text)
    names = [name for name, _ in events if name not in ("queued", "stage")]
    assert names == ["started"] + ["progress"] * 7 + ["complete"]
    progress = [data for name, data in events if name == "progress"]
    assert [p["step"] for p in progress] == list(range(1, 8))
    assert all(p["total_steps"] == 7 for p in progress)
    assert progress[-1]["percent"] == 100.0
    stages = [data["stage"] for name, data in events if name == "stage"]
    assert stages == ["encoding_prompt", "denoising", "decoding", "encoding_image"]
    started = next(data for name, data in events if name == "started")
    assert started["seeds"] == [3] and started["total_steps"] == 7
    complete = events[-1][1]
    assert complete["image"] == complete["images"][0]
    assert decode(complete["image"]).size == (64, 64)
    assert {data["job_id"] for _, data in events} == {complete["job_id"]}


async def test_progress_counts_what_the_model_scheduler_really_runs(client_for: Any) -> None:
    # The tiny SD1.5 model keeps SD1.5's own PNDM (PLMS) scheduler, which makes one extra denoiser call.
    async with client_for("sd15") as client:
        events = parse_sse((await client.post("/execute", json={**SMALL, "prompt": "a cat", "steps": 5})).text)
    started = next(data for name, data in events if name == "started")
    progress = [data["step"] for name, data in events if name == "progress"]
    assert started["total_steps"] == 6
    assert progress == [1, 2, 3, 4, 5, 6]


async def test_event_ids_are_a_per_job_sequence(client_for: Any) -> None:
    async with client_for("sd15") as client:
        text = (await client.post("/execute", json={**SMALL, "prompt": "a cat", "steps": 2})).text
    ids = [int(line[4:]) for line in text.splitlines() if line.startswith("id: ")]
    assert ids == list(range(len(ids)))


async def test_img2img_reports_only_the_steps_it_runs(client_for: Any) -> None:
    from tests.support import b64_png, init_image

    body = {
        **SMALL,
        "prompt": "a cat",
        "steps": 10,
        "strength": 0.55,
        "image": b64_png(init_image()),
        "scheduler": "ddim",
    }
    async with client_for("sd15") as client:
        events = parse_sse((await client.post("/img2img", json=body)).text)
    progress = [data["step"] for name, data in events if name == "progress"]
    assert progress == list(range(1, 6))  # diffusers runs int(10 * 0.55) = 5 steps


async def test_seed_in_response_reproduces_the_image(client_for: Any) -> None:
    async with client_for("sd15") as client:
        first = (await client.post("/execute", json={**SMALL, "prompt": "a dog", "steps": 3}, headers=JSON)).json()
        again = {**SMALL, "prompt": "a dog", "steps": 3, "seed": first["seed"]}
        second = (await client.post("/execute", json=again, headers=JSON)).json()
        other = (await client.post("/execute", json={**again, "seed": first["seed"] + 1}, headers=JSON)).json()
    assert np.array_equal(pixels(decode(first["image"])), pixels(decode(second["image"])))
    assert not np.array_equal(pixels(decode(first["image"])), pixels(decode(other["image"])))


async def test_each_sample_is_reproducible_alone(client_for: Any) -> None:
    async with client_for("sd15") as client:
        batch = (
            await client.post(
                "/execute", json={**SMALL, "prompt": "a dog", "steps": 3, "seed": 10, "num_samples": 3}, headers=JSON
            )
        ).json()
        assert batch["seeds"] == [10, 11, 12]
        assert len(batch["images"]) == 3
        alone = (
            await client.post("/execute", json={**SMALL, "prompt": "a dog", "steps": 3, "seed": 12}, headers=JSON)
        ).json()
    batch_image = pixels(decode(batch["images"][2])).astype(int)
    alone_image = pixels(decode(alone["image"])).astype(int)
    # Same noise and same math; a batch of 3 may round differently in the last bit of a few pixels.
    assert np.abs(batch_image - alone_image).max() <= 2


async def test_random_seed_when_absent_or_minus_one(client_for: Any) -> None:
    async with client_for("sd15") as client:
        seeds = [
            (await client.post("/execute", json={**SMALL, "prompt": "x", "steps": 1, "seed": -1}, headers=JSON)).json()[
                "seed"
            ]
            for _ in range(2)
        ]
    assert seeds[0] != seeds[1]
    assert all(0 <= seed < 2**32 for seed in seeds)


async def test_png_carries_a1111_parameters_and_the_request(client_for: Any) -> None:
    body = {**SMALL, "prompt": "a cat", "negative_prompt": "dog", "steps": 2, "seed": 5, "scheduler": "euler_a"}
    async with client_for("sd15") as client:
        result = (await client.post("/execute", json=body, headers=JSON)).json()
    image = decode(result["image"])
    assert image.format == "PNG"
    assert image.info["parameters"] == (
        "a cat\nNegative prompt: dog\nSteps: 2, Sampler: Euler a, CFG scale: 7.5, Seed: 5, Size: 64x64, Model: v1-5"
    )
    echoed = json.loads(image.info["sd-worker"])
    assert echoed["prompt"] == "a cat" and echoed["seed"] == 5 and echoed["scheduler"] == "euler_a"


async def test_jpeg_and_webp_carry_metadata_in_exif(client_for: Any) -> None:
    async with client_for("sd15") as client:
        for fmt, pil_name in (("jpeg", "JPEG"), ("webp", "WEBP")):
            body = {**SMALL, "prompt": "a cat", "steps": 2, "seed": 5, "output_format": fmt}
            result = (await client.post("/execute", json=body, headers=JSON)).json()
            image = decode(result["image"])
            assert result["format"] == fmt and image.format == pil_name
            comment = read_user_comment(image)
            assert comment is not None and "Seed: 5" in comment and comment.startswith("a cat\n")


async def test_job_routes_show_status_result_and_replay_events(client_for: Any) -> None:
    async with client_for("sd15") as client:
        body = {**SMALL, "prompt": "a cat", "steps": 3, "scheduler": "ddim"}
        response = await client.post("/execute", json=body, headers=JSON)
        job_id = response.headers["x-job-id"]
        view = (await client.get(f"/v1/jobs/{job_id}")).json()
        assert view["status"] == "completed"
        assert view["progress"] == {"step": 3, "total_steps": 3, "percent": 100.0}
        assert view["result"]["image"] == response.json()["image"]
        replay = parse_sse((await client.get(f"/v1/jobs/{job_id}/events")).text)
        assert [name for name, _ in replay if name == "progress"] == ["progress"] * 3
        assert replay[-1][0] == "complete"
        missing = await client.get("/v1/jobs/0123456789abcdef0123456789abcdef")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


async def test_health_and_ready(client_for: Any) -> None:
    async with client_for("sd15") as client:
        health = (await client.get("/health")).json()
        ready = await client.get("/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True}
    assert health["status"] == "healthy"
    assert health["model_version"] == "v1-5" and health["device"] == "cpu" and health["dtype"] == "fp32"
    for key in ("worker_id", "model_ref", "uptime_seconds", "queue_depth", "active_jobs", "version"):
        assert key in health


def zlib_level(png: bytes) -> int:
    """FLEVEL of the first IDAT chunk's zlib header: 0 = fastest (levels 0-1) … 2 = default (6) … 3 = max (7-9)."""
    start = png.index(b"IDAT") + 4
    return png[start + 1] >> 6


async def test_png_compression_sets_the_zlib_level(client_for: Any) -> None:
    body = {"width": 128, "height": 128, "prompt": "a cat", "steps": 2, "seed": 5}
    encoded = {}
    for level in (None, 6, 9):
        async with client_for("sd15", **({} if level is None else {"png_compression": level})) as client:
            encoded[level] = base64.b64decode((await client.post("/execute", json=body, headers=JSON)).json()["image"])
    assert {level: zlib_level(png) for level, png in encoded.items()} == {None: 0, 6: 2, 9: 3}  # default: 1
    assert len(encoded[None]) > len(encoded[9])
    decoded = [pixels(decode(base64.b64encode(png).decode())) for png in encoded.values()]
    assert all(np.array_equal(decoded[0], other) for other in decoded[1:])
