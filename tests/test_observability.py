"""Prometheus metrics and CORS."""

from __future__ import annotations

from typing import Any

JSON = {"Accept": "application/json"}
BODY = {"prompt": "a cat", "steps": 3, "width": 64, "height": 64, "scheduler": "ddim"}


def sample(text: str, name: str) -> float:
    """The value of one sample line of the Prometheus text format."""
    line = next(line for line in text.splitlines() if line.startswith(name + " ") or line.startswith(name + "{"))
    return float(line.rsplit(" ", 1)[1])


async def test_metrics_count_jobs_steps_and_images(client_for: Any) -> None:
    async with client_for("sd15") as client:
        await client.post("/execute", json={**BODY, "num_samples": 2}, headers=JSON)
        await client.post("/execute", json={**BODY, "scheduler": "flow_euler"}, headers=JSON)  # 422: no job
        text = (await client.get("/metrics")).text
    assert sample(text, 'sd_worker_jobs_total{outcome="completed"}') == 1
    assert sample(text, "sd_worker_images_total") == 2
    assert sample(text, "sd_worker_step_seconds_count") == 3
    assert sample(text, "sd_worker_job_seconds_count") == 1
    assert sample(text, "sd_worker_queue_depth") == 0
    assert sample(text, "sd_worker_out_of_memory_total") == 0


async def test_cors_is_off_unless_origins_are_listed(client_for: Any) -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}  # fmt: skip
    async with client_for("sd15") as client:
        closed = await client.options("/execute", headers=preflight)
        assert "access-control-allow-origin" not in closed.headers
    async with client_for("sd15", cors_origin=["https://app.example"], api_key="k") as client:
        allowed = await client.options("/execute", headers=preflight)
        other = await client.options("/execute", headers={**preflight, "Origin": "https://evil.example"})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in other.headers


async def test_request_ids_are_echoed_and_put_in_error_bodies(client_for: Any) -> None:
    async with client_for("sd15") as client:
        given = await client.post("/execute", json={**BODY, "steps": 0}, headers={"X-Request-Id": "abc-123"})
        made = await client.get("/v1/jobs/unknown")
        hostile = await client.get("/health", headers={"X-Request-Id": "bad id\r\nx"})
    assert given.headers["x-request-id"] == "abc-123" and given.json()["error"]["request_id"] == "abc-123"
    assert (
        len(made.headers["x-request-id"]) == 32 and made.json()["error"]["request_id"] == made.headers["x-request-id"]
    )
    assert hostile.headers["x-request-id"] != "bad id"
