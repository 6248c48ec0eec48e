"""Prometheus metrics of one worker, on a registry of its own (no process-global state)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
JOB_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class Metrics:
    """Queue depth, jobs by outcome, step and job durations, batch occupancy, images made, out-of-memory errors."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.queue_depth = Gauge("sd_worker_queue_depth", "Jobs waiting for the device", registry=self.registry)
        self.jobs = Counter("sd_worker_jobs", "Finished jobs by outcome", ["outcome"], registry=self.registry)
        self.step_seconds = Histogram(
            "sd_worker_step_seconds", "Duration of one denoising step", buckets=STEP_BUCKETS, registry=self.registry
        )
        self.job_seconds = Histogram(
            "sd_worker_job_seconds", "Time from start to result", buckets=JOB_BUCKETS, registry=self.registry
        )
        self.batch_images = Histogram(
            "sd_worker_batch_images",
            "Images in one denoiser call (batch occupancy; rows are twice that with classifier-free guidance)",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.images = Counter("sd_worker_images", "Images generated", registry=self.registry)
        self.oom = Counter("sd_worker_out_of_memory", "Jobs that ran out of device memory", registry=self.registry)

    def watch_queue(self, depth: Callable[[], int]) -> None:
        """Read the queue depth at scrape time."""
        self.queue_depth.set_function(lambda: float(depth()))

    def job_finished(self, outcome: str, seconds: float, images: int, code: str | None = None) -> None:
        """Count a finished job (`outcome` is the job's final status)."""
        self.jobs.labels(outcome=outcome).inc()
        self.job_seconds.observe(seconds)
        self.images.inc(images)
        if code == "out_of_memory":
            self.oom.inc()

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
