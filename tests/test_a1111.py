"""The AUTOMATIC1111 API against a live worker, driven by `webuiapi` and by the requests Open WebUI and SillyTavern
send (replayed from their source: open-webui `backend/open_webui/routers/images.py`, SillyTavern
`src/endpoints/stable-diffusion.js` + `public/scripts/extensions/stable-diffusion/index.js`)."""

from __future__ import annotations

import base64
import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import make_tiny_models
import numpy as np
import pytest
import webuiapi

from tests.support import b64_png, centre_mask, decode, init_image, serve_app, worker_settings
from worker.api.app import create_app
from worker.backends.cpu import CpuBackend
from worker.engine.protocol import GenerationRequest

KEY = "sekrit"
BEARER = {"Authorization": f"Bearer {KEY}", "Accept": "application/json"}
BASIC = {"authorization": "Basic " + base64.b64encode(f"webui:{KEY}".encode()).decode()}  # Open WebUI's header
SMALL = {"steps": 4, "cfg_scale": 5.0, "width": 64, "height": 64}


@pytest.fixture(scope="module")
def lora_dir(tiny_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("a1111-loras")
    make_tiny_models.make_lora(tiny_model("sd15"), folder / "ink.safetensors", seed=1)
    return folder


@pytest.fixture(scope="module")
def url(tiny_model: Any, lora_dir: Path) -> Iterator[str]:
    """A live worker (real uvicorn) on the tiny SD1.5 model, with an API key and a LoRA folder."""
    settings = worker_settings("sd15", tiny_model("sd15"), lora_dir=lora_dir, api_key=KEY)
    backend = CpuBackend(settings)
    backend.load()
    with serve_app(create_app(settings, backend=backend)) as base:
        deadline = time.monotonic() + 60
        while httpx.get(f"{base}/ready", headers=BEARER).status_code != 200:  # /ready asks for the key too
            assert time.monotonic() < deadline, "worker never became ready"
            time.sleep(0.05)
        yield base


@pytest.fixture(scope="module")
def api(url: str) -> webuiapi.WebUIApi:
    """webuiapi as its README sets it up for a web UI started with --api-auth."""
    host, port = url.removeprefix("http://").split(":")
    return webuiapi.WebUIApi(host=host, port=int(port), sampler="Euler a", steps=4, username="me", password=KEY)


class SilentHooks:
    """Step hooks nobody listens to (a job run on the backend directly)."""

    def stage(self, name: str) -> None: ...
    def step(self, step: int) -> None: ...
    def check(self) -> None: ...
    def wants_preview(self, step: int) -> bool:
        return False

    def preview(self, step: int, image: Any) -> None: ...


def pixels(image: Any) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def native(url: str, route: str, body: dict[str, Any]) -> list[np.ndarray]:
    response = httpx.post(f"{url}{route}", json=body, headers=BEARER, timeout=120)
    assert response.status_code == 200, response.text
    return [pixels(decode(image)) for image in response.json()["images"]]


def test_txt2img_batch_seeds_and_pixels_equal_execute(api: webuiapi.WebUIApi, url: str) -> None:
    result = api.txt2img(prompt="a lighthouse", negative_prompt="fog", seed=1234, batch_size=2, **SMALL)
    assert result.info["all_seeds"] == [1234, 1235]
    assert result.info["seed"] == 1234 and result.info["sampler_name"] == "Euler a"
    expected = native(url, "/execute", {"prompt": "a lighthouse", "negative_prompt": "fog", "seed": 1234,
                                        "num_samples": 2, "steps": 4, "guidance_scale": 5.0, "width": 64,
                                        "height": 64, "scheduler": "euler_a"})  # fmt: skip
    assert len(result.images) == 2
    for got, want in zip(result.images, expected, strict=True):
        assert np.array_equal(pixels(got), want)
    # image i alone with seed + i: per-image seeds (within 1/255: a batch of one picks other CPU kernels)
    alone = api.txt2img(prompt="a lighthouse", negative_prompt="fog", seed=1235, **SMALL)
    assert np.abs(pixels(alone.image) - pixels(result.images[1])).max() <= 1
    infotext = result.images[1].info["parameters"]
    assert infotext == result.info["infotexts"][1]
    assert "Seed: 1235" in infotext and "Sampler: Euler a" in infotext


def test_n_iter_continues_seeds_and_png_info_reads_infotext(api: webuiapi.WebUIApi) -> None:
    result = api.txt2img(prompt="a (red:1.3) kite", seed=7, batch_size=1, n_iter=2, **SMALL)
    assert result.info["all_seeds"] == [7, 8] and len(result.images) == 2
    info = api.png_info(result.images[1])
    assert info.info == result.info["infotexts"][1]
    parameters = info.json["parameters"]
    assert parameters["Prompt"] == "a (red:1.3) kite"
    assert parameters["Seed"] == "8" and parameters["Size-1"] == "64" and parameters["Steps"] == "4"


def test_img2img_equals_native_and_inpaint_keeps_unmasked_pixels(api: webuiapi.WebUIApi, url: str) -> None:
    init = init_image(64)
    result = api.img2img(images=[init], prompt="a barn", seed=5, denoising_strength=0.6, **SMALL)
    expected = native(url, "/img2img", {"prompt": "a barn", "seed": 5, "steps": 4, "guidance_scale": 5.0,
                                        "image": b64_png(init), "strength": 0.6, "scheduler": "euler_a"})  # fmt: skip
    assert np.array_equal(pixels(result.image), expected[0])
    mask = centre_mask(64)
    painted = api.img2img(images=[init], mask_image=mask, prompt="a barn", seed=5, denoising_strength=0.9,
                          mask_blur=0, inpainting_fill=1, inpaint_full_res=False, **SMALL)  # fmt: skip
    keep = np.asarray(mask) == 0
    assert np.array_equal(pixels(painted.image)[keep], pixels(init)[keep])
    assert not np.array_equal(pixels(painted.image)[~keep], pixels(init)[~keep])
    # inverted mask: the centre is kept instead
    inverted = api.img2img(images=[init], mask_image=mask, prompt="a barn", seed=5, denoising_strength=0.9,
                           mask_blur=0, inpainting_fill=1, inpaint_full_res=False, inpainting_mask_invert=1,
                           **SMALL)  # fmt: skip
    assert np.array_equal(pixels(inverted.image)[~keep], pixels(init)[~keep])


def test_inpaint_only_masked_with_webuiapi_defaults(api: webuiapi.WebUIApi) -> None:
    """webuiapi's img2img defaults: inpaint_full_res (only the masked area, at full size), fill, mask_blur 4."""
    init, mask = init_image(64), centre_mask(64)
    keep = np.asarray(mask) == 0
    sharp = api.img2img(images=[init], mask_image=mask, prompt="a barn", seed=5, mask_blur=0, **SMALL)
    assert np.array_equal(pixels(sharp.image)[keep], pixels(init)[keep])
    assert not np.array_equal(pixels(sharp.image)[~keep], pixels(init)[~keep])
    whole = api.img2img(images=[init], mask_image=mask, prompt="a barn", seed=5, mask_blur=0,
                        inpaint_full_res=False, **SMALL)  # fmt: skip
    assert not np.array_equal(pixels(sharp.image)[~keep], pixels(whole.image)[~keep])
    default = api.img2img(images=[init], mask_image=mask, prompt="a barn", seed=5, **SMALL)
    far = np.zeros((64, 64), bool)
    far[:4], far[-4:], far[:, :4], far[:, -4:] = True, True, True, True  # beyond the 4 px blur's reach
    assert np.array_equal(pixels(default.image)[far], pixels(init)[far])
    assert "Seed: 5" in default.image.info["parameters"]


def test_models_samplers_options(api: webuiapi.WebUIApi, url: str) -> None:
    models = api.get_sd_models()
    assert len(models) == 1
    title = models[0]["title"]
    assert api.get_options()["sd_model_checkpoint"] == title
    names = [s["name"] for s in api.get_samplers()]
    assert {"Euler a", "Euler", "DPM++ 2M", "DDIM", "PLMS", "UniPC"} <= set(names)
    assert "automatic" in [s["name"] for s in api.get_schedulers()]
    api.set_options({"sd_model_checkpoint": title, "my_extension_setting": 3})
    assert api.get_options()["my_extension_setting"] == 3
    other = httpx.post(f"{url}/sdapi/v1/options", json={"sd_model_checkpoint": "sdxl.safetensors"}, headers=BASIC)
    assert other.status_code == 400 and "sd_model_checkpoint" in other.text
    assert api.get_loras() == [{"name": "ink", "alias": "ink", "path": "ink.safetensors", "metadata": {}}]


def test_karras_sampler_and_lora_tag_equal_native(api: webuiapi.WebUIApi, url: str) -> None:
    result = api.txt2img(prompt="a fox <lora:ink:0.8>", seed=3, sampler_name="DPM++ 2M", scheduler="Karras", **SMALL)
    assert "Sampler: DPM++ 2M Karras" in result.info["infotexts"][0]
    expected = native(url, "/execute", {"prompt": "a fox", "seed": 3, "steps": 4, "guidance_scale": 5.0,
                                        "width": 64, "height": 64, "scheduler": "dpmpp_2m_karras",
                                        "loras": [{"name": "ink", "weight": 0.8}]})  # fmt: skip
    assert np.array_equal(pixels(result.image), expected[0])
    # A1111 1.9+: "Automatic" is DPM++ 2M's own default, Karras; the old one-string spelling says the same
    automatic = api.txt2img(prompt="a fox", seed=3, sampler_name="DPM++ 2M", scheduler="automatic", **SMALL)
    legacy = api.txt2img(prompt="a fox", seed=3, sampler_name="DPM++ 2M Karras", scheduler="", **SMALL)
    assert np.array_equal(pixels(automatic.image), pixels(legacy.image))


def test_clip_skip(api: webuiapi.WebUIApi, url: str, backend_for: Any) -> None:
    """SDXL/SD3 apply A1111's CLIP skip as diffusers' clip_skip; SD1.x refuses it (upstream breakage)."""
    refused = httpx.post(f"{url}/sdapi/v1/txt2img", headers=BASIC, json={
        "prompt": "x", **SMALL, "override_settings": {"CLIP_stop_at_last_layers": 2}})  # fmt: skip
    assert refused.status_code == 400 and "from 1 to 1" in refused.text
    xl = backend_for("sdxl")
    assert xl.family.supports_clip_skip
    request = GenerationRequest(task="txt2img", prompt="a red kite", negative_prompt=None, steps=2,
                                guidance_scale=5.0, seeds=(1,), width=64, height=64, scheduler=None,
                                output_format="png")  # fmt: skip

    def run(job: GenerationRequest) -> np.ndarray:
        [images] = xl.generate([job], [SilentHooks()], lambda index, exc: None)
        assert images is not None
        return pixels(images[0])

    plain, skipped = run(request), run(dataclasses.replace(request, clip_skip=1))
    assert not np.array_equal(plain, skipped)


def test_prompt_syntax_emphasis_long_prompts_and_reduced_forms(api: webuiapi.WebUIApi, url: str) -> None:
    plain = api.txt2img(prompt="a red kite", seed=11, **SMALL)
    weighted = api.txt2img(prompt="a (red:1.6) kite", seed=11, **SMALL)
    assert not np.array_equal(pixels(plain.image), pixels(weighted.image))
    # the native route reads the same syntax only when asked
    body = {"prompt": "a (red:1.6) kite", "seed": 11, "steps": 4, "guidance_scale": 5.0, "width": 64, "height": 64,
            "scheduler": "euler_a"}  # fmt: skip
    assert np.array_equal(native(url, "/execute", {**body, "prompt_syntax": True})[0], pixels(weighted.image))
    assert not np.array_equal(native(url, "/execute", body)[0], pixels(weighted.image))
    # past 77 tokens: encoded in chunks, so the tail of the prompt still changes the picture
    head = ", ".join(["a red kite over a green hill"] * 12)
    long_a = api.txt2img(prompt=f"{head}, blue sky", seed=11, **SMALL)
    long_b = api.txt2img(prompt=f"{head}, night sky", seed=11, **SMALL)
    assert not np.array_equal(pixels(long_a.image), pixels(long_b.image))
    reduced = api.txt2img(prompt="a [cat:dog:0.5] on [grass|sand]", seed=11, **SMALL)
    assert 'Prompt syntax: "[from:to:when] and [a|b] reduced to plain text"' in reduced.info["infotexts"][0]


def test_progress_moves_from_0_to_1_then_idle(api: webuiapi.WebUIApi) -> None:
    seen: list[dict[str, Any]] = []
    runner = threading.Thread(target=lambda: api.txt2img(prompt="a slow tree", seed=1, steps=40, width=64, height=64))
    runner.start()
    while runner.is_alive():
        seen.append(api.get_progress())
        time.sleep(0.005)
    runner.join()
    running = [p for p in seen if p["state"]["job_count"] > 0]
    assert running, "the job was never seen running"
    values = [p["progress"] for p in running]
    assert values == sorted(values) and values[0] < 0.5 and values[-1] > 0.9
    assert any(p["current_image"] for p in running)  # a preview every 10 steps (show_progress_every_n_steps)
    assert decode(next(p["current_image"] for p in running if p["current_image"])).size[0] > 0
    idle = api.get_progress()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0  # SillyTavern's "model loaded" test


def test_interrupt_stops_the_request(api: webuiapi.WebUIApi) -> None:
    outcome: dict[str, Any] = {}

    def generate() -> None:
        outcome["result"] = api.txt2img(prompt="a long night", seed=1, steps=150, n_iter=4, width=64, height=64)

    runner = threading.Thread(target=generate)
    started = time.monotonic()
    runner.start()
    while api.get_progress()["state"]["sampling_step"] < 2:
        time.sleep(0.01)
    assert api.interrupt() == {}
    runner.join(60)
    result = outcome["result"]
    assert result.info["interrupted"] is True and result.images == []
    assert time.monotonic() - started < 30
    assert api.txt2img(prompt="after", seed=1, **SMALL).image.size == (64, 64)  # still serving


def test_refusals_name_the_field(url: str) -> None:
    def post(body: dict[str, Any], route: str = "txt2img") -> httpx.Response:
        return httpx.post(f"{url}/sdapi/v1/{route}", json={"prompt": "x", **SMALL, **body}, headers=BASIC, timeout=60)

    for body, field in [({"enable_hr": True}, "enable_hr"), ({"restore_faces": True}, "restore_faces"),
                        ({"script_name": "x/y/z plot"}, "script_name"),
                        ({"override_settings": {"sd_model_checkpoint": "other"}},
                         "override_settings.sd_model_checkpoint"),
                        ({"sampler_name": "DPM fast"}, "sampler_name"),
                        ({"override_settings": {"CLIP_stop_at_last_layers": 13}},
                         "override_settings.CLIP_stop_at_last_layers")]:  # fmt: skip
        response = post(body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["field"] == field
    too_many = post({"batch_size": 9})
    assert too_many.status_code == 422 and too_many.json()["error"]["field"] == "batch_size"
    masked = {"init_images": [b64_png(init_image(64))], "mask": b64_png(centre_mask(64))}
    assert post({**masked, "inpainting_fill": 2}, "img2img").json()["error"]["field"] == "inpainting_fill"
    # the same fields at their A1111 defaults pass
    defaults = {"enable_hr": False, "restore_faces": False, "script_name": None, "tiling": False, "styles": [],
                "override_settings": {"CLIP_stop_at_last_layers": 1}, "eta": 1.0}  # fmt: skip
    response = post(defaults)
    assert response.status_code == 200, response.text
    assert response.headers["X-Ignored-Params"] == "eta"


def test_open_webui_sequence_with_basic_auth(url: str) -> None:
    """images.py: verify_url, get_models, set_image_model, then image_generations for the automatic1111 engine."""
    client = httpx.Client(base_url=url, timeout=60)
    assert client.get("/sdapi/v1/options", headers=BASIC).status_code == 200  # verify_url
    models = client.get("/sdapi/v1/sd-models", headers=BASIC).json()
    model = models[0]["title"]
    options = client.get("/sdapi/v1/options", headers=BASIC).json()  # get_image_model / set_image_model
    options["sd_model_checkpoint"] = model
    assert client.post("/sdapi/v1/options", json=options, headers=BASIC).status_code == 200
    data = {"prompt": "a teapot", "batch_size": 1, "width": 64, "height": 64, "steps": 4,
            "negative_prompt": "blurry"}  # fmt: skip
    res = client.post("/sdapi/v1/txt2img", json=data, headers=BASIC).json()
    assert decode(res["images"][0]).size == (64, 64)
    assert isinstance(res["info"], str)
    wrong = {"authorization": "Basic " + base64.b64encode(b"webui:nope").decode()}
    refused = client.post("/sdapi/v1/txt2img", json=data, headers=wrong)
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Basic"


def test_sillytavern_sequence(url: str) -> None:
    """The `auto` source: ping, lists, get/set model (waiting on /progress), generate, interrupt on abort."""
    auth = {"Authorization": "Basic " + base64.b64encode(f"user:{KEY}".encode()).decode()}
    client = httpx.Client(base_url=url, headers=auth, timeout=60)
    assert client.get("/sdapi/v1/options").status_code == 200  # /ping
    samplers = [x["name"] for x in client.get("/sdapi/v1/samplers").json()]
    schedulers = [x["name"] for x in client.get("/sdapi/v1/schedulers").json()]
    models = [x["title"] for x in client.get("/sdapi/v1/sd-models").json()]
    upscalers = [x["name"] for x in client.get("/sdapi/v1/upscalers").json()]
    upscalers[1:1] = [x["name"] for x in client.get("/sdapi/v1/latent-upscale-modes").json()]
    vaes = [x["model_name"] for x in client.get("/sdapi/v1/sd-vae").json()]
    assert client.get("/sdapi/v1/sd-modules").json() == [] and vaes == [] and upscalers == []
    assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == models[0]  # /get-model
    assert client.post("/sdapi/v1/options", json={"sd_model_checkpoint": models[0]}).status_code == 200  # /set-model
    state = client.get("/sdapi/v1/progress").json()
    assert state["progress"] == 0.0 and state["state"]["job_count"] == 0
    body = {
        "url": url, "auth": f"user:{KEY}", "prompt": "a knight, (castle:1.2)", "negative_prompt": "lowres",
        "sampler_name": samplers[0], "scheduler": schedulers[0], "steps": 4, "cfg_scale": 7, "width": 64,
        "height": 64, "restore_faces": False, "enable_hr": False, "hr_upscaler": "Latent", "hr_scale": 2.0,
        "denoising_strength": 0.7, "hr_second_pass_steps": 0,
        "override_settings": {"CLIP_stop_at_last_layers": 1}, "override_settings_restore_afterwards": True,
        "clip_skip": 1, "save_images": True, "send_images": True, "do_not_save_grid": False,
        "do_not_save_samples": False,
    }  # fmt: skip
    data = client.post("/sdapi/v1/txt2img", json=body).json()
    assert decode(data["images"][0]).format == "PNG"
    assert client.post("/sdapi/v1/interrupt").status_code == 200  # sent when the user aborts
    # its default sampler and schedule (DDIM, "normal") are accepted too; sdcpp's probe of the OpenAI route
    assert client.post("/sdapi/v1/txt2img", json={**body, "sampler_name": "DDIM", "scheduler": "normal"}).is_success
    assert httpx.options(f"{url}/v1/images/generations").status_code == 200
    assert httpx.get(f"{url}/internal/ping", headers=auth).json() == {}
