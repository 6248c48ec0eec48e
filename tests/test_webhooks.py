"""Webhooks: signed POSTs of a job's final state to a real local receiver, retried, only to allowed hosts.

The receiver verifies signatures the way GitHub documents for its `X-Hub-Signature-256` header
(HMAC-SHA256 of the raw body, hex, prefixed `sha256=`, compared in constant time).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support import decode, pixels
from worker.journal import JobJournal

SECRET = "whsec-test"
BODY = {"prompt": "a cat", "steps": 2, "width": 64, "height": 64, "seed": 9}
JSON = {"Accept": "application/json"}


class Receiver:
    """A webhook receiver on loopback: answers each POST with the next scripted status (then 200)."""

    def __init__(self, statuses: list[int] | None = None, hang: bool = False) -> None:
        self.statuses = list(statuses or [])
        self.hang = hang
        self.release = threading.Event()
        self.calls: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.calls.append(({k.lower(): v for k, v in self.headers.items()}, body))
                if receiver.hang:
                    receiver.release.wait(60)
                    return
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self) -> Receiver:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def verified(self, index: int) -> dict[str, Any]:
        """The JSON of call `index`, after checking its signature as a receiver must."""
        headers, body = self.calls[index]
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(expected, headers["x-signature-256"])
        payload: dict[str, Any] = json.loads(body)
        assert headers["x-job-id"] == payload["job_id"]
        assert abs(int(headers["x-webhook-timestamp"]) - time.time()) < 60
        return payload


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as started:
        yield started


def hooks(**overrides: Any) -> dict[str, Any]:
    """Worker settings with webhooks to loopback on (tries fast)."""
    return {"webhook_allow": ["127.0.0.1"], "webhook_secret": SECRET, "webhook_backoff": 0.05, **overrides}


async def until(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never came true"
        await asyncio.sleep(0.02)


async def test_the_final_state_is_posted_once_signed(client_for: Any, receiver: Receiver) -> None:
    async with client_for("sd15", **hooks()) as client:
        done = await client.post("/execute", json={**BODY, "webhook_url": receiver.url}, headers=JSON)
        assert done.status_code == 200
        await until(lambda: len(receiver.calls) == 1)
        payload = receiver.verified(0)
        assert payload["job_id"] == done.headers["x-job-id"] and payload["status"] == "completed"
        assert pixels(decode(payload["result"]["image"])).tobytes() == pixels(decode(done.json()["image"])).tobytes()
        job = (await client.get(f"/v1/jobs/{payload['job_id']}")).json()
        assert job["webhook"]["status"] == "delivered" and job["webhook"]["attempts"][0]["status_code"] == 200
        await asyncio.sleep(0.1)
    assert len(receiver.calls) == 1  # exactly one POST per job


async def test_500_twice_then_200_is_delivered_on_the_third_try(client_for: Any) -> None:
    with Receiver([500, 500]) as receiver:
        async with client_for("sd15", **hooks()) as client:
            done = await client.post("/execute", json={**BODY, "webhook_url": receiver.url}, headers=JSON)
            job_url = f"/v1/jobs/{done.headers['x-job-id']}"
            await until(lambda: len(receiver.calls) == 3)
            await asyncio.sleep(0.05)
            webhook = (await client.get(job_url)).json()["webhook"]
    assert [a["status_code"] for a in webhook["attempts"]] == [500, 500, 200]
    assert webhook["status"] == "delivered"
    assert receiver.calls[0][1] == receiver.calls[2][1]  # the same signed body every time


async def test_a_receiver_that_keeps_failing_is_given_up_after_the_tries(client_for: Any) -> None:
    with Receiver([503] * 5) as receiver:
        async with client_for("sd15", **hooks(webhook_tries=2)) as client:
            done = await client.post("/execute", json={**BODY, "webhook_url": receiver.url}, headers=JSON)
            await until(lambda: len(receiver.calls) == 2)
            await asyncio.sleep(0.05)
            webhook = (await client.get(f"/v1/jobs/{done.headers['x-job-id']}")).json()["webhook"]
    assert webhook["status"] == "failed" and len(webhook["attempts"]) == 2


async def test_disallowed_hosts_are_refused_before_the_job_runs(client_for: Any, receiver: Receiver) -> None:
    async with client_for("sd15") as client:  # no --webhook-allow: webhooks are off
        off = await client.post("/execute", json={**BODY, "webhook_url": receiver.url}, headers=JSON)
        assert off.status_code == 422 and "--webhook-allow" in off.json()["error"]["message"]
    async with client_for("sd15", **hooks(webhook_allow=["hooks.example.com", "*"])) as client:
        # `*` matches, but loopback is private: only a literal pattern opens it
        private = await client.post("/execute", json={**BODY, "webhook_url": receiver.url}, headers=JSON)
        assert private.status_code == 422 and private.json()["error"]["field"] == "webhook_url"
        assert "non-public address 127.0.0.1" in private.json()["error"]["message"]
    async with client_for("sd15", **hooks(webhook_allow=["hooks.example.com"])) as client:
        other = await client.post(
            "/execute", json={**BODY, "webhook_url": "http://evil.example.net/x"}, headers={**JSON}
        )
        assert other.status_code == 422 and "hooks.example.com" in other.json()["error"]["message"]
        scheme = await client.post("/execute", json={**BODY, "webhook_url": "ftp://hooks.example.com/"}, headers=JSON)
        assert scheme.status_code == 422
        assert (await client.get("/v1/jobs")).json()["jobs"] == []  # nothing was queued
    assert receiver.calls == []


async def test_redirects_are_not_followed(client_for: Any, receiver: Receiver) -> None:
    with Receiver([307]) as redirecting:
        async with client_for("sd15", **hooks()) as client:
            done = await client.post("/execute", json={**BODY, "webhook_url": redirecting.url}, headers=JSON)
            await until(lambda: len(redirecting.calls) == 1)
            await asyncio.sleep(0.05)
            webhook = (await client.get(f"/v1/jobs/{done.headers['x-job-id']}")).json()["webhook"]
    assert webhook["status"] == "failed" and webhook["attempts"] == [{"at": webhook["attempts"][0]["at"],
                                                                     "status_code": 307}]  # fmt: skip


async def test_a_receiver_that_never_answers_does_not_hold_up_the_next_job(client_for: Any) -> None:
    with Receiver(hang=True) as silent:
        async with client_for("sd15", **hooks(webhook_timeout=30.0)) as client:
            first = await client.post("/execute", json={**BODY, "webhook_url": silent.url}, headers=JSON)
            assert first.status_code == 200
            await until(lambda: len(silent.calls) == 1)
            second = await client.post("/execute", json={**BODY, "seed": 10}, headers=JSON)
            assert second.status_code == 200
            # the next job finished while the first one's webhook is still waiting for its answer
            webhook = (await client.get(f"/v1/jobs/{first.headers['x-job-id']}")).json()["webhook"]
            assert webhook["status"] == "pending" and webhook["attempts"] == []
            silent.release.set()


async def test_undelivered_webhooks_are_retried_after_a_restart(client_for: Any, tmp_path: Path) -> None:
    with Receiver([500]) as receiver:
        async with client_for("sd15", state_dir=tmp_path, **hooks(webhook_backoff=60.0)) as client:
            accepted = await client.post(
                "/execute", json={**BODY, "webhook_url": receiver.url}, headers={"Prefer": "respond-async"}
            )
            await until(lambda: len(receiver.calls) == 1)  # the worker stops while waiting to retry
        journal = JobJournal(tmp_path)
        row = journal.get(accepted.json()["job_id"])
        journal.close()
        assert row is not None and row.status == "completed" and row.webhook is not None
        assert row.webhook["status"] == "pending" and len(row.webhook["attempts"]) == 1
        async with client_for("sd15", state_dir=tmp_path, **hooks()) as client:
            await until(lambda: len(receiver.calls) == 2)
            payload = receiver.verified(1)
            assert payload["job_id"] == row.id and payload["status"] == "completed"
            await asyncio.sleep(0.05)
            webhook = (await client.get(accepted.headers["location"])).json()["webhook"]
    assert [a["status_code"] for a in webhook["attempts"]] == [500, 200]


async def test_a_failed_job_is_reported_with_its_error(client_for: Any, receiver: Receiver) -> None:
    async with client_for("sd15", job_timeout=0.001, **hooks()) as client:
        failed = await client.post("/execute", json={**BODY, "webhook_url": receiver.url}, headers=JSON)
        assert failed.status_code == 504
        await until(lambda: len(receiver.calls) == 1)
    payload = receiver.verified(0)
    assert payload["status"] == "failed" and payload["error"]["code"] == "timeout"


async def test_a_receiver_that_is_down_fails_only_its_webhook(client_for: Any) -> None:
    from tests.support import free_port

    down = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    async with client_for("sd15", **hooks()) as client:
        done = await client.post("/execute", json={**BODY, "webhook_url": down}, headers=JSON)
        assert done.status_code == 200 and done.json()["images"]
        job_url = f"/v1/jobs/{done.headers['x-job-id']}"
        deadline = time.monotonic() + 30
        while (webhook := (await client.get(job_url)).json()["webhook"])["status"] == "pending":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    assert webhook["status"] == "failed" and len(webhook["attempts"]) == 3
    assert all("ConnectError" in attempt["error"] for attempt in webhook["attempts"])
