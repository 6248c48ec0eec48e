"""Where output images live on disk: server-made names only, in one folder, bounded by count and age."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
import weakref
from pathlib import Path

from worker.errors import NotFound

FILE_ID = re.compile(r"^[0-9a-f]{32}-\d{1,2}\.(png|jpeg|webp)$")


class OutputStore:
    """`--output-dir` (or a private temp folder): every name is `<job id>-<index>.<format>`, made here.

    With `remote` (an fsspec URL, `--output-url`) images are uploaded there instead and their URLs handed out.
    Without `--output-dir`, `fallback` (under `--state-dir`) keeps url-response files across restarts.
    """

    def __init__(
        self, directory: Path | None, keep: int, max_age: float, remote: str | None = None, fallback: Path | None = None
    ) -> None:
        chosen = directory if directory is not None else fallback
        self.directory = chosen if chosen is not None else Path(tempfile.mkdtemp(prefix="sd-worker-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob(".*.partial"):  # a crash mid-write leaves only these behind
            stale.unlink(missing_ok=True)
        # a private temp folder goes when the worker does: at close(), or when the store is collected or the
        # interpreter exits, whichever comes first (a killed process cannot clean up after itself)
        self._private = (
            weakref.finalize(self, shutil.rmtree, self.directory, ignore_errors=True) if chosen is None else None
        )
        self.persist_all = directory is not None  # --output-dir: keep every image, not only those asked for
        self.remote = remote.rstrip("/") if remote else None
        self._keep = keep
        self._max_age = max_age
        self._lock = threading.Lock()

    def save(self, job_id: str, index: int, fmt: str, data: bytes) -> str:
        """Write one image and return its file id (the name); prunes past the retention limits."""
        file_id = f"{job_id}-{index}.{fmt}"
        if not FILE_ID.match(file_id):
            raise ValueError(f"not a server-made file id: {file_id!r}")
        if self.remote is not None:
            import fsspec

            with fsspec.open(f"{self.remote}/{file_id}", "wb") as remote_file:
                remote_file.write(data)
        if self.remote is None or self.persist_all:
            # temp file + rename: a crash never leaves a truncated image behind a valid id
            partial = self.directory / f".{file_id}.{os.getpid()}-{threading.get_ident()}.partial"
            with partial.open("wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, self.directory / file_id)
            self._prune()
        return file_id

    def close(self) -> None:
        """Remove the private temp folder (and its images); `--output-dir` is the user's and stays."""
        if self._private is not None:
            self._private()

    def url(self, file_id: str, base_url: str) -> str:
        """Where a client fetches a saved image: the --output-url location, or GET /v1/files/{id} here."""
        if self.remote is not None:
            return f"{self.remote}/{file_id}"
        return f"{base_url.rstrip('/')}/v1/files/{file_id}"

    def path(self, file_id: str) -> Path:
        """The file for an id from a request: anything not shaped like our names is simply not found."""
        path = self.directory / file_id
        if not FILE_ID.match(file_id) or not path.is_file():
            raise NotFound(f"no file {file_id!r}", field="file_id")
        return path

    def _prune(self) -> None:
        with self._lock:
            ours = [p for p in self.directory.iterdir() if FILE_ID.match(p.name)]
            ours.sort(key=lambda p: p.stat().st_mtime, reverse=True)
            cutoff = time.time() - self._max_age
            for index, path in enumerate(ours):
                if index >= self._keep or path.stat().st_mtime < cutoff:
                    path.unlink(missing_ok=True)
