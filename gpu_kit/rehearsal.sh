#!/usr/bin/env bash
# The `full` profile's recipes at their real sizes on a GPU machine without a model hub:
#   build   exact-architecture RANDOM checkpoints + SID_Set-like data under data/rehearsal
#           (python -m gpu_kit.rehearsal; Qwen2.5-VL-7B is 16.6 GB on disk)
#   main    the series with --profile rehearsal, one notebook at a time, with nvidia-smi sampling
#   capped  notebooks 01-06 again under a 15 GiB allocator cap (AIDETECT_GPU_MEMORY_GB=15, a
#           16 GB Colab-class card), few epochs (peak memory depends on batch and input size,
#           not on how many images); on out-of-memory the batch is halved (and, for 05/06, the
#           gradient accumulation doubled) down to 1
# then writes results/gpu/rehearsal.csv (gpu_kit/rehearsal_report.py): per notebook and pass,
# peak GPU memory (torch allocated/reserved from metrics.json, device-wide from nvidia-smi),
# training throughput, inference images/s, and the full profile's wall time extrapolated.
#
#   bash gpu_kit/rehearsal.sh                  # build main capped
#   bash gpu_kit/rehearsal.sh build main       # ~8 min on one H100 (estimate, not measured)
#   bash gpu_kit/rehearsal.sh capped           # ~2-3 min; rebuilds what build left missing
#
# Needs papermill, ipykernel, datasets and grad-cam: wheels from `bash gpu_kit/wheels.sh rehearsal`
# in .whl/ (installed into /tmp/site here when papermill is missing), and CIFAKE at $AIDETECT_CIFAKE
# (default .carry/cifake.tar.gz). ONLY="00 05" runs a subset; TINY=1 builds tiny checkpoints (a CPU
# dry run of this script). When $OUT is set (the device tool), the CSV, the log and a tarball of
# results/gpu/rehearsal/ are copied there after every notebook.
set -uo pipefail
cd "$(dirname "$0")/.."
source gpu_kit/env.sh
"$PY" -c "import papermill, ipykernel, datasets, pytorch_grad_cam" || {
  echo "missing packages: run 'bash gpu_kit/wheels.sh rehearsal' here and carry .whl" >&2; exit 1; }

