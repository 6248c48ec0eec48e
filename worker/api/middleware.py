"""Pure-ASGI middleware: the API key, and refusing oversized bodies from their Content-Length before reading."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from typing import Any
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from worker.api.errors import error_body, is_openai
from worker.api.tokens import StreamTokens


class BodySizeLimit:
    """413 for bodies over `max_bytes`: at once from Content-Length, or as a chunked body's bytes arrive."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        openai = is_openai(scope["path"])
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if length.isdigit() and int(length) > self.max_bytes:
            message = f"the body is {int(length)} bytes; the limit is {self.max_bytes}"
            await _send_json(send, 413, error_body(413, "payload_too_large", message, openai=openai))
            return
        received = 0
        refused = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # answer here (FastAPI would turn a raised error into a 400) and stop the app's reading
                    refused = True
                    text = f"the body is over {self.max_bytes} bytes"
                    await _send_json(send, 413, error_body(413, "payload_too_large", text, openai=openai))
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:  # once refused, whatever the app answers has nowhere to go
                await send(message)

        await self.app(scope, counting_receive, guarded_send)


async def _send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BearerAuth:
    """With `--api-key`: every route but the probes needs `Authorization: Bearer <key>` (compared in constant time).

    A job's events route also takes that job's stream token as `?token=` (a browser `EventSource` sends no headers).

    The A1111 routes also take `Authorization: Basic` with the key as the password (any user name), which is how
    A1111 clients send `--api-auth user:pass`. OPTIONS requests pass: probes and preflights carry no key.
    """

    OPEN_PATHS = ("/health", "/ready", "/v1/health")  # probes send no key (rbee's hive probes /v1/health)
    # the playground page and its files hold no data: the page asks for the key and sends it on API calls
    PAGE_PREFIX = "/playground/"
    BASIC_PATHS = ("/sdapi/", "/internal/")

    def __init__(self, app: ASGIApp, api_key: str, tokens: StreamTokens) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode()
        self.key = api_key.encode()
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._open(scope["path"]) or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        basic = scope["path"].startswith(self.BASIC_PATHS)
        token = self._stream_token_ok(scope)
        if hmac.compare_digest(given, self.expected) or (basic and self._basic_ok(given)) or token:
            await self.app(scope, receive, send)
            return
        scheme = b"Basic" if basic else b"Bearer"
        accepted = "Basic (the key as password) or Bearer <key>" if basic else "Bearer <key>"
        message = f"missing or wrong API key: send Authorization: {accepted}"
        openai = is_openai(scope["path"])
        body = error_body(401, "invalid_api_key" if openai else "unauthorized", message, openai=openai)
        await _send_json(_with_header(send, b"www-authenticate", scheme), 401, body)

    def _basic_ok(self, given: bytes) -> bool:
        scheme, _, encoded = given.partition(b" ")
        if scheme.lower() != b"basic":
            return False
        try:
            _, _, password = base64.b64decode(encoded, validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(password, self.key)

    def _open(self, path: str) -> bool:
        return path in self.OPEN_PATHS or path == "/" or path.startswith(self.PAGE_PREFIX)

    def _stream_token_ok(self, scope: Scope) -> bool:
        if scope["method"] != "GET":
            return False
        tokens = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [])
        return len(tokens) == 1 and self.tokens.allows(scope["path"], tokens[0])


def _with_header(send: Send, name: bytes, value: bytes) -> Send:
    async def sender(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message["headers"], (name, value)]
        await send(message)

    return sender
