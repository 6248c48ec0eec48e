"""Which replica holds a job: every replica starts its job ids with a tag made from its Serve replica id.

A job lives in one replica's memory, so `GET`/`DELETE /v1/jobs/{id}`, its events and its files must reach that
replica. The tag keeps job ids 32 hex digits (file names and clients are unchanged) and lets the request router
find the owner among the running replicas without asking any of them.
"""

from __future__ import annotations

import hashlib
import re

TAG_LENGTH = 8  # hex digits: 2^-32 odds that two replicas share one; the other 24 digits stay random
JOB_PATH = re.compile(r"/v1/(?:jobs|files)/([0-9a-f]{32})(?:[/.-]|$)")


def replica_tag(replica_unique_id: str) -> str:
    """The hex prefix of every job id a replica makes (a hash: Serve's unique ids are not hex)."""
    return hashlib.sha256(replica_unique_id.encode()).hexdigest()[:TAG_LENGTH]


def tag_of_path(path: str) -> str | None:
    """The replica tag in a `/v1/jobs/{id}…` or `/v1/files/{id}-…` path; None for every other route."""
    match = JOB_PATH.search(path)
    return match.group(1)[:TAG_LENGTH] if match else None
