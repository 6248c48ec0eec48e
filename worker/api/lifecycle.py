"""The worker's life after loading: hive registration, and the drain that SIGTERM starts."""

from __future__ import annotations

import asyncio
import logging

from worker import __version__
from worker.api.state import WorkerState
from worker.engine.events import EventLog
from worker.registration.queen import QueenStatus, QueenView, build_queen_heartbeat
from worker.registration.registrar import build_registrar
from worker.registration.shapes import WorkerSnapshot

log = logging.getLogger(__name__)
TASKS = ("txt2img", "img2img", "inpaint")
RBEE_KINDS = {"cpu": ("cpu", "CPU"), "cuda": ("cuda", "GPU"), "mps": ("metal", "METAL")}  # torch → rbee names


def capabilities(components: str) -> tuple[str, ...]:
    """What a worker started with `--components` serves: the tasks (taking prompt_embeds too) and/or encode."""
    if components == "text-encoder":
        return ("encode",)
    return (*TASKS, "encode", "prompt_embeds") if components == "all" else (*TASKS, "prompt_embeds")


def rbee_device(state: WorkerState) -> tuple[str, int]:
    """(rbee backend name, integer device) of the device in use: what rbee spawned, echoed back."""
    settings, device = state.settings, state.backend.device
    kind, _, index = device.partition(":")
    backend = settings.backend or RBEE_KINDS.get(kind, ("cpu", "CPU"))[0]
    given = settings.device_index
    return backend, given if given is not None else int(index) if index.isdigit() else 0


def model_ref(state: WorkerState) -> str:
    """`--model-ref` (what the hive calls the model), else the path or id the model was loaded from."""
    return state.settings.model_ref or state.backend.model_ref


def snapshot(state: WorkerState) -> WorkerSnapshot:
    """The worker as the hive sees it right now."""
    backend, engine, settings = state.backend, state.engine, state.settings
    active = engine.active_job
    rbee_backend, index = rbee_device(state)
    return WorkerSnapshot(
        worker_id=settings.resolved_worker_id(), url=settings.resolved_advertise_url(),
        model_ref=model_ref(state), model_version=backend.family.name, device=backend.device,
        dtype=backend.dtype, capabilities=capabilities(backend.components), vram_bytes=backend.memory()["total"],
        version=__version__, healthy=state.health == "healthy", queue_depth=engine.queue_depth,
        active_job=active.id if active is not None else None, backend=rbee_backend, device_index=index,
    )  # fmt: skip


def queen_view(state: WorkerState) -> QueenView:
    """The worker as rbee's queen sees it (`WorkerInfo`)."""
    engine = state.engine
    status: QueenStatus = "starting" if state.status == "loading" else "stopping" if state.status == "draining" else (
        "busy" if engine.active_job is not None or engine.queue_depth else "ready")  # fmt: skip
    kind = RBEE_KINDS.get(state.backend.device.partition(":")[0], ("cpu", "CPU"))[1]
    device = f"{kind}-{rbee_device(state)[1]}"
    return QueenView(state.settings.resolved_worker_id(), model_ref(state), device, state.settings.port, status,
                     __version__)  # fmt: skip


def start_queen_heartbeat(state: WorkerState) -> None:
    """With --queen-url: heartbeat the rbee queen from now on (`starting` while the model loads)."""
    state.queen = build_queen_heartbeat(state.settings, lambda: queen_view(state))
    if state.queen is not None:
        state.queen.start()


def start_registration(state: WorkerState) -> None:
    """With --callback-url: announce the worker and keep the heartbeat (in the background)."""
    state.registrar = build_registrar(state.settings, lambda: snapshot(state))
    if state.registrar is not None:
        state.registrar.start()


async def drain(state: WorkerState) -> None:
    """Stop admitting (503), tell the hive we are stopping, fail waiting jobs, let the running one finish."""
    state.status, state.reason = "draining", "the worker is shutting down"
    if state.queen is not None:
        state.queen.nudge()  # the queen hears `stopping` now, not at the next beat
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
