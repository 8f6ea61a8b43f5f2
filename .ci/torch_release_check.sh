#!/usr/bin/env bash
# One torch release from the registry (a CUDA build: the oldest supported, 2.11.0, and the current,
# 2.15.0): a fresh venv, `pip install .` (the C++ kernels; the CUDA kernels are proven against
# 2.14.1 by cuda_build_check.sh, and this machine's nvcc is 13.0), then the CPU suite on that build.
#   usage: .ci/torch_release_check.sh TORCH_VERSION VENV_DIR
set -euo pipefail
version=${1:?usage: .ci/torch_release_check.sh TORCH_VERSION VENV_DIR}
venv=$(realpath -m "${2:?usage: .ci/torch_release_check.sh TORCH_VERSION VENV_DIR}")  # absolute: the script changes folders
cd "$(dirname "$0")/.."

# LibTorch's CMake config of a CUDA torch looks for a toolkit even for a CPU-only consumer (the
# C++ deployment test): give it the real one, as cuda_build_check.sh does.
. tools/find_cuda_home.sh

python3 -m venv --clear "$venv"
# This machine's pip configuration caps torch at its local 2.14.1 wheel (a constraint that would
# also "downgrade" torch when `pip install .` resolves initkit's torch dependency): ignore it for
# the commands that resolve torch.
PIP_CONFIG_FILE=/dev/null "$venv/bin/pip" install -q "torch==$version"
"$venv/bin/pip" install -q -r tests/requirements.txt
rm -rf build  # objects of an earlier build against another torch must not be reused
PIP_CONFIG_FILE=/dev/null INITKIT_CUDA=0 "$venv/bin/pip" install -q .
"$venv/bin/python" -c 'import sys, torch; assert torch.__version__.split("+")[0] == sys.argv[1], torch.__version__' "$version"

export INITKIT_REQUIRE_EXT=1
# From tests/: the installed initkit (with _C), not the source tree, must be imported.
(cd tests && "$venv/bin/pytest" -q --benchmark-disable -m "not cuda" ../tests ../benchmarks)
