"""The listening socket, taken by the CLI before anything heavy is imported: a busy port is reported at once."""

from __future__ import annotations

import errno
import socket

from worker.errors import ConfigError

BACKLOG = 2048  # uvicorn's default


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on host:port (uvicorn serves on it later), or ConfigError saying which option to change.

    Connections that arrive while the model's libraries are imported wait in the backlog instead of being refused.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a restart may reuse a TIME_WAIT port
    try:
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise ConfigError(_explain(exc, host, port)) from None
    sock.set_inheritable(True)
    return sock


def _explain(exc: OSError, host: str, port: int) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"port {port} on {host} is already in use (another sd-worker?): stop that process, or choose another "
            f"port with --port {port + 1 if port < 65535 else 8081} (or SD_WORKER_PORT)"
        )
    if exc.errno == errno.EACCES:
        return f"no permission to listen on port {port} (ports below 1024 need root): choose another with --port"
    if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        return (
            f"cannot listen on {host!r}: not an address of this machine; check --host (127.0.0.1, or 0.0.0.0 for all)"
        )
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}; check --host and --port"
