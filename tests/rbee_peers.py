"""Test doubles of rbee's hive (Gen B) and queen (Gen C), written from rbee's public source (rbee-keeper/rbee).

Gen B hive — `bin/old.rbee-hive` before commit 82b6e4b6:
  - `http/workers.rs`: spawns `<worker> --worker-id worker-<uuid> --model <path> --model-ref <ref> --backend <b>
    --device <u32> --port <p> --callback-url http://<host>:<hive port>/v1/workers/ready` and registers it as
    `Loading`; `POST /v1/workers/ready` takes `WorkerReadyRequest {worker_id, url, model_ref, backend,
    device: u32}`, checks `validate_identifier(worker_id, 256)`, `validate_model_ref`, `validate_identifier(backend,
    64)` (400 each), sets the worker `Idle` (a no-op for an id it does not know) and answers 200 {"message"}.
  - `http/heartbeat.rs`: `POST /v1/heartbeat` `{worker_id, timestamp, health_status: healthy|degraded}`;
    404 "Worker {id} not found in registry" for an unknown id.
  - `http/routes.rs` + `http/middleware/auth.rs`: every route but /v1/health and /metrics needs
    `Authorization: Bearer <LLORCH_API_TOKEN>`; 401 {"error": {"code": "MISSING_API_KEY" | "INVALID_API_KEY"}}.
  - `monitor.rs`: every 30 s: no heartbeat for > 60 s → SIGKILL + remove; `Loading` for > 30 s → kill + remove;
    `GET {url}/v1/health` (5 s timeout), 3 failures → remove.
  - axum's `Json` extractor answers 422 when the body does not deserialize (e.g. a string `device`).
The intervals here are scaled down for tests. `readd_on_ready=True` follows the interop issue (a ready from a
forgotten worker registers it again); `False` is rbee's literal code (ready accepted, worker still unknown).

Gen C queen — `bin/97_contracts/worker-contract` (`WorkerHeartbeat {worker: WorkerInfo, timestamp}`,
`WorkerInfo {id, model_id, device, port: u16, status, implementation, version}`, `OperationalStatus` lowercase),
answered with `HeartbeatAck {status, message}`; jobs are `operations-contract` `Operation`s (tagged by
`operation`) posted to the worker's `/v1/jobs`, then followed at the returned `sse_url`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, StrictInt, StrictStr

IDENTIFIER = re.compile(r"^[A-Za-z0-9_-]+$")
MODEL_REF_CHARS = re.compile(r"^[A-Za-z0-9_/:.-]+$")


def validate_identifier(value: str, max_len: int) -> str | None:
    """rbee's `input_validation::validate_identifier`: why `value` is refused, or None."""
    if not value:
        return "empty"
    if len(value) > max_len:
        return f"longer than {max_len}"
    return None if IDENTIFIER.match(value) else "invalid characters"


def validate_model_ref(value: str) -> str | None:
    """rbee's `validate_model_ref` (≤ 512, [A-Za-z0-9-_/:.], no `../`)."""
    if not value or len(value) > 512:
        return "empty or too long"
    if not MODEL_REF_CHARS.match(value):
        return "invalid characters"
    return "path traversal" if "../" in value else None


class WorkerReadyRequest(BaseModel):
    """serde's view of the ready body: strict types, unknown fields ignored."""

    worker_id: StrictStr
    url: StrictStr
    model_ref: StrictStr
    backend: StrictStr
    device: Annotated[StrictInt, Field(ge=0, lt=2**32)]


class HeartbeatRequest(BaseModel):
    """`HeartbeatRequest`: health_status is a lowercase enum."""

    worker_id: StrictStr
    timestamp: StrictStr
    health_status: Literal["healthy", "degraded"]


@dataclass
class HiveWorker:
    """One entry of the hive's registry (`WorkerInfo`)."""

    id: str
    url: str
    model_ref: str
    backend: str
    device: int
    process: subprocess.Popen[str] | None
    state: str = "loading"
    spawned_at: float = field(default_factory=time.monotonic)
    last_heartbeat: float | None = None
    failed_health_checks: int = 0


