"""`--api-key`: Bearer auth on every route but the probes (/health, /ready), for the native and OpenAI APIs alike."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.support import serve_app, worker_settings
from worker.api.app import create_app

BODY = {"prompt": "a cat", "steps": 2, "width": 64, "height": 64}


async def test_every_route_but_the_probes_needs_the_key(client_for: Any) -> None:
    async with client_for("sd15", api_key="s3cret") as client:
        # Kubernetes-style probes send no headers: both answer without the key
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/ready")).json() == {"ready": True}
        for method, path in (("GET", "/metrics"), ("POST", "/execute"), ("GET", "/v1/jobs"), ("GET", "/v1/models")):
            response = await client.request(method, path, json=BODY)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"] == "Bearer"
        wrong = await client.post("/execute", json=BODY, headers={"Authorization": "Bearer s3cres"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthorized"
        right = await client.post(
            "/execute", json=BODY, headers={"Authorization": "Bearer s3cret", "Accept": "application/json"}
        )
        assert right.status_code == 200


def test_the_openai_client_uses_its_api_key(backend_for: Any, tiny_model: Any) -> None:
    settings = worker_settings("sd15", tiny_model("sd15"), api_key="s3cret")
    with serve_app(create_app(settings, backend=backend_for("sd15"))) as url:
        good = openai.OpenAI(base_url=f"{url}/v1", api_key="s3cret", max_retries=0)
        assert "v1-5" in [m.id for m in good.models.list()]
        bad = openai.OpenAI(base_url=f"{url}/v1", api_key="nope", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as refused:
            bad.models.list()
    assert refused.value.code == "invalid_api_key"
