"""`sd-worker` (serve) and `sd-worker generate`. Heavy imports happen inside the commands: --help is instant.

Every option is declared once, in the tables below: its name is the `Settings` field it sets.
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from worker.config import Settings

# plain (click) help: flags read as flags, and nothing is boxed or wrapped for a terminal it may not have
app = typer.Typer(
    add_completion=False,
    rich_markup_mode=None,
    help="Stable Diffusion image-generation worker. With no command, `sd-worker` serves the model over HTTP "
    "(the same as `sd-worker serve`); `sd-worker generate` makes one image in-process.",
)
Command = TypeVar("Command", bound=Callable[..., None])


def _option(kind: Any, help: str, *names: str) -> Any:
    """One `--option`; absent (None), Settings falls back to SD_WORKER_* and its own default."""
    return Annotated[kind | None, typer.Option(*names, help=help)]


MODEL_OPTIONS: dict[str, Any] = {
    "device": _option(str, "auto | cpu | cuda | mps (auto: cuda → mps → cpu); or rbee's integer index (--backend)."),
    "sd_version": _option(
        str, "Model family: demo, v1-5, v2-1, xl, turbo, 3-medium, 3.5-large, 3.5-large-turbo, z-image-turbo."
    ),
    "model_path": _option(Path, "Diffusers folder or single .safetensors file (.ckpt with --allow-pickle)."),
    "allow_pickle": _option(
        bool, "Load a single .ckpt file (torch.load with weights_only=True: tensors only).", "--allow-pickle"
    ),
    "model_config": _option(
        Path, "Diffusers folder with the configs/tokenizers for a single-file --model-path.", "--model-config"
    ),
    "dtype": _option(str, "auto | fp32 | fp16 | bf16 (auto: fp32 cpu, fp16/bf16 cuda, fp16 mps).", "--dtype"),
    "cuda_device": _option(int, "CUDA device index (default 0)."),
    "use_f16": _option(bool, "Shorthand for --dtype fp16.", "--use-f16"),
    "use_flash_attn": _option(
        str,
        "Flash attention: bare flag = use it if a kernel works here; --use-flash-attn=require = fail otherwise.",
        "--use-flash-attn",
    ),
    "vae_tiling": _option(bool, "Decode the VAE in tiles (big images).", "--vae-tiling"),
    "vae_slicing": _option(bool, "Decode batch images one at a time.", "--vae-slicing"),
    "offload": _option(str, "model | sequential: keep weights in RAM (accelerators only)."),
    "compile": _option(bool, "torch.compile the denoiser (warmed before /ready).", "--compile"),
}
SERVE_OPTIONS: dict[str, Any] = {
    **MODEL_OPTIONS,
    "components": _option(
        str, "all | text-encoder (serves /encode only) | denoiser (takes prompt_embeds, no text encoder)."
    ),
    "host": _option(str, "Bind address (default 127.0.0.1)."),
    "port": _option(int, "Port (default 8081)."),
    "worker_id": _option(str, "Worker id (default hostname-port)."),
    "max_queue": _option(int, "Jobs allowed to wait before 429 (default 16)."),
    "max_batch": _option(int, "Images one pipeline call may batch across compatible jobs (8; 1 = off)."),
    "batching": _option(str, "off | window | continuous: how compatible jobs share the device (window)."),
    "batch_window_ms": _option(
        float, "Milliseconds a batch may wait for compatible jobs while clients are batching (20)."
    ),
    "png_compression": _option(int, "PNG zlib level 0-9 (default 1: fast; 9: smallest, slowest)."),
    "job_timeout": _option(float, "Seconds a job may run before it is stopped (600)."),
    "cors_origin": _option(list[str], "Allow this browser origin (repeatable); CORS is off without it."),
    "api_key": _option(str, "Require Authorization: Bearer KEY on all routes but /health and /ready."),
    "output_dir": _option(Path, "Also write every image into this folder."),
    "lora_dir": _option(Path, "Folder of .safetensors LoRAs requests may apply."),
    "preview_decoder": _option(str, "linear (default, cheap) | vae: how previews are made."),
    "output_url": _option(str, "fsspec URL for url-response images (file://, s3://)."),
    "callback_url": _option(str, "Hive URL for the ready registration."),
    "heartbeat_url": _option(str, "Hive heartbeat URL (default: callback origin + /v1/heartbeat)."),
    "heartbeat_interval": _option(float, "Seconds between heartbeats (30)."),
    "advertise_url": _option(str, "URL the hive should call (http://host:port)."),
    "drain_timeout": _option(float, "Seconds a job may run on after SIGTERM (30)."),
    "served_model_name": _option(
        list[str], "Another name the model answers to on the OpenAI API (repeatable; dall-e-3 etc. always)."
    ),
    "state_dir": _option(Path, "Journal async jobs here (SQLite) so they survive a crash and restart."),
    "webhook_allow": _option(list[str], "Host pattern webhook_url may name (repeatable: hooks.example.com, *.ex.com)."),
    "webhook_secret": _option(str, "HMAC-SHA256 key for X-Signature-256 on webhooks; or SD_WORKER_WEBHOOK_SECRET."),
    "webhook_tries": _option(int, "Attempts per webhook (3)."),
    "webhook_backoff": _option(float, "Seconds before the 2nd webhook attempt; doubles (1)."),
    "webhook_timeout": _option(float, "Seconds one webhook attempt may take (10)."),
    # rbee's spawn line (README, "Running under rbee")
    "model": _option(Path, "rbee's name for --model-path."),
    "model_ref": _option(str, "The model's name at the hive (reported back to it)."),
    "backend": _option(str, "rbee's cpu | cuda | metal; an integer --device is then its index."),
    "hive_protocol": _option(str, "sd-worker | rbee-b | rbee-c (default: from the flags; see the README)."),
    "hive_token": _option(str, "Bearer token for the hive and the queen; or SD_WORKER_HIVE_TOKEN."),
    "queen_url": _option(str, "rbee queen to heartbeat (POST <url>/v1/worker-heartbeat)."),
}

# `sd-worker ray`: each replica is a worker with these; Ray picks the GPU, Serve's proxy owns host and port
RAY_OPTIONS: dict[str, Any] = {
    **{name: kind for name, kind in MODEL_OPTIONS.items() if name != "cuda_device"},
    "worker_id": _option(str, "Worker id prefix (each replica appends its Serve replica id)."),
    **{name: SERVE_OPTIONS[name] for name in (
        "max_queue", "max_batch", "batching", "batch_window_ms", "png_compression", "job_timeout", "cors_origin",
        "api_key", "lora_dir", "preview_decoder", "output_url",
    )},
    "drain_timeout": _option(float, "Seconds a removed replica's running job may take (30)."),
}  # fmt: skip


def with_options(options: dict[str, Any]) -> Callable[[Command], Command]:
    """Add `options` to a command's signature, after its own parameters; the command gets them in `**given`."""

    def add(command: Command) -> Command:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        extra = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=kind)
            for name, kind in options.items()
        ]
        command.__signature__ = signature.replace(parameters=[*own, *extra])  # type: ignore[attr-defined]
        return command

    return add


