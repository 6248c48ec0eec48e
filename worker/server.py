"""Run the app under uvicorn with a graceful drain: the first SIGTERM/SIGINT drains, a second one forces."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from types import FrameType

import uvicorn

from worker.api.app import create_app
from worker.api.lifecycle import drain
from worker.api.state import WorkerState
from worker.config import Settings
from worker.errors import WorkerError
from worker.listen import listen

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """uvicorn, but a stop signal first drains the worker (503s, stopping heartbeat, running job finishes)."""

    def __init__(self, config: uvicorn.Config, state: WorkerState) -> None:
        super().__init__(config)
        self._state = state
        self._drain: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Drain on the first signal once ready; otherwise (loading, or a second signal) stop as uvicorn does."""
        loop = self._state.loop
        if self._drain is not None or loop is None or not self._state.ready:
            super().handle_exit(sig, frame)
            return
        loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        if self._drain is None:
            self._drain = asyncio.ensure_future(drain(self._state))
            self._drain.add_done_callback(lambda _: setattr(self, "should_exit", True))


def serve(settings: Settings, sock: socket.socket | None = None) -> int:
    """Serve on `sock` (bound to the settings' host and port) until stopped; returns the process exit code
    (0 after a graceful stop, 1 if loading failed, 2 for options that cannot work)."""
    fatal: list[str] = []
    server: DrainingServer | None = None

    def on_fatal(message: str) -> None:
        fatal.append(message)
        if server is not None:
            server.should_exit = True

    try:
        sock = sock if sock is not None else listen(settings.host, settings.port)
        app = create_app(settings, on_fatal=on_fatal)
    except WorkerError as exc:
        print(f"sd-worker: {exc.message}", file=sys.stderr)
        return 2
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info", timeout_graceful_shutdown=30)
    server = DrainingServer(config, app.state.worker)
    # uvicorn re-raises a stop signal after its own shutdown; with these handlers installed first that re-raise
    # is a no-op, so a gracefully stopped worker exits 0, as orchestrators expect.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    host, port = sock.getsockname()[:2]
    log.info("listening on http://%s:%d (docs: /docs)", f"[{host}]" if ":" in host else host, port)
    server.run(sockets=[sock])
    if fatal:
        print(f"sd-worker: {fatal[0]}", file=sys.stderr)
        return 1
    return 0
