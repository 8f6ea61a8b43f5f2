#!/usr/bin/env bash
# Proves the CUDA build on a machine without a GPU: a fresh venv with torch 2.14.1 (CUDA 13.0),
# `pip install .` with the CUDA kernels, checks that they are compiled in and registered, then
# the CPU test suite against that build (a CUDA-enabled initkit must work on a CPU-only host).
#   usage: .ci/cuda_build_check.sh VENV_DIR
set -euo pipefail
venv=$(realpath -m "${1:?usage: .ci/cuda_build_check.sh VENV_DIR}")  # absolute: the script changes folders
cd "$(dirname "$0")/.."

. tools/find_cuda_home.sh
[ -n "${CUDA_HOME:-}" ] || { echo "no CUDA toolkit found (set CUDA_HOME)"; exit 1; }

python3 -m venv --clear "$venv"
"$venv/bin/pip" install -q torch==2.14.1 -r tests/requirements.txt
# The model libraries of the own-init tests (they load beside this torch; naming torch keeps pip
# from replacing it): here they must load, so their tests fail instead of skipping.
"$venv/bin/pip" install -q torch==2.14.1 -r tests/requirements-models.txt
export INITKIT_REQUIRE_MODEL_LIBS=1 HF_HUB_OFFLINE=1
rm -rf build  # objects of an earlier CPU-only build must not be reused
"$venv/bin/pip" install -q .  # no GPU visible: setup.py builds for sm_80 and sm_90 + PTX

export INITKIT_REQUIRE_EXT=1
# From another folder: the installed initkit (with _C) must be imported, not the source tree.
(cd "$venv" && "$venv/bin/python" - <<'PY'
import torch
import initkit

assert torch.version.cuda, f"expected a CUDA build of torch, got {torch.__version__}"
assert initkit.ext_available() and initkit.ext_has_cuda(), f"no CUDA build: {initkit.ext_error()}"
for op in ("uniform_fill", "normal_fill", "trunc_normal_fill", "multi_fill"):
    for key in ("CPU", "CUDA"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"initkit::{op}", key), f"initkit::{op} has no {key} kernel"
print(f"initkit CUDA build OK: torch {torch.__version__}, archs {initkit.build_info()['cuda_arch_list']}")
PY
)
# From tests/ for the same reason: some tests start `python -c` subprocesses in the cwd.
(cd tests && "$venv/bin/pytest" -q --benchmark-disable -m "not cuda" ../tests ../benchmarks)
