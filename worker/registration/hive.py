"""HTTP calls to the hive (and the rbee queen): each with a timeout and the Bearer token when one is set."""

from __future__ import annotations

from typing import Any

import httpx

PERMANENT = frozenset({400, 401, 403, 422})  # answers that repeating the same call will not change
MAX_ANSWER = 500  # characters of the hive's answer kept for the log


class HiveRejected(Exception):
    """The hive answered with a non-2xx status; `answer` is the start of its body, for the log."""

    def __init__(self, status: int, url: str, answer: str = "") -> None:
        super().__init__(f"{url} answered {status}" + (f": {answer}" if answer else ""))
        self.status = status
        self.answer = answer

    @property
    def permanent(self) -> bool:
        """True for 400/401/403/422: the hive refuses this worker or this shape; only a fix on one side helps."""
        return self.status in PERMANENT


class PeerClient:
    """POSTs JSON; raises HiveRejected on non-2xx and httpx.HTTPError when the peer is unreachable."""

    def __init__(self, timeout: float, token: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.AsyncClient(timeout=timeout, headers=headers)

    async def post(self, url: str, payload: dict[str, Any]) -> None:
        """POST `payload` to `url`."""
        response = await self._client.post(url, json=payload)
        if not response.is_success:
            answer = " ".join(response.text.split())[:MAX_ANSWER]
            raise HiveRejected(response.status_code, url, answer)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


class HiveClient(PeerClient):
    """The hive: its ready callback URL and its heartbeat URL."""

    def __init__(self, callback_url: str, heartbeat_url: str, timeout: float, token: str | None = None) -> None:
        super().__init__(timeout, token)
        self.callback_url = callback_url
        self.heartbeat_url = heartbeat_url

    async def register(self, payload: dict[str, Any]) -> None:
        """The ready callback."""
        await self.post(self.callback_url, payload)

    async def heartbeat(self, payload: dict[str, Any]) -> None:
        """One heartbeat; HiveRejected(404) means the hive has forgotten us."""
        await self.post(self.heartbeat_url, payload)