def _settings(**given: Any) -> Settings:
    """Settings from the options the user gave; the rest from SD_WORKER_* env vars and defaults."""
    if "model_config" in given:
        given["model_config_path"] = given.pop("model_config")
    model = given.pop("model", None)  # rbee spawns workers with `--model <path>`
    if model is not None:
        if given.get("model_path") not in (None, model):
            raise typer.BadParameter("--model and --model-path name the same thing; give one of them")
        given["model_path"] = model
    from pydantic import ValidationError

    try:
        settings = Settings(**{key: value for key, value in given.items() if value is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        if not first["loc"]:  # a check across several options
            raise typer.BadParameter(str(first["msg"]).removeprefix("Value error, ")) from None
        name = "--" + str(first["loc"][0]).replace("_", "-")
        raise typer.BadParameter(f"{name}: {first['msg']}") from None
    _check_family(settings.sd_version)
    return settings


def _check_family(name: str) -> None:
    """A mistyped --sd-version is answered at once, before torch is imported (seconds), with the closest name."""
    from worker.errors import WorkerError
    from worker.pipelines.families import get_family

    try:
        get_family(name)
    except WorkerError as exc:
        print(f"sd-worker: {exc.message}", file=sys.stderr)
        raise typer.Exit(2) from None


def _print_version(value: bool) -> None:
    if value:
        from worker import __version__

        print(f"sd-worker {__version__}")
        raise typer.Exit()


def _given(value: object) -> bool:
    """True for an option value the user typed (unset options are None, False or an empty list)."""
    return value is not None and value is not False and value != [] and value != ()


@app.callback(invoke_without_command=True)
@with_options(SERVE_OPTIONS)
def serve(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    **given: Any,
) -> None:
    """Serve the model over HTTP (what a bare `sd-worker` does)."""
    if ctx.invoked_subcommand is not None:
        typed = [f"--{name.replace('_', '-')}" for name, value in ctx.params.items() if _given(value)]
        if typed:  # they would be dropped silently: the command's own options are the ones that count
            raise typer.BadParameter(f"put {', '.join(typed)} after the command: sd-worker {ctx.invoked_subcommand} …")
        return
    settings = _settings(**given)
    from worker.api.request_id import RequestIdFilter

    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    raise typer.Exit(_serve(settings))


app.command("serve")(serve)


def _serve(settings: Settings) -> int:
    from worker.errors import ConfigError
    from worker.listen import listen

    try:  # before the model's libraries load: a busy port is reported in a moment, not after the imports
        sock = listen(settings.host, settings.port)
    except ConfigError as exc:
        print(f"sd-worker: {exc.message}", file=sys.stderr)
        return 2
    from worker.server import serve as run_server

    return run_server(settings, sock)


@app.command()
@with_options(MODEL_OPTIONS)
def generate(
    prompt: Annotated[str, typer.Argument(metavar="PROMPT", help="What to draw.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output file (.png, .jpg, .webp).")] = Path("out.png"),
    negative_prompt: Annotated[str | None, typer.Option(help="What not to draw.")] = None,
    steps: Annotated[int | None, typer.Option(help="Denoising steps (family default).")] = None,
    guidance_scale: Annotated[float | None, typer.Option(help="CFG scale (family default).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (random if absent).")] = None,
    width: Annotated[int | None, typer.Option(help="Width in pixels.")] = None,
    height: Annotated[int | None, typer.Option(help="Height in pixels.")] = None,
    num_samples: Annotated[int, typer.Option(help="Images to make (out.png, out-1.png, …).")] = 1,
    scheduler: Annotated[str | None, typer.Option(help="Scheduler name (model default if absent).")] = None,
    **given: Any,
) -> None:
    """Generate one job in-process, with a progress bar, and write the image(s)."""
    settings = _settings(**given)  # a mistyped option is answered before torch and diffusers are imported
    from worker.engine.protocol import GenerationParams
    from worker.oneshot import run_oneshot

    params = GenerationParams(
        prompt=prompt, negative_prompt=negative_prompt, steps=steps, guidance_scale=guidance_scale, seed=seed,
        width=width, height=height, num_samples=num_samples, scheduler=scheduler,
    )  # fmt: skip
    raise typer.Exit(run_oneshot(settings, params, output))


@app.command("ray")
@with_options(RAY_OPTIONS)
def ray_fleet(
    replicas: Annotated[int | None, typer.Option(help="Fixed number of replicas (else autoscale).")] = None,
    min_replicas: Annotated[int, typer.Option(help="Autoscaling: fewest replicas.")] = 1,
    max_replicas: Annotated[int | None, typer.Option(help="Autoscaling: most replicas (default: min).")] = None,
    target_ongoing_requests: Annotated[
        float, typer.Option(help="Autoscaling: requests (waiting + running) per replica to aim for.")
    ] = 2.0,
    upscale_delay: Annotated[float, typer.Option(help="Seconds of high load before adding a replica.")] = 30.0,
    downscale_delay: Annotated[float, typer.Option(help="Seconds of low load before removing one.")] = 600.0,
    replica_cpus: Annotated[float, typer.Option(help="CPUs Ray reserves per replica (CPU replicas use them).")] = 1.0,
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="auto (join the cluster running here) | local (start one) | ray://host:10001; default: either."
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Serve proxy bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Serve proxy port.")] = 8000,
    **given: Any,
) -> None:
    """Serve the worker on Ray Serve: N replicas (one device and one model each) behind one HTTP endpoint."""
    from worker.deploy.options import FleetOptions

    settings = _settings(**given)
    try:
        fleet = FleetOptions(
            replicas=replicas, min_replicas=min_replicas, max_replicas=max_replicas or min_replicas,
            target_ongoing_requests=target_ongoing_requests, replica_cpus=replica_cpus,
            upscale_delay_s=upscale_delay, downscale_delay_s=downscale_delay,
        )  # fmt: skip
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        from worker.deploy.fleet import run_fleet
    except ImportError as exc:  # ray is an optional extra
        raise typer.BadParameter(f"needs Ray Serve ({exc}): pip install 'sd-worker[ray]'") from None
    raise typer.Exit(run_fleet(settings, fleet, ray_address=ray_address, host=host, port=port))


def main() -> None:
    """Console-script entry point. A bare `--use-flash-attn` means `--use-flash-attn=auto`."""
    args = ["--use-flash-attn=auto" if arg == "--use-flash-attn" else arg for arg in sys.argv[1:]]
    app(args=args, prog_name="sd-worker")
