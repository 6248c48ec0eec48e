"""`GET /v1/capabilities` says what the worker accepts, and every choice it lists is accepted; the playground's
files are served at `/` without the API key and reach nothing outside the worker."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import make_tiny_models
import pytest

from tests.support import app_client, decode, worker_settings
from worker.api.playground import STATIC_DIR
from worker.backends.cpu import CpuBackend
from worker.config import Limits
from worker.pipelines.families import FAMILIES

JSON = {"Accept": "application/json"}
SMALL = {"prompt": "a cat", "width": 64, "height": 64, "steps": 2, "seed": 1}


@pytest.fixture(scope="module")
def lora_dir(tiny_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("caps-loras")
    make_tiny_models.make_lora(tiny_model("sd15"), folder / "ink.safetensors", seed=1)
    make_tiny_models.make_lora(tiny_model("sdxl"), folder / "xl-style.safetensors", seed=3)
    return folder


@pytest.fixture(scope="module")
def backend(tiny_model: Any, lora_dir: Path) -> CpuBackend:
    backend = CpuBackend(worker_settings("sd15", tiny_model("sd15"), lora_dir=lora_dir))
    backend.load()
    return backend


async def test_capabilities_describe_the_worker_and_every_listed_choice_is_accepted(
    backend: CpuBackend, tiny_model: Any, lora_dir: Path
) -> None:
    limits = Limits(max_steps=40, max_samples=3, max_prompt_chars=500)
    settings = worker_settings("sd15", tiny_model("sd15"), lora_dir=lora_dir, limits=limits, max_queue=5)
    async with app_client(settings, backend) as client:
        caps = (await client.get("/v1/capabilities")).json()
        assert caps["family"] == "v1-5" and caps["ready"] is True and caps["components"] == "all"
        top = FAMILIES["v1-5"].max_size
        assert caps["size"] == {
            "native": {"width": 512, "height": 512},
            "max": {"width": top, "height": top},
            "multiple": 8,
            "max_pixels": min(top * top, settings.limits.max_pixels),
        }
        assert caps["limits"]["max_steps"] == 40 and caps["limits"]["max_samples"] == 3
        assert caps["limits"]["max_prompt_chars"] == 500 and caps["limits"]["max_queue"] == 5
        assert {"txt2img", "img2img", "inpaint"} <= set(caps["tasks"])
        assert caps["defaults"]["strength"] == {"img2img": 0.8, "inpaint": 1.0}

        names = [scheduler["name"] for scheduler in caps["schedulers"]]
        formats = caps["output_formats"]
        # the server's own refusal lists exactly these names; a first, middle and last one (one per output
        # format) really run — all 20-odd would cost seconds of the suite's budget
        sample = [names[0], names[len(names) // 2], names[-1]]
        for index, name in enumerate(sample):
            body = {**SMALL, "scheduler": name, "output_format": formats[index % len(formats)]}
            response = await client.post("/execute", json=body, headers=JSON)
            assert response.status_code == 200, (name, response.text)
            assert response.json()["format"] == body["output_format"]
        refused = await client.post("/execute", json={**SMALL, "scheduler": "flow_euler"}, headers=JSON)
        assert refused.status_code == 422 and refused.json()["error"]["message"].endswith(f"valid: {', '.join(names)}")

        for field, limit in (("steps", 40), ("num_samples", 3)):
            over = await client.post("/execute", json={**SMALL, field: limit + 1}, headers=JSON)
            assert over.status_code == 422 and over.json()["error"]["field"] == field
        long_prompt = await client.post("/execute", json={**SMALL, "prompt": "x" * 501}, headers=JSON)
        assert long_prompt.status_code == 422 and long_prompt.json()["error"]["field"] == "prompt"

        # the defaults are what a request without those fields gets
        plain = await client.post("/execute", json={"prompt": "a cat", "width": 64, "height": 64}, headers=JSON)
        parameters = _parameters(plain.json()["image"])
        assert f"Steps: {caps['defaults']['steps']}," in parameters and caps["defaults"]["steps"] == 30
        assert f"Sampler: {caps['defaults']['model_scheduler']}," in parameters
        assert f"CFG scale: {caps['defaults']['guidance_scale']:g}," in parameters

        loras = {lora["name"]: lora["compatible"] for lora in caps["loras"]}
        assert loras == {"ink": True, "xl-style": False}
        for name, fits in loras.items():
            response = await client.post("/execute", json={**SMALL, "loras": [{"name": name}]}, headers=JSON)
            assert response.status_code == (200 if fits else 422)


def _parameters(b64: str) -> str:
    image = decode(b64)
    text: str = image.info["parameters"]
    return text


async def test_the_page_is_open_without_the_key_and_the_api_is_not(backend: CpuBackend, tiny_model: Any) -> None:
    async with app_client(worker_settings("sd15", tiny_model("sd15"), api_key="k3y"), backend) as client:
        assert (await client.get("/v1/capabilities")).status_code == 401
        caps = await client.get("/v1/capabilities", headers={"Authorization": "Bearer k3y"})
        assert caps.status_code == 200 and caps.json()["family"] == "v1-5"

        page = await client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="/playground/playground.js">' in page.text
        for path in sorted(STATIC_DIR.iterdir()):
            served = await client.get(f"/playground/{path.name}")
            assert served.status_code == 200 and served.content == path.read_bytes(), path.name
        assert (await client.get("/playground/playground.js")).headers["content-type"].startswith("text/javascript")
        assert (await client.get("/playground/%2e%2e/v1/jobs")).status_code == 404, "no way around the key"
        assert (await client.get("/v1/jobs")).status_code == 401, "only the page's own files are open"


def test_the_page_loads_nothing_from_outside_the_worker() -> None:
    """Offline: no CDN, no absolute URL; every module and stylesheet the page names is in the package."""
    for path in STATIC_DIR.iterdir():
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", path.read_text()), path.name
    html = (STATIC_DIR / "index.html").read_text()
    referenced = re.findall(r'(?:src|href)="/playground/([^"]+)"', html)
    imported = [name for path in STATIC_DIR.glob("*.js") for name in re.findall(r'from "\./([^"]+)"', path.read_text())]
    assert referenced and imported
    for name in [*referenced, *imported]:
        assert (STATIC_DIR / name).is_file(), name
