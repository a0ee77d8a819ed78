#!/usr/bin/env bash
# One-command device check on a machine with one NVIDIA GPU (about 5 min on
# an H200: builds ~2 min, tests ~1 min, benchmark ~70 s):
#   1. refuses at once, exit status 3, when no CUDA GPU is visible to torch
#      (or nvcc is missing): nothing is built or run;
#   2. builds laud_mm's extension with its CUDA kernels in place
#      (FORCE_CUDA=1, the GPU's architecture; ~1-2 min on 16 cores);
#   3. runs the CUDA tests: tests/test_ops/test_cuda_kernels.py (every op vs
#      the reference in fp32 / fp64 / fp16 / bf16, streams, no host sync)
#      and tests/test_models/test_cuda_dynamic.py (every family and
#      paradigm: dynamic == masked-dense in fp32 within 1e-4, autocast fp16
#      and bf16, no hidden host sync);
#   4. benchmarks LAUD-R50 and R101 at batch 128 x 224 x 224 (fp32, TF32
#      off), layer / channel / spatial at r = 0.25 / 0.5 / 1 (R101 also
#      0.4) against the static cuDNN network (NCHW and channels_last, the
#      faster one is the baseline), CUDA events, warm-up, medians, and
#      validates the latency predictor's `h200` spec against them (MAPE,
#      Spearman): laud_mm/analysis/benchmark/gpu.py;
#   5. writes OUT_DIR/gpu_benchmark.json, OUT_DIR/gpu_benchmark.md (the
#      table for docs/benchmarks.md), OUT_DIR/cuda_tests.txt and
#      OUT_DIR/build.log.
#
#   bash tools/gpu_check.sh OUT_DIR [--skip-tests] [--hardware h200]
#
# Needs torch with CUDA, nvcc, and laud_mm's Python dependencies (mmengine,
# mmdet, mmpretrain, mmcv, scipy) importable; set LAUD_MM_WHEELS=DIR to
# install wheels from DIR first (pip --no-index --target /tmp/laud_site: for
# a machine without a package index). Source archives in DIR (*.tar.gz: the
# mmcv 2.1.0 sdist, since no mmcv wheel matches a given torch) are built
# there with the GPU hidden, while laud_mm builds: mmcv then compiles its
# CPU operators only (mmdet imports them; laud_mm's GPU path calls none).
# Exit status: 0 all passed, 1 a build or test failure, 3 refused (no GPU),
# 4 a missing dependency.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR="${1:-}"
if [ -z "$OUT_DIR" ] || [ "${OUT_DIR#-}" != "$OUT_DIR" ]; then
  echo "usage: bash tools/gpu_check.sh OUT_DIR [--skip-tests] [--hardware NAME]" >&2
  exit 2
fi
shift
SKIP_TESTS=0
HW=h200
while [ $# -gt 0 ]; do
  case "$1" in
    --skip-tests) SKIP_TESTS=1 ;;
    --hardware) HW="$2"; shift ;;
    *) echo "gpu_check: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
PY=${PYTHON:-python3}
cd "$ROOT"
t0=$SECONDS
log() { echo "[gpu_check $((SECONDS - t0))s] $*"; }

# 1. a GPU, or a clear refusal
if ! gpu="$("$PY" -c 'import torch, sys
if not torch.cuda.is_available():
    sys.exit("torch %s (CUDA %s) sees no CUDA GPU" % (torch.__version__, torch.version.cuda))
print(torch.cuda.get_device_name(0))' 2>&1)"; then
  echo "gpu_check: REFUSED: no GPU: $gpu. This check needs one NVIDIA GPU" \
       "and a CUDA build of torch; nothing was built or run." >&2
  exit 3
fi
NVCC="${NVCC:-$(command -v nvcc || true)}"
[ -z "$NVCC" ] && [ -x /usr/local/cuda/bin/nvcc ] && NVCC=/usr/local/cuda/bin/nvcc
if [ -z "$NVCC" ]; then
  echo "gpu_check: REFUSED: GPU $gpu but no nvcc (a CUDA toolkit is needed to build the kernels)" >&2
  exit 3
fi
log "GPU: $gpu; nvcc $("$NVCC" --version | tail -n 1)"
mkdir -p "$OUT_DIR"

