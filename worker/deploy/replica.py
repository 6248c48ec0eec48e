"""The Serve deployment: each replica builds the worker's own FastAPI app (one device, one model) and serves it."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from fastapi import FastAPI
from ray import serve
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from worker.api.app import create_app
from worker.api.state import WorkerState
from worker.config import Settings
from worker.deploy.affinity import replica_tag
from worker.deploy.options import FleetOptions, deployment_options

DEPLOYMENT = "SdWorker"
LOAD_POLL_S = 0.1


@serve.deployment(name=DEPLOYMENT)
@serve.ingress()
class SdWorkerReplica:
    """One replica: `create_app(settings)` with a worker id and job-id tag of its own.

    Serve runs the app's lifespan (model load in the background) after the constructor, then calls
    `check_health`, which waits for the load: a replica takes traffic only once its model is loaded and warmed.
    On downscale Serve stops routing to the replica, waits for its ongoing requests, then the app's lifespan
    shutdown drains the engine as SIGTERM does (waiting jobs fail, the running one finishes).
    """

    def __init__(self, settings: Settings) -> None:
        replica = serve.get_replica_context().replica_id.unique_id
        base = settings.worker_id or "sd-worker"
        self.settings = settings.model_copy(
            update={"worker_id": f"{base}-{replica}", "job_id_prefix": replica_tag(replica), "callback_url": None}
        )
        self.load_error: str | None = None
        self.worker_app = create_app(self.settings, on_fatal=self._on_fatal)
        self.worker_app.add_middleware(WithoutHeader, name=b"x-request-id")

    def __serve_build_asgi_app__(self) -> FastAPI:
        """The app Serve's proxy forwards every HTTP request to."""
        return self.worker_app

    async def check_health(self) -> None:
        """Serve's health probe: the engine's own health (fails after a failed load or repeated device errors)."""
        state: WorkerState = self.worker_app.state.worker
        # the first probe, at replica start, waits out the model load (the app's state has no event to await)
        while state.status == "loading":  # noqa: ASYNC110
            await asyncio.sleep(LOAD_POLL_S)
        if self.load_error is not None:
            raise RuntimeError(f"sd-worker replica {self.settings.worker_id}: {self.load_error}")
        if state.health != "healthy":
            raise RuntimeError(f"sd-worker replica {self.settings.worker_id} is {state.health}: {state.reason}")

    def _on_fatal(self, message: str) -> None:
        self.load_error = message


class WithoutHeader:
    """Drops one response header. Serve's proxy puts X-Request-ID on every response itself, and the worker adopted
    that same id from the request; two copies would reach the client as "id, id"."""

    def __init__(self, app: ASGIApp, name: bytes) -> None:
        self.app = app
        self.name = name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_without(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [(k, v) for k, v in message.get("headers", []) if k.lower() != self.name]
            await send(message)

        await self.app(scope, receive, send_without if scope["type"] == "http" else send)


def application(settings: Settings, fleet: FleetOptions, *, gpu: bool) -> serve.Application:
    """The worker app with options derived from its settings (one GPU per replica when `gpu`)."""
    options = deployment_options(settings, fleet, gpu=gpu)
    deployment = cast(serve.Deployment, SdWorkerReplica)  # the decorators' return types are not precise
    return deployment.options(**options).bind(settings)


def build(args: dict[str, Any]) -> serve.Application:
    """Application builder for `serve deploy deploy/ray-serve.yaml` (or `serve run worker.deploy.replica:build`).

    `args` are Settings fields (`sd_version`, `device`, `model_path`, `max_queue`, …); a config file's
    `deployments:` section overrides the derived options (autoscaling, resources).
    """
    settings = Settings(**args)
    return application(settings, FleetOptions(), gpu=settings.device == "cuda")
