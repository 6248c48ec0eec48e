"""Preview cost: HTTP+SSE end-to-end time with `preview_every: 5` ÷ without, in one run (goal ≤ 1.10).

    python scripts/bench_previews.py [--runs 10] [--threads 1]

Runs on the bundled demo model (20 steps, 64²) and on the tiny SD1.5 pipeline at 256², each against a real
`sd-worker` process, interleaving runs with and without previews; prints medians and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_tiny_models
from bench_overhead import free_port, http_job, start_worker


def measure(model: Path | None, size: int, runs: int, threads: int) -> tuple[float, float]:
    """Median seconds without and with previews."""
    body = {"prompt": "a red circle on a blue background", "steps": 20, "seed": 1, "width": size, "height": size}
    port = free_port()
    worker = start_worker(model, port, threads)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
            http_job(client, body), http_job(client, {**body, "preview_every": 5})  # warm both paths
            plain, previews = [], []
            for _ in range(runs):
                plain.append(http_job(client, body))
                previews.append(http_job(client, {**body, "preview_every": 5}))
    finally:
        worker.terminate()
        worker.wait(30)
    return statistics.median(plain), statistics.median(previews)


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    print(f"{'model':16} {'size':>5} {'no previews':>12} {'every 5':>9} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for label, model, size in (("demo", None, 64), ("tiny sd15", None, 256)):
            if label == "tiny sd15":
                model = make_tiny_models.build("sd15", Path(tmp) / "sd15")
            plain, previews = measure(model, size, args.runs, args.threads)
            print(f"{label:16} {size:>5} {plain * 1000:10.1f}ms {previews * 1000:7.1f}ms {previews / plain:6.3f}")


if __name__ == "__main__":
    main()
