# Source it (scripts/colab_versions_check.sh does) or run it: create .venv-colab, an environment
# pinned to Google Colab's published package versions (constraints-colab.txt: torch 2.11.0,
# torchvision 0.26.0, transformers 5.15.0, peft 0.20.0, numpy 2.1.3, timm 1.0.28) on Python 3.13
# as Colab has it, with this package and its test dependencies (-e .[dev]) and a Jupyter kernel
# named python3 that is this environment's Python. Rebuilt only when pyproject.toml,
# constraints-colab.txt, this script or the interpreter changed (a stamp in .venv-colab);
# when sourced, the environment is activated.
#
# The interpreter: $PYTHON313, else `pyenv prefix 3.13`, else ${PYENV_ROOT:-~/.pyenv}/versions/3.13*,
# else python3.13 on PATH. With no Python 3.13 anywhere it does NOT skip: it says so in one line
# and builds with $PYTHON (default python3) instead, so the pinned packages are still tested.
#
# torch 2.11.0 from PyPI is a CUDA 13 build that pulls in the nvidia-* and triton wheels (they are
# needed: without them `import torch` fails with "libcudnn.so.9: cannot open shared object file").
# Measured on the reference machine (2 cores, PyPI reachable, part of the nvidia wheels on local
# disk): a cold build took 100-140 s, received about 2.3 GB and left a 5.9 GB .venv-colab.
set -euo pipefail
colab_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
colab_venv="$colab_root/.venv-colab"
colab_stamp="$colab_venv/.aidetect-colab-installed"

_colab_is_313() { [ -n "${1:-}" ] && "$1" -c 'import sys, venv; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null; }
_colab_python() {
  local cand
  for cand in "${PYTHON313:-}" \
              "$(pyenv prefix 3.13 2>/dev/null | head -n1)/bin/python" \
              "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python \
              "$(command -v python3.13 2>/dev/null || true)"; do
    if _colab_is_313 "$cand"; then echo "$cand"; return; fi
  done
  return 1
}
if ! colab_python="$(_colab_python)"; then
  colab_python="$(command -v "${PYTHON:-python3}")"
  echo "[colab-env] no Python 3.13 found (Colab's; set PYTHON313 to one): using $("$colab_python" -V 2>&1) ($colab_python) instead" >&2
fi
colab_want="$( (cat "$colab_root/pyproject.toml" "$colab_root/constraints-colab.txt" "$colab_root/scripts/ensure_colab_env.sh";
                "$colab_python" -c 'import sys; print(sys.version)') | sha256sum | cut -d' ' -f1)"
if [ ! -x "$colab_venv/bin/python" ] || [ "$(cat "$colab_stamp" 2>/dev/null)" != "$colab_want" ]; then
  echo "[colab-env] creating $colab_venv with $("$colab_python" -V 2>&1) (versions pinned by constraints-colab.txt)" >&2
  t0=$(date +%s)
  rx0=$(awk 'NR > 2 && $1 != "lo:" {s += $2} END {printf "%.0f\n", s}' /proc/net/dev 2>/dev/null || echo 0)
  # pip warns once per package that the machine's local wheel index lacks: noise, dropped
  _colab_pip() { "$colab_venv/bin/python" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
  rm -rf "$colab_venv"
  "$colab_python" -m venv "$colab_venv"
  _colab_pip install -q --upgrade pip
  _colab_pip install -q -c "$colab_root/constraints-colab.txt" torch torchvision
  _colab_pip install -q -c "$colab_root/constraints-colab.txt" -e "$colab_root[dev]"
  "$colab_venv/bin/python" -m ipykernel install --sys-prefix --name python3 \
    --display-name "Python 3 (aidetect, Colab versions)" >/dev/null
  echo "$colab_want" > "$colab_stamp"
  rx1=$(awk 'NR > 2 && $1 != "lo:" {s += $2} END {printf "%.0f\n", s}' /proc/net/dev 2>/dev/null || echo 0)
  echo "[colab-env] done in $(( $(date +%s) - t0 )) s, $(du -sh "$colab_venv" | cut -f1) on disk," \
       "about $(( (rx1 - rx0) / 1000000 )) MB received by this machine meanwhile" >&2
fi
if [ "${BASH_SOURCE[0]}" != "$0" ]; then
  # shellcheck disable=SC1091
  source "$colab_venv/bin/activate"
  export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
fi