@dataclass
class GenBHive:
    """The hive's memory and what the test wants to look at afterwards."""

    token: str
    monitor_every: float = 0.5  # rbee: 30 s
    stale_after: float = 1.5  # rbee: 60 s without a heartbeat
    loading_timeout: float = 90.0  # rbee: 30 s (a cold CPU test machine loads slower than that)
    readd_on_ready: bool = True
    port: int = 0
    workers: dict[str, HiveWorker] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[str]] = field(default_factory=dict)  # spawned, by worker id (PIDs)
    readies: list[dict[str, Any]] = field(default_factory=list)  # accepted ready bodies, in order
    heartbeats: list[dict[str, Any]] = field(default_factory=list)
    refused: list[tuple[str, int]] = field(default_factory=list)  # (path, status) of refused calls
    probes: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)  # (worker id, status, body)
    removed: list[tuple[str, str]] = field(default_factory=list)  # (worker id, why)
    clock: Callable[[], float] = time.monotonic
    ready_times: list[float] = field(default_factory=list)  # `clock()` at every ready attempt, refused or not

    def spawn(self, worker: list[str], model: str, model_ref: str, backend: str, device: int, port: int,
              env: dict[str, str]) -> HiveWorker:  # fmt: skip
        """`handle_spawn_worker`: the worker's command line exactly as rbee builds it; the worker inherits the
        hive's environment, LLORCH_API_TOKEN included."""
        worker_id = f"worker-{uuid.uuid4()}"
        command = [*worker, "--worker-id", worker_id, "--model", model, "--model-ref", model_ref,
                   "--backend", backend, "--device", str(device), "--port", str(port),
                   "--callback-url", f"http://127.0.0.1:{self.port}/v1/workers/ready"]  # fmt: skip
        environment = {**os.environ, **env, "LLORCH_API_TOKEN": self.token}
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env=environment)  # fmt: skip
        info = HiveWorker(worker_id, f"http://127.0.0.1:{port}", model_ref, backend, device, process)
        self.workers[worker_id] = info
        self.processes[worker_id] = process
        return info

    def forget(self, worker_id: str) -> None:
        """Drop a worker from the registry, as a hive restart (or an eviction) does."""
        self.workers.pop(worker_id, None)
        self.removed.append((worker_id, "forgotten"))

    def remove(self, worker: HiveWorker, why: str, kill: bool) -> None:
        """`registry.remove` (+ `force_kill_worker`)."""
        if kill and worker.process is not None and worker.process.poll() is None:
            worker.process.send_signal(signal.SIGKILL)
        self.workers.pop(worker.id, None)
        self.removed.append((worker.id, why))

    async def monitor_once(self, client: httpx.AsyncClient) -> None:
        """One pass of `health_monitor_loop`."""
        now = time.monotonic()
        for worker in list(self.workers.values()):
            if worker.last_heartbeat is not None and now - worker.last_heartbeat > self.stale_after:
                self.remove(worker, "stale heartbeat", kill=True)
                continue
            if worker.state == "loading" and now - worker.spawned_at > self.loading_timeout:
                self.remove(worker, "stuck loading", kill=True)
                continue
            try:
                response = await client.get(f"{worker.url}/v1/health", timeout=5)
                ok, body = response.is_success, response.json()
                self.probes.append((worker.id, response.status_code, body))
            except (httpx.HTTPError, ValueError):
                ok = False
            if not ok:
                worker.failed_health_checks += 1
                if worker.failed_health_checks >= 3:
                    self.remove(worker, "3 failed health checks", kill=False)


