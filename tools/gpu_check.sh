#!/usr/bin/env bash
# The GPU readiness check (tools/analysis/gpu_check.py) on a lent GPU
# machine, in one command (about 8 minutes on one H100/H200):
#   bash tools/gpu_check.sh                 # all parts -> $OUT or work_dirs/gpu_check
#   bash tools/gpu_check.sh --parts 2,3 --scale 0.5
#
# A machine without uno's dependencies: wheels in .whl/ are installed into
# /tmp/site first. uno needs mmengine (and its pure-Python needs) and
# diffusers beyond a CUDA PyTorch image with timm and transformers; make
# the wheels here (any OS), add .whl/ to .git/info/exclude and carry it:
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl \
#       mmengine==0.10.7 addict==2.4.0 yapf==0.43.0 platformdirs \
#       termcolor==3.3.0 diffusers==0.42.1 importlib_metadata==9.1.0
# (neither part 1 nor part 4 needs mlflow: both use the JSON visualizer.)
# xformers: carry its wheel only if it was built for the machine's torch;
# 0.0.35 (built for torch 2.10, Python 3.10) did not load its CUDA kernels
# on an image with torch 2.11 (2026-11-30), which fails the xformers rows.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile \
        --no-cache-dir --upgrade --target /tmp/site .whl/*.whl &&
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
PY=$(command -v python3 || command -v python)
PYTHONUNBUFFERED=1 exec "$PY" tools/analysis/gpu_check.py \
    --out "${OUT:-work_dirs/gpu_check}" "$@"
