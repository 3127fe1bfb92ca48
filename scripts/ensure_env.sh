# Sourced by run.sh and test.sh: create the virtual environment in .venv when it is missing
# (or when pyproject.toml/constraints.txt changed since it was made), then activate it.
# Python 3.10+ is needed; set PYTHON to choose the interpreter.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.aidetect-installed"
want="$(cat "$root/pyproject.toml" "$root/constraints.txt" | sha256sum | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] creating $venv (torch and torchvision pinned by constraints.txt)" >&2
  t0=$(date +%s)
  "${PYTHON:-python3}" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -c "$root/constraints.txt" torch torchvision
  "$venv/bin/python" -m pip install -q -c "$root/constraints.txt" -e "$root[dev]"
  "$venv/bin/python" -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (aidetect)" >/dev/null
  echo "$want" > "$stamp"
  echo "[setup] done in $(( $(date +%s) - t0 )) s, $(du -sh "$venv" | cut -f1)" >&2
fi
# shellcheck disable=SC1091
source "$venv/bin/activate"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-0}"
