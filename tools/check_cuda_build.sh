#!/usr/bin/env bash
# CUDA build check that links, not only compiles (tools/check_cuda_compile.sh
# is the cheap `nvcc -c` check CI runs): in a throw-away virtual environment
# with the CUDA build of the installed torch's version (the default PyPI
# wheel; torch 2.13.0 is cu130 and pulls its nvidia runtime wheels), build
# laud_mm's extension with FORCE_CUDA=1 against the CUDA toolkit on this
# machine, load it, and check that every CUDA op is registered: the
# torch.library schemas of laud_mm::* with a CUDA kernel, the pybind
# functions, `with_cuda`, and device code for the target architecture in the
# shared object. No GPU is needed (nothing is launched).
#
#   bash tools/check_cuda_build.sh [--venv DIR] [--keep] [--arch 9.0]
#
# Cost (2 cores shared with other jobs, measured; docs/benchmarks.md "CUDA
# build check"): the first run downloads ~4 GB of wheels (torch 2.13.0 +
# nvidia-*: a 4.7 GB venv, 13 min here with pip resolving under load; the
# torch wheel alone came at ~35 MB/s) and builds the extension (sm_90 only:
# 14-26 min wall on the loaded 2 cores, ~4.5 min of CPU time, so ~3 min on
# 2 idle cores); a re-run with --venv DIR on an existing environment only
# rebuilds. Disk: ~5 GB for the venv.
# DIR defaults to a temporary directory removed at the end unless --keep.
# TORCH_VERSION overrides the torch version (default: the installed one).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY=${PYTHON:-python3}
VENV=""
KEEP=0
ARCH="${TORCH_CUDA_ARCH_LIST:-9.0}"
while [ $# -gt 0 ]; do
  case "$1" in
    --venv) VENV="$2"; KEEP=1; shift ;;
    --keep) KEEP=1 ;;
    --arch) ARCH="$2"; shift ;;
    *) echo "usage: $0 [--venv DIR] [--keep] [--arch 9.0]" >&2; exit 2 ;;
  esac
  shift
done
log() { echo "[cuda-build] $*"; }
fail() { echo "[cuda-build] FAILED: $*" >&2; exit 1; }

NVCC="${NVCC:-$(command -v nvcc || true)}"
[ -z "$NVCC" ] && [ -x /usr/local/cuda/bin/nvcc ] && NVCC=/usr/local/cuda/bin/nvcc
[ -n "$NVCC" ] || fail "no nvcc (a CUDA toolkit is needed: set NVCC or PATH)"
if [ -z "${CUDA_HOME:-}" ]; then
  if [ -d /usr/local/cuda/include ]; then CUDA_HOME=/usr/local/cuda
  else CUDA_HOME="$(cd "$(dirname "$(readlink -f "$NVCC")")/.." && pwd)"; fi
fi
[ -f "$CUDA_HOME/include/cuda_runtime.h" ] || fail "no CUDA headers under CUDA_HOME=$CUDA_HOME (set CUDA_HOME)"
export CUDA_HOME
log "nvcc: $("$NVCC" --version | tail -n 1) (CUDA_HOME=$CUDA_HOME)"

TV="${TORCH_VERSION:-$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')}"
WORK="$(mktemp -d /tmp/laud_cuda_build.XXXXXX)"
if [ -z "$VENV" ]; then VENV="$(mktemp -d /tmp/laud_cuda_venv.XXXXXX)"; rmdir "$VENV"; fi
cleanup() {
  rm -rf "$WORK"
  if [ "$KEEP" = 0 ]; then rm -rf "$VENV"; else log "venv kept: $VENV (--venv $VENV to reuse)"; fi
}
trap cleanup EXIT

