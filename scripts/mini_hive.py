"""A reference hive for the sd-worker protocol: for tests, and for trying the protocol by hand.

    python scripts/mini_hive.py --port 9000
    sd-worker --callback-url http://127.0.0.1:9000/v1/register --port 8081
    curl -N -X POST localhost:9000/execute -H 'Content-Type: application/json' -d '{"prompt": "a cat"}'

It records registrations and heartbeats, evicts a worker after `--evict-after` seconds without a heartbeat,
answers 404 to heartbeats from workers it does not know (so they register again), and forwards `/execute` to
the registered, non-stopping worker with the fewest jobs in flight, relaying its response (SSE or JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse


@dataclass
class WorkerRecord:
    """What the hive knows about one worker."""

    registration: dict[str, Any]
    last_seen: float
    status: str = "idle"
    in_flight: int = 0
    jobs: int = 0


@dataclass
class HiveState:
    """Everything the hive remembers (a restart forgets it all)."""

    evict_after: float
    fail_registrations: int = 0
    workers: dict[str, WorkerRecord] = field(default_factory=dict)
    registrations: list[dict[str, Any]] = field(default_factory=list)  # accepted, in order
    attempts: int = 0
    heartbeats: list[dict[str, Any]] = field(default_factory=list)

    def evict(self) -> None:
        """Forget workers whose heartbeat stopped."""
        now = time.monotonic()
        for worker_id in [w for w, r in self.workers.items() if now - r.last_seen > self.evict_after]:
            del self.workers[worker_id]

    def pick(self) -> WorkerRecord | None:
        """The available worker with the fewest jobs in flight."""
        self.evict()
        ready = [r for r in self.workers.values() if r.status != "stopping"]
        return min(ready, key=lambda r: (r.in_flight, r.jobs), default=None)


def create_hive(evict_after: float = 60.0, fail_registrations: int = 0) -> FastAPI:
    """The hive app. `fail_registrations` answers the first N registrations with 500 (to test retries)."""
    hive = HiveState(evict_after=evict_after, fail_registrations=fail_registrations)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def evict_forever() -> None:
            while True:
                await asyncio.sleep(min(5.0, evict_after))
                hive.evict()

        task = asyncio.create_task(evict_forever())
        async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None)) as client:
            app.state.client = client
            yield
        task.cancel()

    app = FastAPI(title="mini hive", lifespan=lifespan)
    app.state.hive = hive

    @app.post("/v1/register")
    async def register(payload: dict[str, Any]) -> Response:
        hive.attempts += 1
        if hive.fail_registrations > 0:
            hive.fail_registrations -= 1
            return JSONResponse({"error": "injected failure"}, status_code=500)
        hive.registrations.append(payload)
        hive.workers[payload["worker_id"]] = WorkerRecord(payload, time.monotonic())
        return JSONResponse({"registered": payload["worker_id"]})

    @app.post("/v1/heartbeat")
    async def heartbeat(payload: dict[str, Any]) -> Response:
        hive.heartbeats.append(payload)
        record = hive.workers.get(payload.get("worker_id", ""))
        if record is None:
            return JSONResponse({"error": "unknown worker; register again"}, status_code=404)
        record.last_seen, record.status = time.monotonic(), payload.get("status", "idle")
        return JSONResponse({"ok": True})

    @app.get("/v1/workers")
    async def workers() -> dict[str, Any]:
        hive.evict()
        now = time.monotonic()
        return {"workers": [
            {**r.registration, "status": r.status, "in_flight": r.in_flight, "jobs": r.jobs,
             "seconds_since_heartbeat": round(now - r.last_seen, 1)}
            for r in hive.workers.values()
        ]}  # fmt: skip

    @app.post("/execute")
    async def execute(request: Request) -> Response:
        record = hive.pick()
        if record is None:
            return JSONResponse({"error": {"code": "no_worker", "message": "no worker is available"}}, 503)
        client: httpx.AsyncClient = request.app.state.client
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("accept", "content-type")}
        upstream = client.build_request(
            "POST", f"{record.registration['url']}/execute", content=await request.body(), headers=headers
        )
        record.in_flight += 1
        record.jobs += 1
        try:
            response = await client.send(upstream, stream=True)
        except httpx.HTTPError as exc:
            record.in_flight -= 1
            return JSONResponse({"error": {"code": "worker_unreachable", "message": str(exc)}}, 502)

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.aiter_raw():
                    yield chunk
            finally:
                record.in_flight -= 1
                await response.aclose()

        relayed = {k: v for k, v in response.headers.items() if k.lower() in ("content-type", "x-job-id")}
        relayed["X-Worker-Id"] = record.registration["worker_id"]
        return StreamingResponse(relay(), status_code=response.status_code, headers=relayed)

    return app


def main() -> None:
    """Run the hive."""
    parser = argparse.ArgumentParser(description="a reference hive for sd-worker")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--evict-after", type=float, default=60.0)
    args = parser.parse_args()
    uvicorn.run(create_hive(args.evict_after), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
