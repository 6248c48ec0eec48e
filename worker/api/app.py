"""The app factory: settings in, FastAPI app out; the model loads in the background during `lifespan`."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from worker import __version__
from worker.api.a1111.options import Options
from worker.api.a1111.router import extras as a1111_extras
from worker.api.a1111.router import router as a1111_router
from worker.api.a1111.serving import A1111State
from worker.api.capabilities import router as capabilities_router
from worker.api.docs import install_docs
from worker.api.errors import install_error_handlers
from worker.api.lifecycle import start_queen_heartbeat, start_registration
from worker.api.middleware import BearerAuth, BodySizeLimit
from worker.api.native.async_jobs import resubmit
from worker.api.native.router import router
from worker.api.openai.router import router as openai_router
from worker.api.playground import install_playground
from worker.api.rbee.router import router as rbee_router
from worker.api.request_id import RequestId
from worker.api.state import WorkerState
from worker.api.tokens import StreamTokens
from worker.api.tracker import JobTracker
from worker.api.worker_id import WorkerIdHeader
from worker.config import Settings
from worker.engine.engine import Engine, build_engine
from worker.engine.protocol import ImageGenerationBackend
from worker.errors import WorkerError
from worker.journal import JobJournal
from worker.webhooks.policy import WebhookPolicy
from worker.webhooks.sender import WebhookConfig, WebhookSender

log = logging.getLogger(__name__)
EXPOSED_HEADERS = [
    "X-Job-Id",
    "X-Worker-Id",
    "X-Request-Id",
    "X-Ignored-Params",
    "X-Stream-Token",
    "Location",
    "Retry-After",
]


def create_app(
    settings: Settings,
    backend: ImageGenerationBackend | None = None,
    on_fatal: Callable[[str], None] | None = None,
) -> FastAPI:
    """Build the app. `backend` may be injected (tests share one loaded model); `on_fatal` hears load errors."""
    if backend is None:
        from worker.backends.resolver import create_backend  # torch comes with the backend, not with the API

        backend = create_backend(settings)
    engine = build_engine(settings, backend)
    state = WorkerState(settings, backend, engine, _tracker(settings, engine), StreamTokens(settings.api_key))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.loop = asyncio.get_running_loop()
        start_queen_heartbeat(state)
        loader = asyncio.create_task(_load(state, on_fatal))
        try:
            yield
        finally:
            state.status, state.reason = "draining", "the worker is shutting down"
            loader.cancel()
            if state.registrar is not None:
                await state.registrar.stop()
            state.tracker.stopping()
            await asyncio.to_thread(engine.stop, settings.drain_timeout)
            if state.queen is not None:
                await state.queen.stop()
            await state.tracker.close()
            engine.store.close()  # the private temp folder of url-response images, if any

    app = FastAPI(title="sd-worker", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.worker = state
    app.state.a1111 = A1111State(Options(backend))
    install_docs(app)  # Swagger UI from a package: /docs works offline
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(openai_router)
    app.include_router(capabilities_router)
    app.include_router(rbee_router)
    app.include_router(a1111_router)
    app.include_router(a1111_extras)
    install_playground(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.limits.max_body_bytes)
    if settings.api_key:
        app.add_middleware(BearerAuth, api_key=settings.api_key, tokens=state.tokens)
    app.add_middleware(RequestId)  # outside auth and size checks: their refusals carry an id too
    if settings.cors_origin:  # outside auth: a preflight carries no API key
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["*"],  # SDKs add their own (x-stainless-*, openai-organization, last-event-id)
            expose_headers=EXPOSED_HEADERS,
        )
    app.add_middleware(WorkerIdHeader, worker_id=settings.resolved_worker_id())  # outermost: on every response
    return app


def _tracker(settings: Settings, engine: Engine) -> JobTracker:
    """The follower of async and webhook jobs, with its journal under --state-dir."""
    if settings.webhook_allow and not settings.webhook_secret:
        log.warning("--webhook-allow without --webhook-secret: webhooks go out unsigned")
    config = WebhookConfig(
        settings.webhook_secret, settings.webhook_tries, settings.webhook_backoff, settings.webhook_timeout
    )
    policy = WebhookPolicy(settings.webhook_allow)
    journal = JobJournal(settings.state_dir) if settings.state_dir is not None else None
    return JobTracker(
        engine, policy, WebhookSender(policy, config), journal, settings.keep_results, settings.result_ttl
    )


async def _load(state: WorkerState, on_fatal: Callable[[str], None] | None) -> None:
    """Load and warm the model off the event loop, then start the engine and turn ready."""
    try:
        await asyncio.to_thread(state.backend.load)
    except Exception as exc:
        message = exc.message if isinstance(exc, WorkerError) else f"loading the model failed: {exc!r}"
        if not isinstance(exc, WorkerError):
            log.exception("loading the model failed")
        state.status, state.reason = "degraded", message
        log.error("%s", message)
        if on_fatal is not None:
            on_fatal(message)
        return
    state.engine.start()
    await state.tracker.recover(functools.partial(resubmit, state))
    state.status, state.reason = "healthy", "ready"
    start_registration(state)
    log.info("ready: %s on %s/%s", state.backend.family.name, state.backend.device, state.backend.dtype)
