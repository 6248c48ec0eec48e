"""Which webhook URLs the worker may call: `--webhook-allow` host patterns, never a private address by accident."""

from __future__ import annotations

import fnmatch
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from worker.errors import InvalidRequest

FIELD = "webhook_url"


class WebhookPolicy:
    """Allowed hosts are shell-style patterns (`hooks.example.com`, `*.example.com`, `10.0.0.5`, `*`).

    A host that resolves to a private, loopback or link-local address is refused unless a pattern names that
    host literally (no wildcard): `*` never opens the worker's own network to whoever can send a request.
    """

    def __init__(self, allow: list[str]) -> None:
        self.allow = [pattern.strip().lower() for pattern in allow if pattern.strip()]

    @property
    def enabled(self) -> bool:
        """False without `--webhook-allow`: webhooks are off."""
        return bool(self.allow)

    def check(self, url: str, field: str = FIELD) -> tuple[str, int]:
        """Refuse (InvalidRequest) a URL this worker may not call; returns its (host, port). Resolves DNS."""
        host, port, explicit = self._match(url, field)
        self.check_addresses(host, [str(info[4][0]) for info in _resolve(host, port, field)], explicit, field)
        return host, port

    def _match(self, url: str, field: str) -> tuple[str, int, bool]:
        if not self.enabled:
            raise InvalidRequest(
                "webhooks are off on this worker: start it with --webhook-allow HOST (repeatable) to enable them",
                field=field,
            )
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidRequest(f"{field} must be an http:// or https:// URL with a host, got {url!r}", field=field)
        host = parts.hostname.lower()
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise InvalidRequest(f"{field} has an invalid port: {url!r}", field=field) from None
        matched = [p for p in self.allow if fnmatch.fnmatchcase(host, p)]
        if not matched:
            raise InvalidRequest(
                f"{field} host {host!r} is not allowed; this worker calls only hosts matching "
                f"{', '.join(self.allow)} (--webhook-allow)",
                field=field,
            )
        explicit = any(not any(c in p for c in "*?[") for p in matched)
        return host, port, explicit

    @staticmethod
    def check_addresses(host: str, addresses: list[str], explicit: bool, field: str = FIELD) -> None:
        """Refuse private/loopback/link-local/reserved addresses unless the host was allowed literally."""
        if explicit:
            return
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
            if not ip.is_global or ip.is_multicast:
                raise InvalidRequest(
                    f"{field} host {host!r} resolves to the non-public address {ip}; name the host literally "
                    "in --webhook-allow to allow it",
                    field=field,
                )


def _resolve(host: str, port: int, field: str) -> list[tuple[Any, ...]]:
    try:
        return list(socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP))
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidRequest(f"{field} host {host!r} does not resolve: {exc}", field=field) from None
