"""Per-job stream tokens: let a browser `EventSource` (which cannot send headers) follow one job's events."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

EVENTS_PATH = re.compile(r"^/v1/jobs/([0-9a-f]{32})/events$")


class StreamTokens:
    """token = HMAC(key, job id): nothing to store, valid for that job's events route only.

    With `--api-key` the key derives from it, so tokens survive a restart and die with the key.
    """

    def __init__(self, api_key: str | None) -> None:
        seed = api_key.encode() if api_key else secrets.token_bytes(32)
        self._key = hashlib.sha256(b"sd-worker stream token\0" + seed).digest()

    def issue(self, job_id: str) -> str:
        """The token for `job_id`."""
        return hmac.new(self._key, job_id.encode(), hashlib.sha256).hexdigest()[:40]

    def allows(self, path: str, token: str) -> bool:
        """True when `path` is a job's events route and `token` is that job's token."""
        match = EVENTS_PATH.match(path)
        return match is not None and hmac.compare_digest(self.issue(match.group(1)), token)
