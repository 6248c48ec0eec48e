#!/usr/bin/env bash
# One device run for a lent CUDA machine: the CUDA-marked tests, scripts/bench_gpu.py and scripts/bench.py, each
# time-boxed, logs written as they go under $OUT (or ./gpu-out), so a run cut short still returns what it measured.
#   bash scripts/gpu_run.sh [BENCH_GPU_SECONDS] [BENCH_SECONDS]
# Python packages the machine lacks travel as wheels in .whl/ (installed to /tmp/site first when present).
set -u
cd "$(dirname "$0")/.."
out=${OUT:-gpu-out}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv 2>&1 | tee "$out/gpu.txt"
python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__,
 'transformers', transformers.__version__, torch.cuda.get_device_name())" 2>&1 | tee -a "$out/gpu.txt"
timeout 120 python3 -m pytest -q -p no:cacheprovider -m cuda tests/test_backends.py 2>&1 | tail -n 15 | tee "$out/cuda-tests.log"
# progress bars (tqdm lines) are dropped from the logs
timeout "${1:-240}" python3 scripts/bench_gpu.py --runs 2 2>&1 | grep -v -E 'it/s\]|s/it\]' | tee "$out/bench_gpu.log"
timeout "${2:-200}" python3 scripts/bench.py --models demo,sd15,sdxl --concurrency 4 --jobs 2 --reps 1 --runs 3 \
  --encode-runs 1 2>&1 | grep -v -E 'it/s\]|s/it\]' | tee "$out/bench.log"
