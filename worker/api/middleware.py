"""Pure-ASGI middleware: the API key, and refusing oversized bodies from their Content-Length before reading."""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send


class BodySizeLimit:
    """413 when a request declares a body larger than `max_bytes`."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length", b"0")
            if length.isdigit() and int(length) > self.max_bytes:
                body = json.dumps(
                    {
                        "error": {
                            "code": "payload_too_large",
                            "message": f"the body is {int(length)} bytes; the limit is {self.max_bytes}",
                        }
                    }
                ).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 413,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class BearerAuth:
    """With `--api-key`: every route but /health needs `Authorization: Bearer <key>` (compared in constant time)."""

    OPEN_PATHS = ("/health",)
    OPENAI_PATHS = ("/v1/images", "/v1/models", "/v1/files")

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        if hmac.compare_digest(given, self.expected):
            await self.app(scope, receive, send)
            return
        message = "missing or wrong API key: send Authorization: Bearer <key>"
        if scope["path"].startswith(self.OPENAI_PATHS):
            error = {"message": message, "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}
        else:
            error = {"code": "unauthorized", "message": message}
        body = json.dumps({"error": error}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer"),
                                (b"content-length", str(len(body)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})