# 2. dependencies: wheels now, source archives built beside step 3
SITE=/tmp/laud_site
sdist_pid=
sdists=()
if [ -n "${LAUD_MM_WHEELS:-}" ]; then
  shopt -s nullglob
  wheels=("$LAUD_MM_WHEELS"/*.whl)
  sdists=("$LAUD_MM_WHEELS"/*.tar.gz)
  shopt -u nullglob
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  if [ ${#wheels[@]} -gt 0 ]; then
    log "installing ${#wheels[@]} wheels from $LAUD_MM_WHEELS into $SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --target "$SITE" "${wheels[@]}" || exit 4
  fi
fi
missing_of() {
  "$PY" -c 'import importlib.util as u, sys
print(" ".join(m for m in sys.argv[1:] if u.find_spec(m) is None))' "$@"
}
# mmcv may still be a source archive: checked after step 3
missing="$(missing_of mmengine mmdet mmpretrain scipy pytest)"
if [ -n "$missing" ]; then
  echo "gpu_check: missing Python packages: $missing (install them, or give their wheels with LAUD_MM_WHEELS=DIR)" >&2
  exit 4
fi
# mmpretrain 1.2.0 imports its multimodal models whenever transformers >=
# 4.28 is installed, and with transformers 5 they fail to import (seen with
# 5.17.0: "TypeError: NoneType takes no arguments"), and laud_mm with them
tf5="$("$PY" -c 'import importlib.metadata as m
try:
    v = m.version("transformers")
except m.PackageNotFoundError:
    v = ""
print(v if v and int(v.split(".")[0]) >= 5 else "")' 2>/dev/null)"
if [ -n "$tf5" ]; then
  echo "gpu_check: transformers $tf5 is installed: mmpretrain 1.2.0 then imports" \
       "its multimodal models, which fail with transformers 5; uninstall it" \
       "(pip uninstall transformers) or install transformers<5" >&2
  exit 4
fi
if [ ${#sdists[@]} -gt 0 ]; then
  log "building ${#sdists[@]} source archives (GPU hidden: CPU operators only) into $SITE"
  # its own process group, ended with this script (a failed step 3)
  CUDA_VISIBLE_DEVICES= FORCE_CUDA=0 MAX_JOBS=$(( ($(nproc) + 1) / 2 )) \
    CFLAGS="${CFLAGS:-} -g0" setsid -w "$PY" -m pip install -q --no-index \
    --no-deps --no-build-isolation --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "${sdists[@]}" >"$OUT_DIR/sdist_build.log" 2>&1 &
  sdist_pid=$!
  trap '[ -n "$sdist_pid" ] && kill -- -"$sdist_pid" 2>/dev/null' EXIT
fi

# 3. build the extension with the CUDA kernels, for this GPU
arch="$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability(0))')"
jobs=$(nproc); [ -n "$sdist_pid" ] && jobs=$(( ($(nproc) + 1) / 2 ))
log "building laud_mm._ext (FORCE_CUDA=1, TORCH_CUDA_ARCH_LIST=$arch)"
if ! FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$arch}" \
     MAX_JOBS="${MAX_JOBS:-$jobs}" "$PY" setup.py build_ext --inplace \
     >"$OUT_DIR/build.log" 2>&1; then
  tail -n 40 "$OUT_DIR/build.log"
  echo "gpu_check: FAILED: the CUDA build (log: $OUT_DIR/build.log)" >&2
  exit 1
fi
log "built laud_mm._ext"
if [ -n "$sdist_pid" ]; then
  wait "$sdist_pid"; rc=$?
  sdist_pid=
  if [ $rc -ne 0 ]; then
    tail -n 40 "$OUT_DIR/sdist_build.log"
    echo "gpu_check: FAILED: building the source archives in $LAUD_MM_WHEELS (log: $OUT_DIR/sdist_build.log)" >&2
    exit 4
  fi
  log "built the source archives"
fi
if [ -n "$(missing_of mmcv)" ]; then
  echo "gpu_check: missing Python package: mmcv (install mmcv 2.1.0, or put its sdist or wheel in LAUD_MM_WHEELS=DIR)" >&2
  exit 4
fi
"$PY" -c 'import laud_mm.ops as o, sys
sys.exit(0 if o.has_cuda_kernels() else "laud_mm._ext built without its CUDA kernels")' || exit 1
log "laud_mm imports with its CUDA kernels"
status=0

# 4. CUDA tests
if [ "$SKIP_TESTS" = 0 ]; then
  log "CUDA tests"
  if ! PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" timeout 240 "$PY" -m pytest -q -rA -p no:cacheprovider \
       tests/test_ops/test_cuda_kernels.py tests/test_models/test_cuda_dynamic.py \
       2>&1 | tee "$OUT_DIR/cuda_tests.txt" | tail -n 15; then
    echo "gpu_check: CUDA tests FAILED (see $OUT_DIR/cuda_tests.txt)" >&2
    status=1
  fi
  if grep -q " skipped" "$OUT_DIR/cuda_tests.txt" && ! grep -q " passed" "$OUT_DIR/cuda_tests.txt"; then
    echo "gpu_check: the CUDA tests were all skipped" >&2; status=1
  fi
fi

# 5. benchmark + predictor validation
log "benchmark (R50, R101, batch 128, 224 px; predictor $HW)"
if ! PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 timeout 330 \
     "$PY" tools/analysis_tools/benchmark_gpu.py "$OUT_DIR" --hardware "$HW"; then
  echo "gpu_check: benchmark FAILED" >&2
  status=1
fi
log "done: $OUT_DIR/gpu_benchmark.json, $OUT_DIR/gpu_benchmark.md (status $status)"
exit $status