t0=$SECONDS
if ! { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import torch, sys; sys.exit(not (torch.version.cuda and torch.__version__.split('+')[0] == '$TV'))" 2>/dev/null; }; then
  log "creating $VENV with torch==$TV (CUDA build) from the package index"
  "$PY" -m venv "$VENV"
  # the default index only: a local '+cpu' wheel (find-links) would win
  # the version match
  PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= "$VENV/bin/python" -m pip install \
    -q --disable-pip-version-check --cert "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" \
    "torch==$TV" numpy ninja "setuptools>=77" wheel
  log "venv ready in $((SECONDS - t0)) s, $(du -sh "$VENV" | cut -f1)"
else
  log "reusing $VENV"
fi
"$VENV/bin/python" -c "import torch; print('[cuda-build] torch', torch.__version__, 'CUDA', torch.version.cuda, '| GPU visible:', torch.cuda.is_available())"

# a clean copy of the tree (tracked + untracked, not ignored)
mkdir -p "$WORK/src"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
  tar -c --no-recursion --null -T - 2>/dev/null) | tar -x -C "$WORK/src"
t1=$SECONDS
log "building with FORCE_CUDA=1, TORCH_CUDA_ARCH_LIST=$ARCH"
if ! (cd "$WORK/src" && FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$ARCH" MAX_JOBS="${MAX_JOBS:-2}" \
      PATH="$VENV/bin:$CUDA_HOME/bin:$PATH" "$VENV/bin/python" setup.py build_ext --inplace) \
      >"$WORK/build.log" 2>&1; then
  grep -E "error|Error" "$WORK/build.log" | head -n 40 || true
  tail -n 30 "$WORK/build.log"
  fail "the CUDA build failed"
fi
log "built in $((SECONDS - t1)) s"
SO="$(ls "$WORK"/src/laud_mm/_ext*.so)"
CUOBJ="$(command -v cuobjdump || true)"
[ -z "$CUOBJ" ] && [ -x "$CUDA_HOME/bin/cuobjdump" ] && CUOBJ="$CUDA_HOME/bin/cuobjdump"
if [ -n "$CUOBJ" ]; then
  archs="$("$CUOBJ" --list-elf "$SO" 2>/dev/null | grep -o 'sm_[0-9a]*' | sort -u | tr '\n' ' ')"
  log "device code (cuobjdump): ${archs:-none}"
  [ -n "$archs" ] || fail "no device code in $SO"
else  # no cuobjdump: the fat binary section and the kernels' host stubs
  hex="$(readelf -SW "$SO" | sed -nE 's/.*\.nv_fatbin +[A-Z]+ +[0-9a-f]+ +[0-9a-f]+ +([0-9a-f]+).*/\1/p' | head -n 1)"
  fatbin=$((16#${hex:-0}))
  stubs="$(nm -C "$SO" | grep -c '__device_stub__.*laud_mm' || true)"
  log "device code (readelf): .nv_fatbin ${fatbin:-0} bytes, $stubs kernel launch stubs (no cuobjdump to list the architectures)"
  [ "${fatbin:-0}" -gt 0 ] || fail "no device code (.nv_fatbin) in $SO"
fi
# load the extension on its own (laud_mm/__init__ needs mmdet etc., not in
# this venv) and check the registrations
"$VENV/bin/python" - "$SO" "$ROOT/laud_mm/ops/cuda_ops.py" <<'EOF'
import importlib.util, sys
import torch
so, ops_file = sys.argv[1], sys.argv[2]
spec = importlib.util.spec_from_file_location('laud_mm._ext', so)
ext = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ext)
ns = {}
exec(open(ops_file).read().split('# ---- end of op list')[0], ns)
expected = ns['CUDA_OPS']
assert ext.with_cuda, 'extension built without CUDA'
missing, rows = [], []
for op in expected:
    qual = f'laud_mm::{op}'
    try:
        has = torch._C._dispatch_has_kernel_for_dispatch_key(qual, 'CUDA')
    except RuntimeError:
        has = False
    bound = hasattr(ext, op) or hasattr(ext, op + '_cuda')
    rows.append(f'  {qual:38s} CUDA kernel: {"yes" if has else "NO"}')
    if not has:
        missing.append(op)
print('\n'.join(rows))
if missing:
    sys.exit(f'[cuda-build] FAILED: no CUDA kernel registered for {missing}')
print(f'[cuda-build] OK: all {len(expected)} CUDA ops registered '
      f'(torch {torch.__version__}, built for torch {ext.torch_version})')
EOF
log "total $((SECONDS - t0)) s"
