"""`sd-worker ray`: start or join a Ray cluster, serve the worker app through Serve's proxy, stop on a signal."""

from __future__ import annotations

import re
import signal
import sys
import threading

from worker.config import Settings
from worker.deploy.options import FleetOptions

APP_NAME = "sd-worker"
REPLICA_ERROR = re.compile(r"RuntimeError: (sd-worker replica [^\n]*)")  # raised by SdWorkerReplica.check_health


def run_fleet(settings: Settings, fleet: FleetOptions, *, ray_address: str | None, host: str, port: int) -> int:
    """Deploy and serve until SIGINT/SIGTERM; then delete the app (Serve drains each replica). Exit code."""
    import ray
    from ray import serve

    from worker.deploy.replica import application

    ray.init(address=ray_address, include_dashboard=False)
    gpus = ray.cluster_resources().get("GPU", 0)  # type: ignore[no-untyped-call]
    if settings.device == "cuda" and gpus < 1:
        print("sd-worker ray: --device cuda, but the Ray cluster has no GPU", file=sys.stderr)
        return 2
    gpu = settings.device == "cuda" or (settings.device == "auto" and gpus >= 1)
    if gpu:
        settings = settings.model_copy(update={"device": "cuda", "cuda_device": 0})  # Ray sets CUDA_VISIBLE_DEVICES
    serve.start(http_options={"host": host, "port": port})
    try:
        serve.run(application(settings, fleet, gpu=gpu), name=APP_NAME, route_prefix="/")
    except RuntimeError as exc:
        print(f"sd-worker ray: the deployment failed: {_failure(str(exc))}", file=sys.stderr)
        return 1
    where = "GPU" if gpu else f"{fleet.replica_cpus:g} CPU"
    count = str(fleet.replicas) if fleet.replicas is not None else f"{fleet.min_replicas}-{fleet.max_replicas}"
    replicas = "1 replica" if count == "1" else f"{count} replicas"
    print(f"sd-worker ray: serving on http://{host}:{port} ({replicas}, {where} each)", flush=True)
    _wait_for_stop()
    print("sd-worker ray: stopping (replicas finish their requests first)", flush=True)
    serve.delete(APP_NAME)
    return 0


def _failure(fallback: str) -> str:
    """The replicas' own error (a model that fails to load, …) out of Serve's status, else Serve's message."""
    from ray import serve

    from worker.deploy.replica import DEPLOYMENT

    try:
        message = serve.status().applications[APP_NAME].deployments[DEPLOYMENT].message
    except (KeyError, AttributeError):
        message = ""
    reasons = REPLICA_ERROR.findall(message)
    return reasons[-1] if reasons else fallback


def _wait_for_stop() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):  # short waits: signal handlers run only between them
        pass
