"""The journal of accepted async jobs: an embedded SQLite database under `--state-dir` that survives a crash.

A 202 is a promise: the request, the job's status, its final view and its webhook delivery are written here,
so a restarted worker can run what was queued, rerun what was running, and still answer for what finished.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    body TEXT NOT NULL,            -- the native request as accepted (JSON), its seed fixed
    status TEXT NOT NULL,          -- queued | running | completed | failed | cancelled
    interrupted INTEGER NOT NULL DEFAULT 0,  -- restarts that found the job running
    created_at REAL NOT NULL,
    finished_at REAL,
    view TEXT,                     -- GET /v1/jobs/{id} once final (JSON)
    webhook TEXT                   -- the webhook Delivery (JSON), if the request asked for one
)
"""
FINAL = ("completed", "failed", "cancelled")


@dataclass(frozen=True)
class JournaledJob:
    """One row of the journal."""

    id: str
    task: str
    body: dict[str, Any]
    status: str
    interrupted: int
    created_at: float
    finished_at: float | None
    view: dict[str, Any] | None
    webhook: dict[str, Any] | None


class JobJournal:
    """Thread-safe; every write is its own committed transaction (synchronous=FULL: a 202 survives a crash)."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / "jobs.sqlite3"
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(SCHEMA)
        self._lock = threading.Lock()

    def accept(self, job_id: str, task: str, body: dict[str, Any], webhook: dict[str, Any] | None) -> None:
        """Record an accepted job as queued."""
        self._write(
            "INSERT OR REPLACE INTO jobs (id, task, body, status, created_at, webhook) "
            "VALUES (?, ?, ?, 'queued', ?, ?)",
            (job_id, task, json.dumps(body), time.time(), _json(webhook)),
        )

    def running(self, job_id: str) -> None:
        """The job reached the device."""
        self._write("UPDATE jobs SET status = 'running' WHERE id = ? AND status = 'queued'", (job_id,))

    def requeue(self, job_id: str, interrupted: int) -> None:
        """At recovery: the job will run again; `interrupted` counts the restarts that found it running."""
        self._write("UPDATE jobs SET status = 'queued', interrupted = ? WHERE id = ?", (interrupted, job_id))

    def finish(self, job_id: str, view: dict[str, Any]) -> None:
        """The job's final view (status completed/failed/cancelled, result or error)."""
        self._write(
            "UPDATE jobs SET status = ?, finished_at = ?, view = ? WHERE id = ?",
            (view["status"], view.get("finished_at") or time.time(), json.dumps(view), job_id),
        )

    def webhook(self, job_id: str, delivery: dict[str, Any]) -> None:
        """The webhook delivery record after an attempt."""
        self._write("UPDATE jobs SET webhook = ? WHERE id = ?", (json.dumps(delivery), job_id))

    def get(self, job_id: str) -> JournaledJob | None:
        """The row for a job id, if journaled."""
        rows = self._read("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return rows[0] if rows else None

    def unfinished(self) -> list[JournaledJob]:
        """Queued and running jobs, oldest first (the order they were accepted in)."""
        return self._read("SELECT * FROM jobs WHERE status IN ('queued', 'running') ORDER BY created_at", ())

    def undelivered(self) -> list[JournaledJob]:
        """Finished jobs whose webhook is still pending."""
        rows = self._read("SELECT * FROM jobs WHERE status IN (?, ?, ?) AND webhook IS NOT NULL", FINAL)
        return [row for row in rows if row.webhook is not None and row.webhook["status"] == "pending"]

    def prune(self, keep: int, max_age: float) -> None:
        """Forget finished jobs past the retention limits (`--keep-results`, `--result-ttl`)."""
        self._write(
            "DELETE FROM jobs WHERE status IN ('completed', 'failed', 'cancelled') AND (finished_at < ? OR id NOT IN "
            "(SELECT id FROM jobs WHERE status IN ('completed', 'failed', 'cancelled') "
            "ORDER BY finished_at DESC LIMIT ?))",
            (time.time() - max_age, keep),
        )

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        with self._lock:
            self._db.execute(sql, args)

    def _read(self, sql: str, args: tuple[Any, ...]) -> list[JournaledJob]:
        with self._lock:
            cursor = self._db.execute(sql, args)
            names = [column[0] for column in cursor.description]
            rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        return [
            JournaledJob(
                id=row["id"],
                task=row["task"],
                body=json.loads(row["body"]),
                status=row["status"],
                interrupted=row["interrupted"],
                created_at=row["created_at"],
                finished_at=row["finished_at"],
                view=_load(row["view"]),
                webhook=_load(row["webhook"]),
            )
            for row in rows
        ]


def _json(value: dict[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value)


def _load(text: str | None) -> dict[str, Any] | None:
    return None if text is None else dict(json.loads(text))
