"""Request ids: taken from `X-Request-Id` (if well-formed) or made here; echoed in the response header, in error
bodies and in every log line written while the request is handled."""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-request-id"
WELL_FORMED = re.compile(rb"^[A-Za-z0-9._-]{1,64}$")
current: ContextVar[str | None] = ContextVar("sd_worker_request_id", default=None)


class RequestId:
    """Pure-ASGI middleware: one id per HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(HEADER, b"")
        request_id = given.decode() if WELL_FORMED.match(given) else uuid.uuid4().hex
        token = current.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (HEADER, request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            current.reset(token)


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to log records ("-" outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Always keep the record; just annotate it."""
        record.request_id = current.get() or "-"
        return True
