"""Serve request router: job and file routes go to the replica whose tag starts the id; the rest by two choices.

Serve's proxy hands its router the request as pickled bytes of the ASGI scope; only those that mention a job or
file path are unpickled (the path is in the bytes as plain text), so generation requests cost one substring test.
No FIFO mixin: Serve's FIFO matching may hand a chosen replica to an earlier request, which would break affinity.
"""

from __future__ import annotations

import pickle
import random
from typing import Any

from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica

from worker.deploy.affinity import replica_tag, tag_of_path

MARKERS = (b"/v1/jobs/", b"/v1/files/")


class JobAffinityRouter(RequestRouter):
    """A request naming a job goes to the replica that made it; any other, to the shorter queue of two."""

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        """One ranked group of candidates; Serve probes their queues and takes the first that accepts."""
        tag = _tag_of(pending_request)
        if tag is not None:
            owner = [r for r in candidate_replicas if replica_tag(r.replica_id.unique_id) == tag]
            if owner:  # no owner (it died, or was scaled away): any replica answers 404 for the unknown job
                return [owner]
        return [random.sample(candidate_replicas, min(2, len(candidate_replicas)))]


def _tag_of(pending_request: PendingRequest | None) -> str | None:
    if pending_request is None or not pending_request.args:
        return None
    arg: Any = pending_request.args[0]
    if not isinstance(arg, bytes) or not any(marker in arg for marker in MARKERS):
        return None
    try:  # bytes pickled by Serve's own proxy in this cluster (a StreamingHTTPRequest), never client input
        scope = pickle.loads(arg).asgi_scope
    except Exception:
        return None
    path = scope.get("path", "") if isinstance(scope, dict) else ""
    return tag_of_path(path) if isinstance(path, str) else None
