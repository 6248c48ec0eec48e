"""`sd-worker` (serve) and `sd-worker generate`. Heavy imports happen inside the commands: --help is instant."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from worker.config import Settings

app = typer.Typer(add_completion=False, help="Stable Diffusion image-generation worker.")

Device = Annotated[str | None, typer.Option(help="auto | cpu | cuda | mps (auto: cuda → mps → cpu).")]
SdVersion = Annotated[
    str | None,
    typer.Option(
        help="Model family: demo, v1-5, v2-1, xl, turbo, 3-medium, 3.5-large, 3.5-large-turbo, z-image-turbo."
    ),
]
ModelPath = Annotated[Path | None, typer.Option(help="Diffusers folder or single .safetensors file.")]
ModelConfig = Annotated[
    Path | None,
    typer.Option("--model-config", help="Diffusers folder with the configs/tokenizers for a single-file --model-path."),
]
DTypeOpt = Annotated[
    str | None, typer.Option("--dtype", help="auto | fp32 | fp16 | bf16 (auto: fp32 cpu, fp16/bf16 cuda, fp16 mps).")
]
CudaDevice = Annotated[int | None, typer.Option(help="CUDA device index (default 0).")]
UseF16 = Annotated[bool | None, typer.Option("--use-f16", help="Shorthand for --dtype fp16.")]
FlashAttn = Annotated[
    str | None,
    typer.Option(
        "--use-flash-attn",
        help="Flash attention: bare flag = use it if a kernel works here; --use-flash-attn=require = fail otherwise.",
    ),
]
VaeTiling = Annotated[bool | None, typer.Option("--vae-tiling", help="Decode the VAE in tiles (big images).")]
VaeSlicing = Annotated[bool | None, typer.Option("--vae-slicing", help="Decode batch images one at a time.")]
Offload = Annotated[str | None, typer.Option(help="model | sequential: keep weights in RAM (accelerators only).")]
Compile = Annotated[bool | None, typer.Option("--compile", help="torch.compile the denoiser (warmed before /ready).")]
Components = Annotated[
    str | None,
    typer.Option(help="all | text-encoder (serves /encode only) | denoiser (takes prompt_embeds, no text encoder)."),
]


def _settings(**given: Any) -> Settings:
    """Settings from the options the user gave; the rest from SD_WORKER_* env vars and defaults."""
    if "model_config" in given:
        given["model_config_path"] = given.pop("model_config")
    from pydantic import ValidationError

    try:
        return Settings(**{key: value for key, value in given.items() if value is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "--" + str(first["loc"][0]).replace("_", "-")
        raise typer.BadParameter(f"{name}: {first['msg']}") from None


@app.callback(invoke_without_command=True)
def serve(
    ctx: typer.Context,
    device: Device = None,
    sd_version: SdVersion = None,
    model_path: ModelPath = None,
    model_config: ModelConfig = None,
    dtype: DTypeOpt = None,
    cuda_device: CudaDevice = None,
    use_f16: UseF16 = None,
    use_flash_attn: FlashAttn = None,
    vae_tiling: VaeTiling = None,
    vae_slicing: VaeSlicing = None,
    offload: Offload = None,
    compile: Compile = None,
    components: Components = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8081).")] = None,
    worker_id: Annotated[str | None, typer.Option(help="Worker id (default hostname-port).")] = None,
    max_queue: Annotated[int | None, typer.Option(help="Jobs allowed to wait before 429 (default 16).")] = None,
    max_batch: Annotated[
        int | None, typer.Option(help="Images one pipeline call may batch across compatible jobs (8; 1 = off).")
    ] = None,
    batch_window_ms: Annotated[
        float | None,
        typer.Option(help="Milliseconds a batch may wait for compatible jobs while clients are batching (20)."),
    ] = None,
    png_compression: Annotated[
        int | None, typer.Option(help="PNG zlib level 0-9 (default 1: fast; 9: smallest, slowest).")
    ] = None,
    job_timeout: Annotated[float | None, typer.Option(help="Seconds a job may run before it is stopped (600).")] = None,
    cors_origin: Annotated[
        list[str] | None, typer.Option(help="Allow this browser origin (repeatable); CORS is off without it.")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(help="Require Authorization: Bearer KEY (all routes but /health); or SD_WORKER_API_KEY."),
    ] = None,
    output_dir: Annotated[Path | None, typer.Option(help="Also write every image into this folder.")] = None,
    lora_dir: Annotated[Path | None, typer.Option(help="Folder of .safetensors LoRAs requests may apply.")] = None,
    preview_decoder: Annotated[
        str | None, typer.Option(help="linear (default, cheap) | vae: how previews are made.")
    ] = None,
    output_url: Annotated[str | None, typer.Option(help="fsspec URL for url-response images (file://, s3://).")] = None,
    callback_url: Annotated[str | None, typer.Option(help="Hive URL for the ready registration.")] = None,
    heartbeat_url: Annotated[
        str | None, typer.Option(help="Hive heartbeat URL (default: callback origin + /v1/heartbeat).")
    ] = None,
    heartbeat_interval: Annotated[float | None, typer.Option(help="Seconds between heartbeats (30).")] = None,
    advertise_url: Annotated[str | None, typer.Option(help="URL the hive should call (http://host:port).")] = None,
    drain_timeout: Annotated[float | None, typer.Option(help="Seconds a job may run on after SIGTERM (30).")] = None,
    served_model_name: Annotated[
        list[str] | None,
        typer.Option(help="Another name the model answers to on the OpenAI API (repeatable; dall-e-3 etc. always)."),
    ] = None,
    state_dir: Annotated[
        Path | None, typer.Option(help="Journal async jobs here (SQLite) so they survive a crash and restart.")
    ] = None,
    webhook_allow: Annotated[
        list[str] | None,
        typer.Option(help="Host pattern webhook_url may name (repeatable: hooks.example.com, *.example.com)."),
    ] = None,
    webhook_secret: Annotated[
        str | None, typer.Option(help="HMAC-SHA256 key for X-Signature-256 on webhooks; or SD_WORKER_WEBHOOK_SECRET.")
    ] = None,
    webhook_tries: Annotated[int | None, typer.Option(help="Attempts per webhook (3).")] = None,
    webhook_backoff: Annotated[float | None, typer.Option(help="Seconds before the 2nd attempt; doubles (1).")] = None,
    webhook_timeout: Annotated[float | None, typer.Option(help="Seconds one webhook attempt may take (10).")] = None,
) -> None:
    """Serve the model over HTTP (the default command)."""
    if ctx.invoked_subcommand is not None:
        return
    settings = _settings(
        device=device, sd_version=sd_version, model_path=model_path, model_config=model_config, dtype=dtype,
        cuda_device=cuda_device, use_f16=use_f16, use_flash_attn=use_flash_attn, vae_tiling=vae_tiling,
        vae_slicing=vae_slicing, offload=offload, compile=compile, host=host, port=port, worker_id=worker_id,
        components=components,
        max_queue=max_queue, max_batch=max_batch, batch_window_ms=batch_window_ms, png_compression=png_compression,
        job_timeout=job_timeout, api_key=api_key,
        cors_origin=cors_origin, output_dir=output_dir, output_url=output_url,
        callback_url=callback_url,
        lora_dir=lora_dir, preview_decoder=preview_decoder,
        heartbeat_url=heartbeat_url, heartbeat_interval=heartbeat_interval, advertise_url=advertise_url,
        drain_timeout=drain_timeout, served_model_name=served_model_name, state_dir=state_dir,
        webhook_allow=webhook_allow, webhook_secret=webhook_secret,
        webhook_tries=webhook_tries, webhook_backoff=webhook_backoff, webhook_timeout=webhook_timeout,
    )  # fmt: skip
    from worker.api.request_id import RequestIdFilter

    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    raise typer.Exit(_serve(settings))


def _serve(settings: Settings) -> int:
    from worker.server import serve as run_server

    return run_server(settings)


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="What to draw.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output file (.png, .jpg, .webp).")] = Path("out.png"),
    negative_prompt: Annotated[str | None, typer.Option(help="What not to draw.")] = None,
    steps: Annotated[int | None, typer.Option(help="Denoising steps (family default).")] = None,
    guidance_scale: Annotated[float | None, typer.Option(help="CFG scale (family default).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (random if absent).")] = None,
    width: Annotated[int | None, typer.Option(help="Width in pixels.")] = None,
    height: Annotated[int | None, typer.Option(help="Height in pixels.")] = None,
    num_samples: Annotated[int, typer.Option(help="Images to make (out.png, out-1.png, …).")] = 1,
    scheduler: Annotated[str | None, typer.Option(help="Scheduler name (model default if absent).")] = None,
    device: Device = None,
    sd_version: SdVersion = None,
    model_path: ModelPath = None,
    model_config: ModelConfig = None,
    dtype: DTypeOpt = None,
    cuda_device: CudaDevice = None,
    use_f16: UseF16 = None,
    use_flash_attn: FlashAttn = None,
    vae_tiling: VaeTiling = None,
    vae_slicing: VaeSlicing = None,
    offload: Offload = None,
    compile: Compile = None,
) -> None:
    """Generate one job in-process, with a progress bar, and write the image(s)."""
    from worker.engine.protocol import GenerationParams
    from worker.oneshot import run_oneshot

    settings = _settings(
        device=device, sd_version=sd_version, model_path=model_path, model_config=model_config, dtype=dtype,
        cuda_device=cuda_device, use_f16=use_f16, use_flash_attn=use_flash_attn, vae_tiling=vae_tiling,
        vae_slicing=vae_slicing, offload=offload, compile=compile,
    )  # fmt: skip
    params = GenerationParams(
        prompt=prompt, negative_prompt=negative_prompt, steps=steps, guidance_scale=guidance_scale, seed=seed,
        width=width, height=height, num_samples=num_samples, scheduler=scheduler,
    )  # fmt: skip
    raise typer.Exit(run_oneshot(settings, params, output))


def main() -> None:
    """Console-script entry point. A bare `--use-flash-attn` means `--use-flash-attn=auto`."""
    args = ["--use-flash-attn=auto" if arg == "--use-flash-attn" else arg for arg in sys.argv[1:]]
    app(args=args, prog_name="sd-worker")
