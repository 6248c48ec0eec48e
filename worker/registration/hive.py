"""The hive's HTTP API as the worker sees it: the ready callback and the heartbeat, each with a timeout."""

from __future__ import annotations

from typing import Any

import httpx


class HiveRejected(Exception):
    """The hive answered with a non-2xx status."""

    def __init__(self, status: int, url: str) -> None:
        super().__init__(f"{url} answered {status}")
        self.status = status


class HiveClient:
    """POSTs to the hive; raises HiveRejected on non-2xx and httpx.HTTPError when unreachable."""

    def __init__(self, callback_url: str, heartbeat_url: str, timeout: float) -> None:
        self.callback_url = callback_url
        self.heartbeat_url = heartbeat_url
        self._client = httpx.AsyncClient(timeout=timeout)

    async def register(self, payload: dict[str, Any]) -> None:
        """The ready callback."""
        await self._post(self.callback_url, payload)

    async def heartbeat(self, payload: dict[str, Any]) -> None:
        """One heartbeat; HiveRejected(404) means the hive has forgotten us."""
        await self._post(self.heartbeat_url, payload)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def _post(self, url: str, payload: dict[str, Any]) -> None:
        response = await self._client.post(url, json=payload)
        if not response.is_success:
            raise HiveRejected(response.status_code, url)
