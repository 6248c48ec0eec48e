#!/usr/bin/env bash
# Train the bundled demo model on one CUDA GPU within a wall-clock budget, from the repository root:
#
#     OUT=/some/empty/folder scripts/gpu_train_demo.sh 4      # budget in minutes (default 4), eval included
#
# Further arguments go to scripts/train_demo_model.py; DEVICE=cpu (with small sizes) is for a dry run.
# Needs torch with CUDA, diffusers 0.42.1, transformers, safetensors, numpy and pillow (not the worker itself).
# Leaves in $OUT: train.log (the whole log, evaluations included), demo-unet.tar (the unet/ folder) and
# demo-rest.tar (every other file of the model folder). Unpack both into worker/models/demo.
set -euo pipefail

cd "$(dirname "$0")/.."
minutes="${1:-4}"
out="${OUT:?set OUT to the folder that receives the results}"
mkdir -p "$out"
model="$(mktemp -d)/demo"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1

# the shell's own work (tar) gets 9 seconds of the budget; the trainer counts its imports
train_minutes="$(python3 -c "print(round(max(0.5, $minutes - 0.15), 3))")"
echo "gpu_train_demo: budget ${minutes} min, trainer ${train_minutes} min, model -> ${model}" | tee "$out/train.log"
status=0
python3 scripts/train_demo_model.py --device "${DEVICE:-cuda}" --minutes "$train_minutes" --out "$model" "${@:2}" 2>&1 \
    | tee -a "$out/train.log" || status=$?
if [ -d "$model/unet" ]; then  # a trainer that failed after saving still hands its model back
    tar -C "$model" -cf "$out/demo-unet.tar" unet
    tar -C "$model" -cf "$out/demo-rest.tar" --exclude=./unet .
fi
ls -l "$out" | tee -a "$out/train.log"
exit "$status"