def create_gen_b_hive(hive: GenBHive) -> FastAPI:
    """The hive's HTTP API (routes.rs) around `hive`."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def monitor_forever() -> None:
            async with httpx.AsyncClient() as client:
                while True:
                    await asyncio.sleep(hive.monitor_every)
                    await hive.monitor_once(client)

        task = asyncio.create_task(monitor_forever())
        yield
        task.cancel()

    app = FastAPI(lifespan=lifespan)

    @app.middleware("http")
    async def auth(request: Request, call_next: Any) -> Any:
        if request.url.path in ("/v1/health", "/metrics"):
            return await call_next(request)
        if request.url.path == "/v1/workers/ready":
            hive.ready_times.append(hive.clock())
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer ") or not header[7:]:
            hive.refused.append((request.url.path, 401))
            return JSONResponse({"error": {"code": "MISSING_API_KEY", "message": "Missing API key"}}, 401)
        if not hmac.compare_digest(header[7:].encode(), hive.token.encode()):
            hive.refused.append((request.url.path, 401))
            return JSONResponse({"error": {"code": "INVALID_API_KEY", "message": "Invalid or missing API key"}}, 401)
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def unprocessable(request: Request, exc: RequestValidationError) -> Response:
        hive.refused.append((request.url.path, 422))
        return Response(f"Failed to deserialize the JSON body into the target type: {exc.errors()[0]['msg']}", 422)

    @app.get("/v1/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/workers/ready")
    async def ready(body: WorkerReadyRequest) -> Response:
        for name, problem in (("worker_id", validate_identifier(body.worker_id, 256)),
                              ("model_ref", validate_model_ref(body.model_ref)),
                              ("backend", validate_identifier(body.backend, 64))):  # fmt: skip
            if problem is not None:
                hive.refused.append(("/v1/workers/ready", 400))
                return Response(f"Invalid {name}: {problem}", 400)
        hive.readies.append(body.model_dump())
        worker = hive.workers.get(body.worker_id)
        if worker is None and hive.readd_on_ready:
            process = hive.processes.get(body.worker_id)
            worker = HiveWorker(body.worker_id, body.url, body.model_ref, body.backend, body.device, process)
            hive.workers[body.worker_id] = worker
        if worker is not None:
            worker.state = "idle"
        return JSONResponse({"message": "Worker registered as ready"})

    @app.post("/v1/heartbeat")
    async def heartbeat(body: HeartbeatRequest) -> Response:
        hive.heartbeats.append(body.model_dump())
        worker = hive.workers.get(body.worker_id)
        if worker is None:
            return Response(f"Worker {body.worker_id} not found in registry", 404)
        worker.last_heartbeat = time.monotonic()
        return JSONResponse({"message": "Heartbeat received"})

    @app.get("/v1/workers/list")
    async def workers() -> dict[str, Any]:
        return {"workers": [{"id": w.id, "url": w.url, "state": w.state} for w in hive.workers.values()]}

    return app


# ----------------------------------------------------------------------------------------------------------------
# Gen C queen


class WorkerInfo(BaseModel):
    """`worker_contract::WorkerInfo`."""

    id: StrictStr
    model_id: StrictStr
    device: StrictStr
    port: Annotated[StrictInt, Field(ge=0, lt=65536)]
    status: Literal["starting", "ready", "busy", "stopping", "stopped"]
    implementation: StrictStr
    version: StrictStr


class WorkerHeartbeat(BaseModel):
    """`worker_contract::WorkerHeartbeat`: the timestamp is a chrono `DateTime<Utc>` (RFC 3339)."""

    worker: WorkerInfo
    timestamp: datetime


@dataclass
class GenCQueen:
    """What the queen heard from workers."""

    heartbeats: list[dict[str, Any]] = field(default_factory=list)
    answer: int = 200  # what to answer heartbeats with
    clock: Callable[[], float] = time.monotonic
    beat_times: list[float] = field(default_factory=list)

    def statuses(self, worker_id: str) -> list[str]:
        """The statuses one worker reported, in order, without repeats."""
        seen: list[str] = []
        for beat in self.heartbeats:
            if beat["worker"]["id"] == worker_id and (not seen or seen[-1] != beat["worker"]["status"]):
                seen.append(beat["worker"]["status"])
        return seen


def create_gen_c_queen(queen: GenCQueen) -> FastAPI:
    """The queen's worker-heartbeat endpoint."""
    app = FastAPI()

    @app.post("/v1/worker-heartbeat")
    async def worker_heartbeat(body: WorkerHeartbeat) -> Response:
        queen.beat_times.append(queen.clock())
        if queen.answer != 200:
            return Response("refused by the test queen", queen.answer)
        queen.heartbeats.append(body.model_dump(mode="json"))
        return JSONResponse({"status": "ok", "message": f"heartbeat from {body.worker.id} received"})

    return app


def operation(kind: str, **fields: Any) -> dict[str, Any]:
    """An `Operation` as rbee's serde writes it: every field, `None`s as null except those marked
    `skip_serializing_if` (worker_id everywhere; negative_prompt and seed on transform/inpaint)."""
    body: dict[str, Any] = {"operation": kind, "hive_id": "localhost", "model": "stable-diffusion-v1-5",
                            "negative_prompt": None, "steps": 20, "guidance_scale": 7.5, "seed": None,
                            "loras": []}  # fmt: skip
    if kind == "image_generation":
        body.update(width=512, height=512)
    elif kind == "image_transform":
        body.update(strength=0.8)
    body.update(fields)
    skip = ("worker_id",) if kind == "image_generation" else ("worker_id", "negative_prompt", "seed")
    return {k: v for k, v in body.items() if not (k in skip and v is None)}


def follow(base_url: str, sse_url: str, timeout: float = 120) -> list[tuple[str, dict[str, Any]]]:
    """Read an rbee job stream to its end: [(event, data)]; keep-alive comments skipped."""
    events: list[tuple[str, dict[str, Any]]] = []
    with httpx.stream("GET", f"{base_url}{sse_url}", timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        name = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    return events
