"""The worker's life after loading: hive registration, and the drain that SIGTERM starts."""

from __future__ import annotations

import asyncio
import logging

from worker import __version__
from worker.api.state import WorkerState
from worker.engine.events import EventLog
from worker.registration.hive import HiveClient
from worker.registration.registrar import Registrar, WorkerSnapshot

log = logging.getLogger(__name__)
TASKS = ("txt2img", "img2img", "inpaint")


def capabilities(components: str) -> tuple[str, ...]:
    """What a worker started with `--components` serves: the tasks (taking prompt_embeds too) and/or encode."""
    if components == "text-encoder":
        return ("encode",)
    return (*TASKS, "encode", "prompt_embeds") if components == "all" else (*TASKS, "prompt_embeds")


def snapshot(state: WorkerState) -> WorkerSnapshot:
    """The worker as the hive sees it right now."""
    backend, engine, settings = state.backend, state.engine, state.settings
    active = engine.active_job
    return WorkerSnapshot(
        worker_id=settings.resolved_worker_id(), url=settings.resolved_advertise_url(),
        model_ref=backend.model_ref, model_version=backend.family.name, device=backend.device,
        dtype=backend.dtype, capabilities=capabilities(backend.components), vram_bytes=backend.memory()["total"],
        version=__version__, healthy=state.health == "healthy", queue_depth=engine.queue_depth,
        active_job=active.id if active is not None else None,
    )  # fmt: skip


def start_registration(state: WorkerState) -> None:
    """With --callback-url: announce the worker and keep the heartbeat (in the background)."""
    settings = state.settings
    heartbeat_url = settings.resolved_heartbeat_url()
    if settings.callback_url is None or heartbeat_url is None:
        return
    client = HiveClient(settings.callback_url, heartbeat_url, settings.hive_timeout)
    state.registrar = Registrar(
        client, lambda: snapshot(state), interval=settings.heartbeat_interval,
        retry_initial=settings.hive_retry_initial, retry_max=settings.hive_retry_max,
    )  # fmt: skip
    state.registrar.start()


async def drain(state: WorkerState) -> None:
    """Stop admitting (503), tell the hive we are stopping, fail waiting jobs, let the running one finish."""
    state.status, state.reason = "draining", "the worker is shutting down"
    if state.registrar is not None:
        await state.registrar.stop()
    state.tracker.stopping()  # async jobs still queued stay in the journal for the next start
    state.engine.close()
    active = state.engine.active_jobs  # one batch: every job in it finishes (or is cancelled) together
    if not active:
        return
    ids = ", ".join(job.id for job in active)
    log.info("draining: waiting up to %gs for job(s) %s", state.settings.drain_timeout, ids)
    try:
        every = asyncio.gather(*(_until_final(job.events) for job in active))
        await asyncio.wait_for(every, state.settings.drain_timeout)
    except TimeoutError:
        log.warning("job(s) %s did not finish within the drain timeout; cancelling them", ids)
        for job in active:
            state.engine.cancel(job, "the worker is shutting down")


async def _until_final(events: EventLog) -> None:
    async for _ in events.follow(keepalive=1.0):
        pass
