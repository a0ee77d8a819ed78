#!/usr/bin/env bash
# README command 2 (and .ci/run): install what is missing, compile-check the
# CUDA kernels where nvcc exists, check a fresh install, run the portable
# CPU kernels' tests, run the test suite.
#   LAUD_MM_SKIP_FRESH_INSTALL=1 skips the fresh-install check (a full
#   extension build in a new venv: ~2.5 min on 2 idle cores).
set -eo pipefail
cd "$(dirname "$0")/.."
bash tools/install.sh
if command -v nvcc >/dev/null 2>&1 && [ -f tools/check_cuda_compile.sh ]; then
  bash tools/check_cuda_compile.sh
fi
# pip 23.2.1 + setuptools 81 + wheel in a fresh venv, `pip install
# --no-build-isolation -e .`: the trap of the legacy `setup.py develop`
# fallback must not come back (tools/check_fresh_install.sh)
if [ "${LAUD_MM_SKIP_FRESH_INSTALL:-0}" != 1 ]; then
  bash tools/check_fresh_install.sh
fi
# the same build with the AVX-512 / AVX2 paths off (csrc/cpu/isa.h): the
# portable kernels against the references and the dynamic blocks (~1 min)
LAUD_MM_CPU_ISA=generic python3 -m pytest -q -p no:cacheprovider \
  tests/test_ops/test_kernels.py \
  tests/test_models/test_resnet/test_resnet_dynamic.py \
  -k "kernel or fused or masked_dense or isa"
python3 -m pytest tests -q -p no:cacheprovider "$@"
