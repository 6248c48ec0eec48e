"""What the running app holds (on `app.state.worker`): settings, backend, engine, readiness; and the FastAPI
dependency that hands it to routes."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Annotated, Literal

from fastapi import Depends, Request

from worker.api.tokens import StreamTokens
from worker.api.tracker import JobTracker
from worker.config import Settings
from worker.engine.engine import Engine
from worker.engine.protocol import ImageGenerationBackend
from worker.errors import NotReady
from worker.registration.queen import QueenHeartbeat
from worker.registration.registrar import Registrar


@dataclass
class WorkerState:
    """One worker's live objects."""

    settings: Settings
    backend: ImageGenerationBackend
    engine: Engine
    tracker: JobTracker
    tokens: StreamTokens
    started_at: float = field(default_factory=time.monotonic)
    status: Literal["loading", "healthy", "degraded", "draining"] = "loading"
    reason: str = "loading the model"
    registrar: Registrar | None = None
    queen: QueenHeartbeat | None = None  # rbee Gen C, with --queen-url
    loop: asyncio.AbstractEventLoop | None = None  # the server's loop, for signal handlers

    @property
    def health(self) -> Literal["loading", "healthy", "degraded"]:
        """/health's status: degraded while draining, after a failed load, or while the device keeps failing."""
        if self.status == "loading":
            return "loading"
        if self.status == "healthy" and not self.engine.failing:
            return "healthy"
        return "degraded"

    @property
    def ready(self) -> bool:
        """Loaded, warmed and not draining."""
        return self.status == "healthy"

    def require_ready(self) -> None:
        """Raise 503 unless jobs can be accepted."""
        if not self.ready:
            raise NotReady(f"the worker is not ready: {self.reason}")


def worker_state(request: Request) -> WorkerState:
    """The app's `WorkerState` (a FastAPI dependency)."""
    state: WorkerState = request.app.state.worker
    return state


State = Annotated[WorkerState, Depends(worker_state)]
