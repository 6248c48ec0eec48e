"""What each hive protocol sends: the ready body and the heartbeat body, from one snapshot of the worker.

sd-worker is this project's own protocol (DESIGN.md, "Hive protocol"). rbee-b is the rbee hive before its
jobs API (`bin/old.rbee-hive`): `WorkerReadyRequest {worker_id, url, model_ref, backend, device: u32}` and
`HeartbeatRequest {worker_id, timestamp, health_status}`; rbee's serde ignores fields it does not know.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

Payload = dict[str, Any]


@dataclass(frozen=True)
class WorkerSnapshot:
    """What the hive is told about the worker, read fresh for every call."""

    worker_id: str
    url: str
    model_ref: str
    model_version: str
    device: str
    dtype: str
    capabilities: tuple[str, ...]
    vram_bytes: int | None
    version: str
    healthy: bool
    queue_depth: int
    active_job: str | None
    backend: str = "cpu"  # rbee's name for the device kind: cpu, cuda, metal
    device_index: int = 0  # rbee's integer device

    @property
    def busy(self) -> bool:
        """A job is running or waiting."""
        return self.active_job is not None or self.queue_depth > 0


def timestamp() -> str:
    """Now, RFC 3339 in UTC with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ready_payload(s: WorkerSnapshot) -> Payload:
    """sd-worker: the body of the ready callback (DESIGN.md, hive protocol step 1)."""
    return {
        "worker_id": s.worker_id, "url": s.url, "model_ref": s.model_ref, "model_version": s.model_version,
        "backend": "sd-worker", "device": s.device, "dtype": s.dtype, "capabilities": list(s.capabilities),
        "vram_bytes": s.vram_bytes, "version": s.version,
    }  # fmt: skip


def heartbeat_payload(s: WorkerSnapshot, stopping: bool = False) -> Payload:
    """sd-worker: the body of a heartbeat (DESIGN.md, hive protocol step 2)."""
    status: Literal["idle", "busy", "stopping"] = "stopping" if stopping else "busy" if s.busy else "idle"
    return {
        "worker_id": s.worker_id,
        "timestamp": timestamp(),
        "health_status": "healthy" if s.healthy else "degraded",
        "status": status,
        "queue_depth": s.queue_depth,
        "active_job": s.active_job,
    }


def rbee_b_ready(s: WorkerSnapshot) -> Payload:
    """rbee Gen B: `POST /v1/workers/ready`; `device` is the integer the hive spawned the worker with."""
    return {"worker_id": s.worker_id, "url": s.url, "model_ref": s.model_ref, "backend": s.backend,
            "device": s.device_index}  # fmt: skip


def rbee_b_heartbeat(s: WorkerSnapshot) -> Payload:
    """rbee Gen B: `POST /v1/heartbeat`."""
    return {"worker_id": s.worker_id, "timestamp": timestamp(),
            "health_status": "healthy" if s.healthy else "degraded"}  # fmt: skip


@dataclass(frozen=True)
class HiveShapes:
    """One protocol's bodies; `stopping` is None where the protocol has no goodbye."""

    ready: Callable[[WorkerSnapshot], Payload]
    heartbeat: Callable[[WorkerSnapshot], Payload]
    stopping: Callable[[WorkerSnapshot], Payload] | None


SHAPES: dict[str, HiveShapes] = {
    "sd-worker": HiveShapes(ready_payload, heartbeat_payload, lambda s: heartbeat_payload(s, stopping=True)),
    "rbee-b": HiveShapes(rbee_b_ready, rbee_b_heartbeat, None),
}
