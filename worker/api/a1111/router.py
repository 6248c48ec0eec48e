"""Thin AUTOMATIC1111 routes (`/sdapi/v1/*`): parse → A1111Service → respond.

The lists a front-end reads at start (upscalers, VAEs, hypernetworks…) answer empty where nothing applies, in
A1111's shapes, so SillyTavern, Open WebUI, LibreChat and webuiapi get past their first requests.
"""

from __future__ import annotations

import os
import resource
import sys
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from worker.api.a1111 import infotext, samplers
from worker.api.a1111.options import checkpoint_title
from worker.api.a1111.protocol import A1111Request, Img2ImgRequest, PngInfoRequest, Txt2ImgRequest
from worker.api.a1111.serving import A1111Service, A1111State
from worker.api.state import State

router = APIRouter(prefix="/sdapi/v1", tags=["AUTOMATIC1111"])
extras = APIRouter(tags=["AUTOMATIC1111"])
EMPTY_LISTS = (
    "upscalers", "latent-upscale-modes", "sd-vae", "sd-modules", "hypernetworks", "face-restorers",
    "realesrgan-models", "prompt-styles", "script-info", "extensions",
)  # fmt: skip
NO_OPS = ("refresh-checkpoints", "refresh-vae", "refresh-embeddings", "unload-checkpoint", "reload-checkpoint")


def a1111_service(request: Request, state: State) -> A1111Service:
    """The A1111 service over this app's state (a FastAPI dependency)."""
    a1111: A1111State = request.app.state.a1111
    return A1111Service(state, a1111)


A1111 = Annotated[A1111Service, Depends(a1111_service)]


@router.post("/txt2img")
async def txt2img(body: Txt2ImgRequest, request: Request, a1111: A1111) -> JSONResponse:
    """Text-to-image: `batch_size` images per iteration, `n_iter` iterations."""
    return await _generate(body, request, a1111)


@router.post("/img2img")
async def img2img(body: Img2ImgRequest, request: Request, a1111: A1111) -> JSONResponse:
    """Image-to-image; with `mask`, inpainting (pixels outside the mask come back unchanged)."""
    return await _generate(body, request, a1111)


@router.get("/options")
async def get_options(a1111: A1111) -> dict[str, Any]:
    """The settings of this process (front-ends ping this first)."""
    return a1111.a1111.options.get()


@router.post("/options")
async def set_options(values: dict[str, Any], a1111: A1111) -> None:
    """Keep settings for this process; `sd_model_checkpoint` must name the loaded model."""
    a1111.a1111.options.update(values)


@router.get("/sd-models")
async def sd_models(a1111: A1111) -> list[dict[str, Any]]:
    """The one loaded model, as A1111's `SDModelItem`."""
    backend = a1111.state.backend
    title = checkpoint_title(backend)
    return [{"title": title, "model_name": title, "hash": None, "sha256": None, "filename": backend.model_ref,
             "config": None}]  # fmt: skip


@router.get("/samplers")
async def get_samplers(a1111: A1111) -> list[dict[str, Any]]:
    """The A1111 samplers this model can run."""
    return samplers.sampler_items(a1111.state.backend.family)


@router.get("/schedulers")
async def get_schedulers(a1111: A1111) -> list[dict[str, Any]]:
    """The A1111 schedule types applied here."""
    return samplers.scheduler_items(a1111.state.backend.family)


@router.get("/loras")
async def loras(a1111: A1111) -> list[dict[str, Any]]:
    """The LoRAs of --lora-dir, for `<lora:name:weight>` in prompts (A1111's Lora extension shape)."""
    library = a1111.state.backend.loras
    items = library.list() if library is not None else []
    return [{"name": item["name"], "alias": item["name"], "path": f"{item['name']}.safetensors", "metadata": {}}
            for item in items]  # fmt: skip


@router.post("/refresh-loras")
async def refresh_loras(a1111: A1111) -> None:
    """Rescan --lora-dir."""
    library = a1111.state.backend.loras
    if library is not None:
        await run_in_threadpool(library.refresh)


