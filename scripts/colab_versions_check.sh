#!/usr/bin/env bash
# The Colab-versions check (CI runs it after ./test.sh): the unit tests and a smoke run of
# notebooks 00, 04 and 05 under Google Colab's published package versions (constraints-colab.txt,
# Python 3.13), in .venv-colab, built by scripts/ensure_colab_env.sh when missing or stale.
#
# Not run here, and why:
# - tests/notebooks (the nbval smoke snapshots): their outputs are recorded with the reference
#   environment (constraints.txt); ./test.sh checks them, and the smoke run below executes the
#   same notebooks' code under the Colab versions.
# - tests/test_app.py::test_page_in_headless_chromium: it drives the page in Debian's chromium
#   (nothing version-specific: the page's analysis is tested by the rest of test_app.py, which
#   does run) and rewrites the committed results/figures/app_screenshot.png; ./test.sh runs it.
# The smoke run writes everything it makes under results/colab/ (AIDETECT_HOME; wiped first, so
# every model is trained under these versions rather than reloaded from an earlier run): it never
# touches the main environment's data/ or results/. Executed notebooks: results/colab/notebooks/smoke/.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
t_start=$(date +%s)
source scripts/ensure_colab_env.sh
export HF_HUB_OFFLINE=1 TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 PYTHONHASHSEED=0
export AIDETECT_CIFAKE="${AIDETECT_CIFAKE:-$(cd .. && pwd)/shared/data/cifake.tar.gz}"
export AIDETECT_REALWORLD100="${AIDETECT_REALWORLD100:-$(cd .. && pwd)/shared/data/realworld100.tar}"
# papermill's kernel "python3" must be this environment's (ensure_colab_env.sh installs it there)
export JUPYTER_PATH="$VIRTUAL_ENV/share/jupyter"

echo "[colab-check] versions:"
python - <<'EOF'
import sys
from importlib.metadata import version
from pathlib import Path

from jupyter_client.kernelspec import KernelSpecManager

print(f"  python {sys.version.split()[0]} ({sys.executable})")
pins = dict(line.split("==") for line in Path("constraints-colab.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#"))
wrong = []
for name, pinned in pins.items():
    have = version(name)
    print(f"  {name} {have}")
    if have.split("+")[0] != pinned:
        wrong.append(f"{name} {have} (constraints-colab.txt: {pinned})")
kernel = KernelSpecManager().get_kernel_spec("python3").argv[0]
print(f"  papermill kernel python3: {kernel}")
if wrong:
    sys.exit("[colab-check] not the pinned versions: " + ", ".join(wrong))
if Path(kernel).resolve() != Path(sys.executable).resolve():
    sys.exit(f"[colab-check] kernel python3 runs {kernel}, not this environment's {sys.executable}")
EOF

echo "[colab-check] unit tests"
t0=$(date +%s)
# tests/test_solutions.py executes every solution notebook on the smoke profile: ./test.sh runs it
python -m pytest tests -p no:cacheprovider -q --durations=8 --ignore=tests/notebooks \
  --ignore=tests/test_solutions.py --deselect tests/test_app.py::test_page_in_headless_chromium
t_tests=$(( $(date +%s) - t0 ))

echo "[colab-check] smoke run of notebooks 00, 04, 05"
t0=$(date +%s)
export AIDETECT_HOME="$root/results/colab"
rm -rf "$AIDETECT_HOME"
python - <<'EOF'
import os
import sys
from pathlib import Path

from aidetect_utils import pipeline

out = Path(os.environ["AIDETECT_HOME"]) / "notebooks" / "smoke"
try:
    records = pipeline.run("smoke", ["00", "04", "05"], out_dir=out)
except pipeline.NotebookFailed as exc:
    sys.exit(f"[colab-check] FAILED: {exc}")
# each notebook prints the torch it ran with: it must be this environment's
import torch
for r in records:
    if f"torch {torch.__version__}" not in Path(r["output"]).read_text():
        sys.exit(f"[colab-check] {r['notebook']} did not run with torch {torch.__version__}")
print("[colab-check] " + ", ".join(f"{r['notebook']} {r['seconds']} s" for r in records) +
      f" (torch {torch.__version__} in the kernel), executed copies in {out}")
EOF
t_smoke=$(( $(date +%s) - t0 ))
echo "[colab-check] passed: unit tests ${t_tests} s, smoke notebooks ${t_smoke} s, $(( $(date +%s) - t_start )) s in all"
