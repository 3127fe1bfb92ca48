# Sourced by the gpu_kit/*.sh scripts on a GPU machine without network: offline switches,
# the wheels carried in .whl/ (gpu_kit/wheels.sh) installed into /tmp/site when papermill is
# missing, this checkout on PYTHONPATH, CIFAKE from $AIDETECT_CIFAKE (default .carry/cifake.tar.gz).
export HF_HUB_OFFLINE=1 TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 PYTHONUNBUFFERED=1
export AIDETECT_CIFAKE="${AIDETECT_CIFAKE:-$PWD/.carry/cifake.tar.gz}"
PY="${PYTHON:-python3}"
if ! "$PY" -c "import papermill" 2>/dev/null && [ -d .whl ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
