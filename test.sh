#!/usr/bin/env bash
# The test command (CI runs exactly this): unit tests, then the smoke snapshots of the notebooks
# (tests/notebooks/) re-executed and compared by nbval (real CIFAKE images; cells tagged
# nbval-check-output). CIFAKE is read from $AIDETECT_CIFAKE (default ../shared/data/cifake.tar.gz
# beside the project), realworld100 from $AIDETECT_REALWORLD100 (../shared/data/realworld100.tar).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure_env.sh
source scripts/ensure_browser.sh
export HF_HUB_OFFLINE=1 TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 PYTHONHASHSEED=0
export AIDETECT_CIFAKE="${AIDETECT_CIFAKE:-$(cd .. && pwd)/shared/data/cifake.tar.gz}"
export AIDETECT_REALWORLD100="${AIDETECT_REALWORLD100:-$(cd .. && pwd)/shared/data/realworld100.tar}"
# tests/test_standalone.py (every notebook alone, as a fresh Colab runtime runs it) runs under
# Colab's versions instead: scripts/colab_versions_check.sh, which CI runs after this.
exec python -m pytest tests --nbval-lax --sanitize-with tests/nbval_sanitize.cfg \
  --ignore=tests/test_standalone.py -p no:cacheprovider "$@"
