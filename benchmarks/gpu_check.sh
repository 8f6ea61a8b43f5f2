#!/usr/bin/env bash
# The one-call GPU check, for a CUDA machine with torch (+ pytest, pytest-benchmark, ninja)
# already installed and no network: builds initkit against that torch, runs the CUDA tests,
# prints the benchmark table (benchmarks/gpu_report.py). About 2-4 minutes on 16 cores.
#   usage: benchmarks/gpu_check.sh        (PYTHON=/path/to/python to pick the interpreter)
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
py=${PYTHON:-python3}

. tools/find_cuda_home.sh
echo "== $("$py" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)'), CUDA_HOME=${CUDA_HOME:-none}"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null

echo "== build (pip install --no-build-isolation --no-deps .)"
start=$SECONDS
if ! MAX_JOBS=${MAX_JOBS:-16} "$py" -m pip install --no-build-isolation --no-deps . >/tmp/initkit_gpu_build.log 2>&1; then
  tail -40 /tmp/initkit_gpu_build.log
  echo "== BUILD FAILED"
  exit 1
fi
echo "built in $((SECONDS - start)) s"

status=0
echo "== CUDA tests (pytest -m cuda)"
# From tests/: the installed initkit (with _C), not the source tree, must be imported.
(cd tests && INITKIT_REQUIRE_EXT=1 "$py" -m pytest -q -m cuda --benchmark-disable -p no:cacheprovider \
  "$repo/tests/test_cuda.py") || status=1

echo "== report"
INITKIT_REQUIRE_EXT=1 "$py" benchmarks/gpu_report.py || status=1
exit $status
