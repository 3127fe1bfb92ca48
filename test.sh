#!/usr/bin/env bash
# The test command (CI runs exactly this): unit tests, then the committed notebooks re-executed
# and compared by nbval (smoke profile, real CIFAKE images, cells marked # NBVAL_CHECK_OUTPUT).
# CIFAKE is read from $AIDETECT_CIFAKE, default ../shared/data/cifake.tar.gz beside the project.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure_env.sh
source scripts/ensure_browser.sh
export HF_HUB_OFFLINE=1 TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 PYTHONHASHSEED=0
export AIDETECT_CIFAKE="${AIDETECT_CIFAKE:-$(cd .. && pwd)/shared/data/cifake.tar.gz}"
exec python -m pytest tests notebooks --nbval-lax --sanitize-with tests/nbval_sanitize.cfg \
  -p no:cacheprovider "$@"
