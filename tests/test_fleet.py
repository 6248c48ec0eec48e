"""The pieces of the Ray path that need no Ray: worker ids on responses, job-id tags and derived Serve options
(that a plain worker never loads Ray is checked in test_imports.py; the Ray Serve tests are in test_ray.py)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from worker.cli import app
from worker.config import Settings
from worker.deploy.affinity import TAG_LENGTH, replica_tag, tag_of_path
from worker.deploy.options import CONTROL_HEADROOM, FleetOptions, deployment_options, max_ongoing_requests

JOB_ID = "0123abcd" + "e" * 24
JSON = {"Accept": "application/json"}


async def test_every_response_of_a_plain_worker_names_the_worker(client_for: Any) -> None:
    async with client_for("sd15", worker_id="gpu-box-3") as client:
        responses = [
            await client.get("/health"),
            await client.get("/v1/jobs/" + JOB_ID),  # 404
            await client.post("/execute", json={"prompt": "x", "steps": 0}),  # 422
            await client.post("/execute", json={"prompt": "x", "steps": 2, "height": 64, "width": 64}),  # SSE
        ]
    assert [r.status_code for r in responses] == [200, 404, 422, 200]
    assert {r.headers["x-worker-id"] for r in responses} == {"gpu-box-3"}
    assert responses[0].json()["worker_id"] == "gpu-box-3"


async def test_job_ids_and_file_ids_start_with_the_replica_tag(client_for: Any) -> None:
    tag = replica_tag("xk3v9qz2")
    async with client_for("sd15", job_id_prefix=tag) as client:
        body = {"prompt": "x", "steps": 2, "height": 64, "width": 64}
        job = (await client.post("/execute", json=body, headers=JSON)).json()
        assert len(job["job_id"]) == 32 and job["job_id"].startswith(tag)
        generated = await client.post(
            "/v1/images/generations", json={"prompt": "x", "size": "64x64", "response_format": "url"}
        )
        url = generated.json()["data"][0]["url"]
        assert tag_of_path(httpx.URL(url).path) == tag
        assert (await client.get(url)).status_code == 200
    with pytest.raises(ValidationError, match="job_id_prefix"):
        Settings(job_id_prefix="not-hex")


def test_job_and_file_paths_name_their_replica_other_routes_do_not() -> None:
    assert len(replica_tag("abc")) == TAG_LENGTH and replica_tag("abc") != replica_tag("abd")
    for path in (f"/v1/jobs/{JOB_ID}", f"/v1/jobs/{JOB_ID}/events", f"/v1/jobs/{JOB_ID}/stream",
                 f"/v1/files/{JOB_ID}-0.png", f"/fleet/v1/jobs/{JOB_ID}"):  # fmt: skip
        assert tag_of_path(path) == "0123abcd", path
    for path in ("/execute", "/v1/jobs", f"/v1/jobs/{JOB_ID}0", "/v1/jobs/0123ABCD" + "e" * 24, "/health"):
        assert tag_of_path(path) is None, path


def test_serve_options_follow_the_worker_limits() -> None:
    settings = Settings(max_queue=5, max_batch=3, drain_timeout=12)
    assert max_ongoing_requests(settings) == 5 + 3 + CONTROL_HEADROOM
    fixed = deployment_options(settings, FleetOptions(replicas=3, replica_cpus=0.5), gpu=False)
    assert fixed["num_replicas"] == 3 and "autoscaling_config" not in fixed
    assert fixed["ray_actor_options"] == {"num_cpus": 0.5}
    assert fixed["max_ongoing_requests"] == 12 and fixed["max_queued_requests"] == 5
    assert fixed["backpressure_config"]["status_code"] == 429  # as the worker's own full queue answers
    assert fixed["graceful_shutdown_timeout_s"] > settings.drain_timeout
    scaled = deployment_options(
        settings, FleetOptions(min_replicas=1, max_replicas=4, target_ongoing_requests=3), gpu=True
    )
    assert scaled["ray_actor_options"]["num_gpus"] == 1 and "num_replicas" not in scaled
    assert scaled["autoscaling_config"]["max_replicas"] == 4
    assert scaled["autoscaling_config"]["target_ongoing_requests"] == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--min-replicas", "3", "--max-replicas", "2"], "--min-replicas"),
        (["--replicas", "0"], "--replicas must be at least 1"),
        (["--target-ongoing-requests", "0", "--replicas", "1"], "must be positive"),
        (["--device", "tpu"], "--device"),
    ],
)
def test_bad_fleet_options_are_clear_errors_before_ray_starts(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["ray", *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split()), result.output
