#!/usr/bin/env bash
# Notebook 04's cpu-profile recipe (Lite0 ImageNet, 1 head + 2 fine-tune epochs, batch 64) at
# several input sizes, on the whole deduplicated CIFAKE; each run's metrics.json is copied to
# results/gpu/efficientnet_two_phase.<size>px.metrics.json. Meant for a GPU: on 2 CPU cores one
# 224-px epoch takes hours.
#   bash benchmarks/resolution_sweep.sh 32 64 224
set -euo pipefail
cd "$(dirname "$0")/.."
python -m aidetect_utils.pipeline --profile cpu --only 00
mkdir -p results/gpu
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(32 64 224)
for px in "${sizes[@]}"; do
  python -m aidetect_utils.pipeline --profile cpu --only 04 -p input_size "$px"
  cp results/efficientnet_two_phase/metrics.json "results/gpu/efficientnet_two_phase.${px}px.metrics.json"
done
