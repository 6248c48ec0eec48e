"""Jobs that outlive their request: journals accepted async jobs, delivers webhooks, recovers after a crash."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool

from worker.api.native.serializer import job_view
from worker.engine.engine import Engine
from worker.engine.events import Started
from worker.engine.job import Job, JobStatus
from worker.errors import NotFound, QueueFull, WorkerError
from worker.journal import JobJournal, JournaledJob
from worker.webhooks.policy import WebhookPolicy
from worker.webhooks.sender import Delivery, WebhookSender

log = logging.getLogger(__name__)
MAX_INTERRUPTIONS = 2  # restarts that find a job running before it is given up on (it may be what crashes us)
Resubmit = Callable[[str, dict[str, Any], str], Awaitable[Job]]  # (task, journaled body, job id) → queued job


class JobTracker:
    """Follows jobs in background tasks on the event loop; the device thread never waits for any of this."""

    def __init__(
        self,
        engine: Engine,
        policy: WebhookPolicy,
        sender: WebhookSender,
        journal: JobJournal | None,
        keep: int,
        max_age: float,
    ) -> None:
        self.engine = engine
        self.policy = policy
        self.sender = sender
        self.journal = journal
        self._keep, self._max_age = keep, max_age
        self._tasks: set[asyncio.Task[None]] = set()  # followers: they journal what jobs do
        self._sending: set[asyncio.Task[None]] = set()  # webhook deliveries: journaled, so resumable
        self._deliveries: OrderedDict[str, Delivery] = OrderedDict()
        self._stopping = False

    async def check_webhook(self, url: str | None, field: str = "webhook_url") -> None:
        """Refuse a webhook URL before any job is queued (422; resolving the host is blocking)."""
        if url is not None:
            await run_in_threadpool(self.policy.check, url, field)

    async def accept(self, job: Job, task: str, body: dict[str, Any], webhook_url: str | None) -> None:
        """An async job: journal it (when --state-dir is set) before the 202 goes out, then follow it."""
        delivery = Delivery(webhook_url) if webhook_url else None
        if self.journal is not None:
            webhook = delivery.to_dict() if delivery else None
            await run_in_threadpool(self.journal.accept, job.id, task, body, webhook)
        self.follow(job, delivery, self.journal)

    def follow(self, job: Job, delivery: Delivery | None, journal: JobJournal | None = None) -> None:
        """Watch `job` to its end: journal its progress and final view, then deliver its webhook."""
        if delivery is not None:
            self._remember(job.id, delivery)
        if delivery is not None or journal is not None:
            self._spawn(self._follow(job, delivery, journal))

    async def view(self, job_id: str) -> dict[str, Any]:
        """`GET /v1/jobs/{id}`: the live job, or what the journal remembers from before a restart."""
        try:
            view = await run_in_threadpool(job_view, self.engine.get(job_id))  # base64 of the images
        except NotFound:
            row = await self._journaled(job_id)
            if row is None:
                raise
            view = row.view or _pending_view(row)
            if row.webhook is not None:
                view["webhook"] = row.webhook
            return view
        if (delivery := self._deliveries.get(job_id)) is not None:
            view["webhook"] = delivery.to_dict()
        return view

    async def recover(self, resubmit: Resubmit) -> None:
        """After a restart: rerun what was queued or running (same ids, same seeds), retry pending webhooks."""
        journal = self.journal
        if journal is None:
            return
        rows = await run_in_threadpool(journal.unfinished)
        for row in rows:
            await self._recover(journal, row, resubmit)
        for row in await run_in_threadpool(journal.undelivered):
            assert row.webhook is not None and row.view is not None
            self._send(row.id, Delivery.from_dict(row.webhook), row.view, journal)
        if rows:
            log.info("recovered %d journaled job(s) from %s", len(rows), journal.path)

    def stopping(self) -> None:
        """The worker is shutting down: jobs cancelled from now on stay queued in the journal for the next start."""
        self._stopping = True

    async def close(self, grace: float = 5.0) -> None:
        """Stop webhook deliveries (the journal resumes them), let followers write what they know (up to
        `grace` seconds), then stop them and close the journal."""
        for task in list(self._sending):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        for task in [*self._tasks, *self._sending]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.sender.close()
        if self.journal is not None:
            self.journal.close()

    async def _recover(self, journal: JobJournal, row: JournaledJob, resubmit: Resubmit) -> None:
        interrupted = row.interrupted + (row.status == "running")
        delivery = Delivery.from_dict(row.webhook) if row.webhook else None
        if interrupted >= MAX_INTERRUPTIONS:
            message = f"the worker restarted {interrupted} times while this job was running; it is not run again"
            await self._give_up(journal, row, delivery, message)
            return
        await run_in_threadpool(journal.requeue, row.id, interrupted)
        while True:
            try:
                job = await resubmit(row.task, row.body, row.id)
            except QueueFull as exc:  # a batch's worth of recovered jobs can exceed --max-queue for a moment
                await asyncio.sleep(min(exc.retry_after, 1))
                continue
            except WorkerError as exc:  # e.g. a LoRA that is gone since
                await self._give_up(journal, row, delivery, f"the job cannot run again after a restart: {exc.message}")
                return
            break
        job.created_at = row.created_at
        self.follow(job, delivery, journal)

    async def _give_up(self, journal: JobJournal, row: JournaledJob, delivery: Delivery | None, message: str) -> None:
        log.error("job %s: %s", row.id, message)
        view = {**_pending_view(row), "status": "failed", "finished_at": time.time()}
        view["error"] = {"code": "internal", "message": message}
        await run_in_threadpool(journal.finish, row.id, view)
        if delivery is not None:
            self._send(row.id, delivery, view, journal)

    async def _follow(self, job: Job, delivery: Delivery | None, journal: JobJournal | None) -> None:
        async for entry in job.events.follow(keepalive=60.0):
            if journal is not None and entry is not None and isinstance(entry.event, Started):
                await run_in_threadpool(journal.running, job.id)
        if self._stopping and job.status is JobStatus.CANCELLED:
            return  # cut short by the shutdown, not by a user: the journal keeps it for the next start
        view = await run_in_threadpool(job_view, job)
        if journal is not None:
            await run_in_threadpool(journal.finish, job.id, view)
            await run_in_threadpool(journal.prune, self._keep, self._max_age)
        if delivery is not None:
            self._send(job.id, delivery, view, journal)

    def _send(self, job_id: str, delivery: Delivery, payload: dict[str, Any], journal: JobJournal | None) -> None:
        async def record(updated: Delivery) -> None:
            if journal is not None:
                await run_in_threadpool(journal.webhook, job_id, updated.to_dict())

        self._remember(job_id, delivery)
        self._spawn(self.sender.deliver(delivery, job_id, payload, record), self._sending)

    async def _journaled(self, job_id: str) -> JournaledJob | None:
        if self.journal is None:
            return None
        return await run_in_threadpool(self.journal.get, job_id)

    def _remember(self, job_id: str, delivery: Delivery) -> None:
        self._deliveries[job_id] = delivery
        while len(self._deliveries) > self._keep:
            self._deliveries.popitem(last=False)

    def _spawn(self, work: Awaitable[Any], into: set[asyncio.Task[None]] | None = None) -> None:
        tasks = self._tasks if into is None else into
        task = asyncio.ensure_future(work)
        tasks.add(task)
        task.add_done_callback(lambda done: self._done(done, tasks))

    def _done(self, task: asyncio.Task[None], tasks: set[asyncio.Task[None]]) -> None:
        tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("background job follower failed", exc_info=exc)


def _pending_view(row: JournaledJob) -> dict[str, Any]:
    """What is known of a journaled job the engine has not (re)taken yet."""
    seed, count = int(row.body.get("seed") or 0), int(row.body.get("num_samples") or 1)
    return {
        "job_id": row.id, "status": row.status, "created_at": row.created_at, "started_at": None,
        "finished_at": row.finished_at, "seeds": [(seed + i) % 2**32 for i in range(count)],
        "progress": {"step": 0, "total_steps": 0, "percent": 0.0},
    }  # fmt: skip
