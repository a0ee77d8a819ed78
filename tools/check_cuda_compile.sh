#!/usr/bin/env bash
# Compile-check every CUDA kernel file with `nvcc -c` (sm_90 and nvcc's default
# target). The .cu files use raw pointers and cudaStream_t only, so no torch
# headers are needed. Exits 0 with a note when nvcc is absent; non-zero if any
# file fails to compile. Usage: tools/check_cuda_compile.sh [nvcc]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NVCC="${1:-${NVCC:-$(command -v nvcc || true)}}"
if [ -z "$NVCC" ] && [ -x /usr/local/cuda/bin/nvcc ]; then NVCC=/usr/local/cuda/bin/nvcc; fi
if [ -z "$NVCC" ]; then
  echo "nvcc not found: skipping the CUDA compile check"
  exit 0
fi
"$NVCC" --version | tail -n 2
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
status=0
shopt -s nullglob
files=("$ROOT"/csrc/cuda/*.cu)
if [ ${#files[@]} -eq 0 ]; then echo "no .cu files under csrc/cuda"; exit 1; fi
for f in "${files[@]}"; do
  for arch in "-arch=sm_90" ""; do
    label="${arch:-default target}"
    if "$NVCC" -c -std=c++17 -O2 $arch -I"$ROOT/csrc" "$f" -o "$TMP/out.o"; then
      echo "OK   ${f#$ROOT/} ($label)"
    else
      echo "FAIL ${f#$ROOT/} ($label)"; status=1
    fi
  done
done
exit $status
