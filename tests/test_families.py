"""Every family × task through HTTP is byte-identical to calling the diffusers pipeline directly."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, DiffusionPipeline

from tests.support import b64_png, centre_mask, decode, init_image, pixels

ARCHS = ["sd15", "sd21", "sdxl", "sd3", "zimage"]
TASKS = ["txt2img", "img2img", "inpaint"]
PARAMS = {
    "prompt": "a red cat on a beach",
    "negative_prompt": "blurry",
    "steps": 4,
    "guidance_scale": 3.0,
    "seed": 1234,
    "width": 64,
    "height": 64,
}


@pytest.fixture(scope="module")
def direct_pipes(tiny_model: Callable[[str], Path]) -> Callable[[str, str], Any]:
    """(arch, task) → an independently loaded plain diffusers pipeline."""
    cache: dict[tuple[str, str], Any] = {}

    def get(arch: str, task: str) -> Any:
        if (arch, task) not in cache:
            no_t5 = {"text_encoder_3": None, "tokenizer_3": None} if arch == "sd3" else {}
            base = DiffusionPipeline.from_pretrained(str(tiny_model(arch)), **no_t5)
            base.set_progress_bar_config(disable=True)
            cache[(arch, "txt2img")] = base
            cache[(arch, "img2img")] = AutoPipelineForImage2Image.from_pipe(base)
            cache[(arch, "inpaint")] = AutoPipelineForInpainting.from_pipe(base)
        return cache[(arch, task)]

    return get


def direct_call(pipe: Any, task: str, seed: int) -> np.ndarray:
    """The plain diffusers call with the same parameters as the HTTP request."""
    kwargs: dict[str, Any] = {
        "prompt": PARAMS["prompt"],
        "negative_prompt": PARAMS["negative_prompt"],
        "num_inference_steps": PARAMS["steps"],
        "guidance_scale": PARAMS["guidance_scale"],
        "height": 64,
        "width": 64,
        "generator": [torch.Generator().manual_seed(seed)],
    }
    if task != "txt2img":
        kwargs.update(image=init_image(), strength=0.75 if task == "img2img" else 1.0)
    if task == "inpaint":
        kwargs["mask_image"] = centre_mask()
    accepted = inspect.signature(type(pipe).__call__).parameters
    image = pipe(**{k: v for k, v in kwargs.items() if k in accepted}).images[0]
    out = pixels(image)
    if task == "inpaint":  # the worker returns unmasked pixels unchanged
        keep = np.asarray(centre_mask())[..., None] == 0
        out = np.where(keep, pixels(init_image()), out)
    return out


def http_body(task: str) -> dict[str, Any]:
    body: dict[str, Any] = dict(PARAMS)
    if task != "txt2img":
        body.update(image=b64_png(init_image()), strength=0.75 if task == "img2img" else 1.0)
    if task == "inpaint":
        body["mask"] = b64_png(centre_mask())
    return body


@pytest.mark.parametrize("arch", ARCHS)
async def test_every_task_matches_direct_diffusers_call(arch: str, client_for: Any, direct_pipes: Any) -> None:
    async with client_for(arch) as client:
        for task in TASKS:
            route = {"txt2img": "/execute", "img2img": "/img2img", "inpaint": "/inpaint"}[task]
            response = await client.post(route, json=http_body(task), headers={"Accept": "application/json"})
            assert response.status_code == 200, response.text
            result = response.json()
            image = decode(result["image"])
            assert image.size == (64, 64)
            assert result["seeds"] == [PARAMS["seed"]]
            expected = direct_call(direct_pipes(arch, task), task, PARAMS["seed"])
            assert np.array_equal(pixels(image), expected), f"{arch}/{task} differs from diffusers"


@pytest.mark.parametrize("arch", ARCHS)
def test_task_variants_share_the_weights(arch: str, backend_for: Any) -> None:
    model = backend_for(arch).model
    denoiser = model.denoiser
    for task in ("img2img", "inpaint"):
        variant = model.variants[task]
        assert variant is not model.base
        assert (getattr(variant, "unet", None) or variant.transformer) is denoiser
        assert variant.vae is model.base.vae
        assert variant.text_encoder is model.base.text_encoder
