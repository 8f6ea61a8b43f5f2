# Sourced by the CUDA build scripts. torch guesses CUDA_HOME from `which nvcc`, which is wrong
# when nvcc is a wrapper script: export the first real toolkit (headers and nvcc) found, if any.
for dir in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda /usr/local/cuda-*; do
  if [ -n "$dir" ] && [ -f "$dir/include/cuda_runtime.h" ] && [ -x "$dir/bin/nvcc" ]; then
    export CUDA_HOME=$dir
    break
  fi
done
