"""Split serving in numbers: envelope sizes (f32/f16/bf16, zstd ratio) and the memory each component mode holds.

    python scripts/bench_split.py [--archs demo sd15 sdxl sd3 zimage] [--prompt "a red circle"]

For each model it starts real `sd-worker` processes one at a time (`all`, `text-encoder`, `denoiser`), reads
each one's resident memory (VmRSS, after /ready) and the weight bytes /health reports per component, then asks
the text-encoder worker to /encode one prompt (with a negative prompt, at the family's guidance) in each dtype.
Tiny models are built offline into a temporary folder; `demo` is the bundled model.
"""

from __future__ import annotations

import argparse
import base64
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_tiny_models
from bench_overhead import free_port, wait_ready

ARCH_FAMILY = {"sd15": "v1-5", "sdxl": "xl", "sd3": "3-medium", "zimage": "z-image-turbo", "demo": "demo"}
MODES = ("all", "text-encoder", "denoiser")
MiB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def serve(arch: str, folder: Path | None, mode: str) -> tuple[subprocess.Popen[bytes], str]:
    """An `sd-worker` process with `--components mode`, once /ready answers."""
    port = free_port()
    source = ["--model-path", str(folder)] if folder is not None else []
    command = [sys.executable, "-c", "from worker.cli import main; main()", "--sd-version", ARCH_FAMILY[arch]]
    command += [*source, "--components", mode, "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_ready(port, timeout=180):
        process.kill()
        raise TimeoutError(f"{arch} {mode}: the worker exited or never became ready")
    return process, f"http://127.0.0.1:{port}"


def measure(arch: str, folder: Path | None, prompt: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """RSS and weight bytes per mode; envelope sizes per dtype (from the text-encoder worker)."""
    memory: dict[str, Any] = {}
    sizes: list[dict[str, Any]] = []
    for mode in MODES:
        process, url = serve(arch, folder, mode)
        try:
            time.sleep(1.0)  # let the allocator settle after the warm-up
            health = httpx.get(f"{url}/health").json()
            weights = sum(component["bytes"] for component in health["components"].values())
            memory[mode] = {"rss": rss_bytes(process.pid), "weights": weights}
            if mode == "text-encoder":
                for dtype in ("f32", "f16", "bf16"):
                    body = {"prompt": prompt, "negative_prompt": "blurry", "dtype": dtype}
                    envelope = httpx.post(f"{url}/encode", json=body, timeout=120).json()
                    compressed = len(base64.b64decode(envelope["data"]))
                    sizes.append(
                        {
                            "dtype": dtype,
                            "tensors": {name: spec["shape"] for name, spec in envelope["tensors"].items()},
                            "raw": envelope["uncompressed_size"],
                            "zstd": compressed,
                            "json": len(httpx.Response(200, json=envelope).content),
                        }
                    )
        finally:
            process.terminate()
            process.wait(30)
    return memory, sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=["demo", "sd15", "sdxl", "sd3", "zimage"])
    parser.add_argument("--prompt", default="a red circle on a blue background")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, CPU, fp32 (f32 is the text encoders' own dtype: lossless)")
    size_rows, memory_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs:
            folder = None if arch == "demo" else make_tiny_models.build(arch, Path(tmp) / arch)
            memory, sizes = measure(arch, folder, args.prompt)
            for row in sizes:
                shapes = " ".join(f"{n.removesuffix('_embeds')}{s}" for n, s in row["tensors"].items())
                size_rows.append(
                    f"| {arch} | {row['dtype']} | {row['raw']:,} | {row['zstd']:,} | {row['raw'] / row['zstd']:.2f} "
                    f"| {row['json']:,} | {shapes} |"
                )
            full = memory["all"]
            for mode in MODES:
                m = memory[mode]
                memory_rows.append(
                    f"| {arch} | {mode} | {m['rss'] / MiB:.0f} | {m['rss'] / full['rss']:.2f} "
                    f"| {m['weights'] / MiB:.2f} | {m['weights'] / full['weights']:.2f} |"
                )
    print("\n| model | dtype | raw bytes | zstd bytes | zstd ratio | JSON bytes | tensors |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(size_rows))
    print("\n| model | components | RSS MiB | RSS ÷ all | weights MiB | weights ÷ all |")
    print("|---|---|---|---|---|---|")
    print("\n".join(memory_rows))


if __name__ == "__main__":
    main()
