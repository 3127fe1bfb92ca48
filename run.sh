#!/usr/bin/env bash
# Run the notebook series headless with papermill (creates .venv first if needed).
#   ./run.sh                                   # smoke profile, CIFAKE from $AIDETECT_CIFAKE or a download
#   ./run.sh --profile cpu --data ~/cifake.tar.gz
#   ./run.sh --profile full --only 00 04
# Executed notebooks go to results/notebooks/<profile>/, results to results/<method>/.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure_env.sh
exec python -m aidetect_utils.pipeline "$@"