@router.get("/progress")
async def progress(a1111: A1111, skip_current_image: bool = False) -> dict[str, Any]:
    """Progress of the job running now (0 to 1), with its latest preview."""
    return a1111.a1111.tracker.progress(a1111.state.engine, skip_current_image)


@router.post("/interrupt")
async def interrupt(a1111: A1111) -> dict[str, Any]:
    """Stop the A1111 requests in flight at their next step; they answer with the images finished before."""
    a1111.a1111.tracker.interrupt(a1111.state.engine)
    return {}


@router.post("/skip")
async def skip(a1111: A1111) -> None:
    """Stop the current iteration; the request goes on with its next one."""
    a1111.a1111.tracker.skip(a1111.state.engine)


@router.post("/png-info")
async def png_info(body: PngInfoRequest, a1111: A1111) -> dict[str, Any]:
    """The infotext an image carries, raw and parsed."""
    return await run_in_threadpool(infotext.read, body.image, a1111.state.settings.limits.max_upload_pixels)


@router.get("/memory")
def memory(a1111: A1111) -> dict[str, Any]:
    """RAM of this process and device memory, in A1111's `MemoryResponse` shape (sync: reads /proc)."""
    page = os.sysconf("SC_PAGE_SIZE")
    try:
        with open("/proc/self/statm") as statm:  # current resident set (Linux)
            rss = int(statm.read().split()[1]) * page
    except OSError:  # elsewhere: the peak, which getrusage reports
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    total = page * os.sysconf("SC_PHYS_PAGES")
    device = a1111.state.backend.memory()
    cuda: dict[str, Any] = {"error": "unavailable"}
    if device.get("total") is not None:
        used = device.get("reserved") or 0
        cuda = {"system": {"free": (device["total"] or 0) - used, "used": used, "total": device["total"]}}
    return {"ram": {"free": total - rss, "used": rss, "total": total}, "cuda": cuda}


@router.get("/cmd-flags")
async def cmd_flags(a1111: A1111) -> dict[str, Any]:
    """The worker's settings that A1111 has a flag for."""
    settings = a1111.state.settings
    return {"api": True, "nowebui": True, "listen": settings.host != "127.0.0.1", "port": settings.port,
            "api_auth": None, "lora_dir": str(settings.lora_dir) if settings.lora_dir else None,
            "ckpt": a1111.state.backend.model_ref}  # fmt: skip


@router.get("/embeddings")
async def embeddings() -> dict[str, Any]:
    """No textual-inversion embeddings."""
    return {"loaded": {}, "skipped": {}}


@router.get("/scripts")
async def scripts() -> dict[str, Any]:
    """No scripts (webuiapi reads this to look for extensions)."""
    return {"txt2img": [], "img2img": []}


def _empty_list() -> list[Any]:
    return []


def _no_op() -> None:
    return None


for _name in EMPTY_LISTS:
    router.add_api_route(f"/{_name}", _empty_list, methods=["GET"], summary=f"{_name} (none here)")
for _name in NO_OPS:
    router.add_api_route(f"/{_name}", _no_op, methods=["POST"], summary=f"{_name} (nothing to do here)")


@extras.get("/internal/ping")
async def ping() -> dict[str, Any]:
    """A1111's liveness ping."""
    return {}


@extras.options("/v1/images/generations")
async def images_options() -> Response:
    """200 to the probe SillyTavern's stable-diffusion.cpp source sends before using the OpenAI route."""
    return Response(status_code=200, headers={"Allow": "OPTIONS, POST"})


async def _generate(body: A1111Request, request: Request, a1111: A1111Service) -> JSONResponse:
    assert isinstance(body, Txt2ImgRequest | Img2ImgRequest)
    a1111.state.require_ready()
    plan = await run_in_threadpool(a1111.plan, body)
    task, done = await a1111.run(plan, request.is_disconnected)
    answer = await run_in_threadpool(a1111.response, body, plan, task, done)
    headers = {"X-Ignored-Params": ", ".join(plan.ignored)} if plan.ignored else None
    return JSONResponse(answer, headers=headers)
