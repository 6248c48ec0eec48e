"""Serve deployment options derived from the worker's own settings, so Serve's limits and the worker's agree."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from worker.config import Settings

CONTROL_HEADROOM = 4  # requests beyond the worker's queue + batch: job look-ups, cancels, /health, event replays
SHUTDOWN_MARGIN_S = 5.0  # Serve's kill deadline comes this long after the worker's own drain timeout
ROUTER_CLASS = "worker.deploy.router:JobAffinityRouter"


@dataclass(frozen=True)
class FleetOptions:
    """How many replicas, and when Serve adds or removes one."""

    replicas: int | None = None  # fixed count; None = autoscale between min and max
    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 2.0
    replica_cpus: float = 1.0
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 600.0
    look_back_period_s: float = 30.0
    metrics_interval_s: float = 10.0

    def __post_init__(self) -> None:
        if self.replicas is not None and self.replicas < 1:
            raise ValueError(f"--replicas must be at least 1 (got {self.replicas})")
        if self.replicas is None and not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError(
                f"need 1 <= --min-replicas <= --max-replicas (got {self.min_replicas} and {self.max_replicas})"
            )
        if self.target_ongoing_requests <= 0 or self.replica_cpus <= 0:
            raise ValueError("--target-ongoing-requests and --replica-cpus must be positive")


def max_ongoing_requests(settings: Settings) -> int:
    """What one replica takes at once: its waiting line, one full batch, and room for control requests.

    Every generation request stays ongoing while its job waits or runs, so a replica reaches this only after its
    own queue has filled and it has started answering 429 itself.
    """
    return settings.max_queue + settings.max_batch + CONTROL_HEADROOM


def deployment_options(settings: Settings, fleet: FleetOptions, *, gpu: bool) -> dict[str, Any]:
    """Keyword arguments for `serve.deployment(...)` / `.options(...)`: one device and one model per replica."""
    actor: dict[str, Any] = {"num_cpus": fleet.replica_cpus}
    if gpu:
        actor["num_gpus"] = 1
    scaling: dict[str, Any]
    if fleet.replicas is not None:
        scaling = {"num_replicas": fleet.replicas}
    else:
        scaling = {"autoscaling_config": {
            "min_replicas": fleet.min_replicas,
            "max_replicas": fleet.max_replicas,
            "target_ongoing_requests": fleet.target_ongoing_requests,
            "upscale_delay_s": fleet.upscale_delay_s,
            "downscale_delay_s": fleet.downscale_delay_s,
            "look_back_period_s": fleet.look_back_period_s,
            "metrics_interval_s": fleet.metrics_interval_s,
        }}  # fmt: skip
    return {
        **scaling,
        "ray_actor_options": actor,
        "max_ongoing_requests": max_ongoing_requests(settings),
        # when every replica is full, Serve's own line is as long as one replica's and refuses as the worker does
        "max_queued_requests": settings.max_queue,
        "backpressure_config": {"status_code": 429, "retry_after_s": 5},
        "graceful_shutdown_wait_loop_s": 1.0,
        "graceful_shutdown_timeout_s": settings.drain_timeout + SHUTDOWN_MARGIN_S,
        "health_check_period_s": 10.0,
        "health_check_timeout_s": 30.0,
        "max_constructor_retry_count": 3,  # a model that fails to load fails the same way again
        "request_router_config": {"request_router_class": ROUTER_CLASS},
    }