R=results/gpu/rehearsal
mkdir -p "$R"
LOG="$R/log.txt"
phases=("$@"); [ ${#phases[@]} -gt 0 ] || phases=(build main capped)
NOTEBOOKS=(${ONLY:-00 01 02 03 04 05 06 07})
declare -A METHOD=([01]=vit_finetune [02]=vit_frozen_head [03]=dino_bayesian_head [04]=efficientnet_two_phase
                   [05]=qwen_vl_sft [06]=qwen_vl_robust [07]=evaluation)
declare -A BATCH=([01]=32 [02]=128 [03]=64 [04]=32 [05]=2 [06]=2)          # the full recipes'
declare -A QUICK=([01]="-p epochs 1 -p compare_n 64" [02]="-p max_epochs 1 -p compare_n 64 -p compare_epochs 1"
                  [03]="-p epochs 1 -p compare_n 64 -p compare_epochs 1" [04]="-p phase1_epochs 1 -p phase2_epochs 1"
                  [05]="-p n_train 16 -p n_test 8" [06]="-p n_train 16 -p n_test 8")
say() { echo "[rehearsal $(date +%T)] $*" | tee -a "$LOG"; }
ship() {   # CSV + log + small tarball to $OUT (the device tool brings back at most 8 files)
  "$PY" gpu_kit/rehearsal_report.py >/dev/null 2>>"$LOG" || true
  if [ -n "${OUT:-}" ]; then
    cp -f results/gpu/rehearsal.csv "$LOG" "$OUT/" 2>/dev/null
    tar czf "$OUT/rehearsal_runs.tar.gz" --exclude='*.safetensors' "$R" 2>/dev/null
  fi
}
run_nb() {   # PASS NN [extra args]: one notebook through the pipeline; appends a row to runs.csv
  local pass="$1" nb="$2"; shift 2
  local t0 t1 status
  [ -n "${METHOD[$nb]:-}" ] && rm -rf "results/${METHOD[$nb]}"    # never reload an earlier run's checkpoints
  t0=$(date +%s.%N)
  "$PY" -m aidetect_utils.pipeline --profile rehearsal --only "$nb" "$@" >"$R/$pass.$nb.out" 2>&1
  status=$?
  t1=$(date +%s.%N)
  if [ -n "${METHOD[$nb]:-}" ] && [ -d "results/${METHOD[$nb]}" ]; then
    mkdir -p "$R/$pass"
    find "results/${METHOD[$nb]}" \( -name '*.json' -o -name '*.csv' \) -not -path '*/checkpoint*' \
      -exec cp --parents -t "$R/$pass" {} + 2>/dev/null
  fi
  echo "$pass,$nb,${BS:-},${ACC:-},$status,$t0,$t1" >> "$R/runs.csv"
  say "$pass $nb: exit $status in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s$( [ $status -ne 0 ] && grep -h "FAILED" "$R/$pass.$nb.out" | cut -c1-300)"
  ship
  return $status
}

[ -f "$R/runs.csv" ] || echo "pass,notebook,batch_size,grad_accum,status,start,end" > "$R/runs.csv"
smi_pid=""
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=timestamp,memory.used,memory.total --format=csv,noheader,nounits -lms 250 >> "$R/nvidia_smi.csv" &
  smi_pid=$!
  trap '[ -n "$smi_pid" ] && kill "$smi_pid" 2>/dev/null' EXIT
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$LOG"
fi
"$PY" -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__)" | tee -a "$LOG"

KIND=$([ -n "${TINY:-}" ] && echo tiny || echo real-size)   # never measure on a stale build of the other kind
built() { [ "$(cat data/rehearsal/BUILT 2>/dev/null)" = "$KIND" ]; }
build() {
  local tiny=(); [ -n "${TINY:-}" ] && tiny=(--tiny)
  local t0=$(date +%s)
  "$PY" -m gpu_kit.rehearsal checkpoints data/rehearsal "${tiny[@]}" 2>&1 | tee -a "$LOG" || return 1
  "$PY" -m gpu_kit.rehearsal sid-set data/rehearsal/saberzl/SID_Set 2>&1 | tee -a "$LOG" || return 1
  echo "$KIND" > data/rehearsal/BUILT
  say "build: $(( $(date +%s) - t0 )) s, $(du -sh data/rehearsal | cut -f1) on disk"
  echo "build,,,,0,$t0,$(date +%s)" >> "$R/runs.csv"
}
for phase in "${phases[@]}"; do
  case "$phase" in
    build) build || exit 1 ;;
    main)
      built || build || exit 1
      for nb in "${NOTEBOOKS[@]}"; do BS="${BATCH[$nb]:-}" ACC="" run_nb main "$nb"; done ;;
    capped)
      built || build || exit 1
      [ -d data/prepared/cifake ] || BS="" run_nb main 00
      for nb in "${NOTEBOOKS[@]}"; do
        [ -n "${BATCH[$nb]:-}" ] || continue
        bs="${BATCH[$nb]}"; acc=4
        while [ "$bs" -ge 1 ]; do
          extra=(${QUICK[$nb]} -p batch_size "$bs")
          [ "$nb" = 05 ] || [ "$nb" = 06 ] && extra+=(-p grad_accum "$acc")
          AIDETECT_GPU_MEMORY_GB=15 BS="$bs" ACC="$acc" run_nb capped15 "$nb" "${extra[@]}" && break
          grep -qE "OutOfMemoryError|out of memory" "$R/capped15.$nb.out" || break     # not a memory failure
          if grep -q "FAILED.*build_lora_model" "$R/capped15.$nb.out"; then
            say "capped15 $nb: the base model alone does not fit: no batch size helps"; break; fi
          bs=$(( bs / 2 )); acc=$(( acc * 2 ))
        done
      done ;;
    *) echo "unknown phase $phase (build, main, capped)" >&2; exit 2 ;;
  esac
done
ship
"$PY" gpu_kit/rehearsal_report.py | tee -a "$LOG"
