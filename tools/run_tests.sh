#!/usr/bin/env bash
# README command 2 (and .ci/run): install what is missing, compile-check the
# CUDA kernels where nvcc exists, run the test suite.
set -eo pipefail
cd "$(dirname "$0")/.."
bash tools/install.sh
if command -v nvcc >/dev/null 2>&1 && [ -f tools/check_cuda_compile.sh ]; then
  bash tools/check_cuda_compile.sh
fi
python3 -m pytest tests -q -p no:cacheprovider "$@"
