"""Settings: built once (by the CLI or a test), then passed down. Every field is also `SD_WORKER_<NAME>`."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Device = Literal["auto", "cpu", "cuda", "mps"]
RbeeBackend = Literal["cpu", "cuda", "metal"]  # rbee's --backend, given with an integer --device
HiveProtocol = Literal["sd-worker", "rbee-b", "rbee-c"]
RBEE_DEVICES: dict[str | None, Device] = {"cpu": "cpu", "cuda": "cuda", "metal": "mps", None: "auto"}
WORKER_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
MAX_WORKER_ID = 256  # rbee's validate_identifier(worker_id, 256): [A-Za-z0-9_-] only
DType = Literal["auto", "fp32", "fp16", "bf16"]
FlashAttention = Literal["off", "auto", "require"]  # CLI: absent, --use-flash-attn, --use-flash-attn=require
Offload = Literal["none", "model", "sequential"]
Components = Literal["all", "text-encoder", "denoiser"]
Batching = Literal["off", "window", "continuous"]
# Long enough for the clients of a batch to send their next jobs (results go out one by one, a few ms apart);
# spent only while a crowd is expected (see engine.batching), so a lone client never waits.
BATCH_WINDOW_MS = 20.0


class Limits(BaseSettings):
    """Bounds checked before any work is done (DESIGN.md, "Limits and safety")."""

    model_config = SettingsConfigDict(env_prefix="SD_WORKER_", extra="ignore")

    max_pixels: int = Field(2048 * 2048, gt=0, description="Max width × height of one image.")
    max_steps: int = Field(150, gt=0)
    max_samples: int = Field(8, gt=0, description="Max num_samples per request.")
    max_prompt_chars: int = Field(2000, gt=0)
    max_body_bytes: int = Field(32 * 1024 * 1024, gt=0)
    max_upload_pixels: int = Field(40_000_000, gt=0, description="Max decoded pixels of an uploaded image.")
    max_embedding_bytes: int = Field(
        64 * 1024 * 1024, gt=0, description="Max uncompressed size of a prompt_embeds envelope (checked first)."
    )


class Settings(BaseSettings):
    """Everything the worker is configured with."""

    model_config = SettingsConfigDict(env_prefix="SD_WORKER_", extra="ignore")

    device: Device = "auto"
    backend: RbeeBackend | None = Field(None, description="rbee's --backend; an integer --device then picks the index.")
    device_index: int | None = Field(None, ge=0, description="The integer rbee gave as --device (echoed back to it).")
    sd_version: str = "demo"
    model_path: Path | None = None
    model_config_path: Path | None = Field(
        None, description="Diffusers folder with configs/tokenizers for a single-file --model-path."
    )
    components: Components = Field(
        "all", description="What to load: everything, only the text encoders (/encode), or all but them."
    )
    host: str = "127.0.0.1"
    port: int = Field(8081, ge=0, le=65535)
    worker_id: str | None = None
    job_id_prefix: str = Field(
        "", pattern=r"^[0-9a-f]{0,16}$", description="Hex digits every job id starts with (set per Ray replica)."
    )
    cuda_device: int = Field(0, ge=0, description="Which CUDA device (--device cuda).")
    dtype: DType = "auto"
    use_f16: bool = Field(False, description="Shorthand for --dtype fp16.")
    use_flash_attn: FlashAttention = "off"
    vae_tiling: bool = False
    vae_slicing: bool = False
    offload: Offload = "none"
    compile: bool = False
    allow_pickle: bool = Field(False, description="Load a single .ckpt file (torch.load with weights_only=True).")
    api_key: str | None = Field(None, description="Require Authorization: Bearer <key> (not on /health, /ready).")
    cors_origin: list[str] = Field(default_factory=list, description="Origins allowed by CORS (none: CORS off).")
    max_queue: int = Field(16, ge=0, description="Jobs waiting (not running) before 429.")
    max_batch: int = Field(
        8, ge=1, description="Images (not jobs) one pipeline call may batch across compatible jobs; 1 = off."
    )
    batching: Batching = Field(
        "continuous",
        description="off (one job per call) | window (jobs arriving together share a call) | continuous (jobs join"
        " and leave a running batch between denoising steps; other families and tasks run as with window)",
    )
    batch_window_ms: float = Field(
        BATCH_WINDOW_MS, ge=0, description="How long a batch may wait for the compatible jobs a crowd will send."
    )
    png_compression: int = Field(1, ge=0, le=9, description="zlib level of PNG outputs (1 = fast, 9 = smallest).")
    output_dir: Path | None = None
    preview_decoder: Literal["linear", "vae"] = Field(
        "linear", description="previews by a fitted latent→RGB projection (cheap) or a full VAE decode"
    )
    lora_dir: Path | None = Field(None, description="Folder of .safetensors LoRA files requests may apply.")
    output_url: str | None = Field(None, description="fsspec URL (file://, s3://…) to upload url-response images to.")
    output_keep: int = Field(1000, ge=1, description="Images kept in the output folder (newest first).")
    output_max_age: float = Field(7 * 24 * 3600.0, gt=0, description="Seconds an output image is kept.")
    job_timeout: float = Field(600.0, gt=0, description="Seconds a job may run.")
    keep_results: int = Field(256, ge=1, description="Finished jobs kept for GET /v1/jobs/{id}.")
    result_ttl: float = Field(3600.0, gt=0, description="Seconds a finished job is kept.")
    keepalive_seconds: float = Field(15.0, gt=0)
    served_model_name: list[str] = Field(
        default_factory=list, description="More names the model answers to on the OpenAI API (repeatable)."
    )
    state_dir: Path | None = Field(
        None, description="Journal accepted async jobs (SQLite) and keep url-response files here, across restarts."
    )
    webhook_allow: list[str] = Field(
        default_factory=list, description="Host patterns webhook_url may name (repeatable; none: webhooks off)."
    )
    webhook_secret: str | None = Field(None, description="Signs webhook bodies: X-Signature-256: sha256=<HMAC>.")
    webhook_tries: int = Field(3, ge=1, le=20, description="Attempts per webhook (backoff doubles between them).")
    webhook_backoff: float = Field(1.0, ge=0, description="Seconds before the second attempt.")
    webhook_timeout: float = Field(10.0, gt=0, description="Seconds one webhook attempt may take.")
    callback_url: str | None = Field(None, description="Hive URL to POST the ready registration to.")
    hive_protocol: HiveProtocol | None = Field(None, description="Shapes of ready/heartbeat (None: from the flags).")
    hive_token: str | None = Field(
        None,
        # a worker spawned by rbee's hive inherits the hive's own LLORCH_API_TOKEN, the token the hive expects
        validation_alias=AliasChoices("hive_token", "SD_WORKER_HIVE_TOKEN", "LLORCH_API_TOKEN"),
        description="Bearer token for calls to the hive and the queen.",
    )
    queen_url: str | None = Field(None, description="rbee queen: POST {queen_url}/v1/worker-heartbeat.")
    model_ref: str | None = Field(None, description="What the hive knows this model as (default: its path or id).")
    heartbeat_url: str | None = Field(None, description="Default: the callback URL's origin + /v1/heartbeat.")
    heartbeat_interval: float = Field(30.0, gt=0)
    advertise_url: str | None = Field(None, description="URL the hive should use for this worker.")
    drain_timeout: float = Field(30.0, ge=0, description="Seconds the running job may take after SIGTERM.")
    hive_timeout: float = Field(5.0, gt=0, description="Timeout of each call to the hive.")
    hive_retry_initial: float = Field(0.5, gt=0)
    hive_retry_max: float = Field(30.0, gt=0)
    hive_rejected_retry: float = Field(10.0, gt=0, description="First wait after a 400/401/403/422 from the hive.")
    hive_rejected_retry_max: float = Field(300.0, gt=0, description="Longest wait between refused attempts.")
    limits: Limits = Field(default_factory=lambda: Limits())

    @model_validator(mode="before")
    @classmethod
    def _rbee_device(cls, data: Any) -> Any:
        """rbee spawns `--backend cuda --device 1`: an integer device is an index on the backend's device kind."""
        if not isinstance(data, dict):
            return data
        device, backend = data.get("device"), data.get("backend")
        if isinstance(device, int) or (isinstance(device, str) and device.isdigit()):
            index = int(device)
            if backend not in RBEE_DEVICES:
                return {**data, "device": "auto"}  # so the one error names --backend and its allowed values
            if backend == "metal" and index != 0:
                raise ValueError(f"--backend metal has one device, 0 (got --device {index})")
            data = {**data, "device": RBEE_DEVICES[backend], "device_index": index}
            if backend in ("cuda", None):
                data.setdefault("cuda_device", index)
        elif backend is not None and device not in (None, "auto", RBEE_DEVICES.get(backend)):
            raise ValueError(f"--backend {backend} contradicts --device {device}; give one of them")
        elif backend is not None:
            data = {**data, "device": RBEE_DEVICES[backend]}
        return data

    @model_validator(mode="after")
    def _protocol_needs_its_urls(self) -> Settings:
        """An explicit --hive-protocol must have the URLs it talks to (a setting that does nothing is an error)."""
        if self.hive_protocol == "rbee-c" and (self.callback_url or not self.queen_url):
            raise ValueError("--hive-protocol rbee-c heartbeats a queen and has no ready callback: give --queen-url "
                             "and no --callback-url (or use rbee-b / sd-worker with the callback)")  # fmt: skip
        if self.hive_protocol in ("rbee-b", "sd-worker") and not self.callback_url:
            raise ValueError(f"--hive-protocol {self.hive_protocol} registers at --callback-url; give it")
        return self

    def resolved_worker_id(self) -> str:
        """`--worker-id`, or hostname-port; only [A-Za-z0-9_-], at most 256 characters (what rbee accepts)."""
        given = self.worker_id or f"{socket.gethostname()}-{self.port}"
        return WORKER_ID_UNSAFE.sub("-", given)[:MAX_WORKER_ID]

    def resolved_hive_protocol(self) -> HiveProtocol:
        """`--hive-protocol`, or what the flags say: rbee's --backend or its /v1/workers/ready callback → rbee-b;
        a --queen-url without a callback → rbee-c; otherwise sd-worker."""
        if self.hive_protocol is not None:
            return self.hive_protocol
        if self.callback_url:
            rbee_b = self.backend is not None or urlsplit(self.callback_url).path.endswith("/v1/workers/ready")
            return "rbee-b" if rbee_b else "sd-worker"
        return "rbee-c" if self.queen_url else "sd-worker"

    def resolved_advertise_url(self) -> str:
        """`--advertise-url`, or http://host:port (the hostname when bound to all interfaces)."""
        if self.advertise_url:
            return self.advertise_url.rstrip("/")
        host = socket.gethostname() if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    def resolved_heartbeat_url(self) -> str | None:
        """`--heartbeat-url`, or the callback URL's scheme://host:port + /v1/heartbeat."""
        if self.heartbeat_url or not self.callback_url:
            return self.heartbeat_url
        parts = urlsplit(self.callback_url)
        return f"{parts.scheme}://{parts.netloc}/v1/heartbeat"
