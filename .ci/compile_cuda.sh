#!/usr/bin/env bash
# Compiles the CUDA kernels to an sm_90 object file, to catch CUDA build errors on machines
# without a GPU. The object cannot be linked or run here; it is written to a temporary directory
# and deleted. Exits nonzero if nvcc fails.
#
# The torch CPU wheel ships the ATen/c10 CUDA headers but not the generated
# c10/cuda/impl/cuda_cmake_macros.h, so a stub of it is put on the include path.
#
# Usage: .ci/compile_cuda.sh [python]   (default: python3; needs torch importable)
set -euo pipefail

python=${1:-python3}
root=$(cd "$(dirname "$0")/.." && pwd)
source_file="$root/binary_neurons/csrc/cuda/threshold_sample.cu"
nvcc=${NVCC:-nvcc}
command -v "$nvcc" >/dev/null || { echo "compile_cuda.sh: nvcc not found" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/stub/c10/cuda/impl"
printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' \
  >"$work/stub/c10/cuda/impl/cuda_cmake_macros.h"

mapfile -t includes < <("$python" -c '
from torch.utils.cpp_extension import include_paths
for path in include_paths():
    print(path)
')
# The kernel list's C++ form, which the real build generates the same way (binary_neurons/_build.py).
mkdir -p "$work/generated"
(cd "$root" && BINARY_NEURONS_BACKEND=python "$python" -c \
  'from binary_neurons._kernel_list import header; print(header(), end="")') \
  >"$work/generated/kernel_list.h"
include_flags=(-I"$work/stub" -I"$work/generated")
for path in "${includes[@]}"; do include_flags+=(-I"$path"); done
# The flags of the real build: torch's nvcc flags and the package's (binary_neurons/_build.py).
mapfile -t build_flags < <(cd "$root" && BINARY_NEURONS_BACKEND=python "$python" -c '
from torch.utils.cpp_extension import COMMON_NVCC_FLAGS
from binary_neurons._build import NVCC_FLAGS
for flag in dict.fromkeys(COMMON_NVCC_FLAGS + NVCC_FLAGS):
    print(flag)
' 2>/dev/null)

start=$(date +%s)
"$nvcc" -c -std=c++17 -arch=sm_90 "${build_flags[@]}" \
  -diag-suppress 3306 -Xcompiler -Wno-c++20-extensions \
  "${include_flags[@]}" "$source_file" -o "$work/threshold_sample.o"
seconds=$(( $(date +%s) - start ))
echo "compile_cuda.sh: compiled $(basename "$source_file") for sm_90 in $seconds s" \
  "($(stat -c %s "$work/threshold_sample.o") bytes)"
