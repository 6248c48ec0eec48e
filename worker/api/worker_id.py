"""`X-Worker-Id` on every response, so a client behind a load balancer or Ray Serve's proxy knows who answered."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-worker-id"


class WorkerIdHeader:
    """Pure-ASGI middleware: adds the worker id to the start of every HTTP response (errors and streams too)."""

    def __init__(self, app: ASGIApp, worker_id: str) -> None:
        self.app = app
        self.value = worker_id.encode("latin-1", errors="replace")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_worker_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (HEADER, self.value)]
            await send(message)

        await self.app(scope, receive, send_with_worker_id)
