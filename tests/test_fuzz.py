"""Property-based fuzzing of the OpenAPI schema with schemathesis: no input may cause a 5xx.

Bounded for CI: 30 examples per operation and mode against a live worker whose limits keep any valid job tiny.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.support import live_server, worker_settings
from worker.api.app import create_app
from worker.config import Limits, Settings

LIMITS = {"max_pixels": 64 * 64, "max_steps": 3, "max_samples": 2, "max_prompt_chars": 200}
# the schema does not depend on the model: build it from an app that is never started
schema = schemathesis.openapi.from_dict(create_app(Settings(sd_version="v1-5")).openapi())
# valid-per-schema bodies (which run real jobs) and schema-violating ones (which must get a 4xx, never a 5xx)
schema.config.generation.update(modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])


@pytest.fixture(scope="module")
def fuzz_url(backend_for: Any, tiny_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    out: Path = tmp_path_factory.mktemp("fuzz-out")
    settings_ = worker_settings("sd15", tiny_model("sd15"), output_dir=out, limits=Limits(**LIMITS))
    with live_server(settings_, backend_for("sd15")) as url:
        yield url


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_causes_a_server_error(case: Any, fuzz_url: str) -> None:
    response = case.call(base_url=fuzz_url, timeout=60)
    assert response.status_code < 500, f"{case.method} {case.path} → {response.status_code}: {response.text[:300]}"
