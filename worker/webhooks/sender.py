"""Signed webhook delivery: one POST of a job's final payload, retried with backoff, never following redirects."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import httpx

from worker import __version__
from worker.errors import InvalidRequest
from worker.webhooks.policy import WebhookPolicy

log = logging.getLogger(__name__)
RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})  # other answers will not change on a retry


def sign(secret: str, body: bytes) -> str:
    """The `X-Signature-256` value: `sha256=` + hex HMAC-SHA256 of the raw body (GitHub's scheme)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class Delivery:
    """What happened to one job's webhook; shown on the job as `webhook` and journaled."""

    url: str
    status: Literal["pending", "delivered", "failed"] = "pending"
    attempts: list[dict[str, Any]] = field(default_factory=list)  # {"at", "status_code"} or {"at", "error"}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Delivery:
        """Back from `to_dict` (the journal)."""
        return cls(url=data["url"], status=data["status"], attempts=list(data["attempts"]))


@dataclass(frozen=True)
class WebhookConfig:
    """`--webhook-secret`, `--webhook-tries`, `--webhook-backoff` (first wait, doubling), `--webhook-timeout`."""

    secret: str | None
    tries: int = 3
    backoff: float = 1.0
    timeout: float = 10.0


class WebhookSender:
    """Delivers payloads on the event loop; a slow or dead receiver costs only its own task, never a job."""

    def __init__(self, policy: WebhookPolicy, config: WebhookConfig) -> None:
        self.policy = policy
        self.config = config
        self._client: httpx.AsyncClient | None = None  # made on first use, inside the server's loop

    async def deliver(
        self, delivery: Delivery, job_id: str, payload: dict[str, Any], record: Callable[[Delivery], Awaitable[None]]
    ) -> Delivery:
        """POST until a 2xx, a permanent refusal, or `tries` attempts; `record` hears every attempt."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "User-Agent": f"sd-worker/{__version__}", "X-Job-Id": job_id}
        if self.config.secret:
            headers["X-Signature-256"] = sign(self.config.secret, body)
        while len(delivery.attempts) < self.config.tries and delivery.status == "pending":
            if delivery.attempts:
                await asyncio.sleep(self.config.backoff * 2 ** (len(delivery.attempts) - 1))
            retry = await self._attempt(delivery, body, headers)
            if not retry:
                delivery.status = "delivered" if _ok(delivery.attempts[-1]) else "failed"
            elif len(delivery.attempts) >= self.config.tries:
                delivery.status = "failed"
            await record(delivery)
        if delivery.status == "failed":
            log.warning("webhook for job %s to %s failed: %s", job_id, delivery.url, delivery.attempts[-1])
        return delivery

    async def _attempt(self, delivery: Delivery, body: bytes, headers: dict[str, str]) -> bool:
        """One POST, appended to `delivery.attempts`; True when another try may succeed."""
        at = time.time()
        try:
            await asyncio.to_thread(self.policy.check, delivery.url)  # again now: DNS may have changed
        except InvalidRequest as exc:
            delivery.attempts.append({"at": at, "error": exc.message})
            return False
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=self.config.timeout)
        try:
            response = await self._client.post(
                delivery.url, content=body, headers={**headers, "X-Webhook-Timestamp": str(int(at))}
            )
        except httpx.HTTPError as exc:
            delivery.attempts.append({"at": at, "error": f"{type(exc).__name__}: {exc}".rstrip(": ")})
            return True
        delivery.attempts.append({"at": at, "status_code": response.status_code})
        return response.status_code in RETRYABLE

    async def close(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            await self._client.aclose()


def _ok(attempt: dict[str, Any]) -> bool:
    code: int = attempt.get("status_code", 0)
    return 200 <= code < 300
