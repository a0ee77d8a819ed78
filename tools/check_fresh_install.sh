#!/usr/bin/env bash
# Install laud_mm from a clean copy of the tree into a fresh virtual
# environment that has its own pip 23.2.1, setuptools 81 and wheel (the
# environment where, without pyproject.toml, `pip install
# --no-build-isolation -e .` fell back to `setup.py develop`, which re-ran pip
# without --no-build-isolation, and the nested build could not import
# torch), then import the extension from outside the tree.
#
#   bash tools/check_fresh_install.sh            # CI: editable, no build isolation
#   bash tools/check_fresh_install.sh --all      # + `pip install .`, build
#                                                #   isolation on, and a new pip
#   bash tools/check_fresh_install.sh --mode M   # one mode of --all (repeatable)
#   bash tools/check_fresh_install.sh --src DIR  # another tree (e.g. an old
#                                                #   commit: git archive C | tar -x -C DIR)
#
# The venv sees the system site-packages (torch comes from there: the
# extension is built against the torch the user has); laud_mm is installed
# --no-deps. Cost on 2 cores: ~10 s for the venv, one full extension build
# (~2 min of two compile jobs with ninja; 3.6 min CPU) per mode: ~2.5 min by
# default on an idle machine, ~10 min with --all (measured here with other
# jobs' builds on the same 2 cores, load 8-12: 10-21 min per mode).
# Needs the package index for pip 23.2.1 / setuptools 81 / wheel (and, with
# build isolation, setuptools / wheel / ninja). Exit status non-zero on any
# failure; the log of a failed step is printed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY=${PYTHON:-python3}
MODES=""
SRC_IN=""
while [ $# -gt 0 ]; do
  case "$1" in
    --all) MODES="editable-no-isolation regular-no-isolation editable-isolation regular-isolation-new-pip" ;;
    --mode) MODES="$MODES $2"; shift ;;
    --src) SRC_IN="$2"; shift ;;
    *) echo "usage: $0 [--all] [--mode NAME] [--src DIR]" >&2; exit 2 ;;
  esac
  shift
done
TMP="$(mktemp -d /tmp/laud_fresh_install.XXXXXX)"
trap 'rm -rf "$TMP"' EXIT
log() { echo "[fresh-install] $*"; }

copy_tree() {  # a clean copy: tracked (and untracked, not ignored) files only
  local dst="$1"
  mkdir -p "$dst"
  if [ -n "$SRC_IN" ]; then
    (cd "$SRC_IN" && tar -c --exclude=build --exclude='*.so' --exclude='*.egg-info' .) | tar -x -C "$dst"
  else
    (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
      tar -c --no-recursion --null -T - 2>/dev/null) | tar -x -C "$dst"
  fi
}

make_venv() {  # make_venv DIR PIP_SPEC
  "$PY" -m venv --system-site-packages "$1"
  # the venv's own pip / setuptools / wheel, shadowing the system's
  "$1/bin/python" -m pip install -q --disable-pip-version-check \
    --force-reinstall "$2" "setuptools==81.*" wheel
}

run_mode() {  # run_mode NAME PIP_SPEC PIP_ARGS...
  local name="$1" pip_spec="$2"; shift 2
  local v="$TMP/venv-$name" src="$TMP/src-$name" out="$TMP/$name.log"
  copy_tree "$src"
  make_venv "$v" "$pip_spec"
  log "$name: $("$v/bin/python" -m pip --version | cut -d' ' -f1-2)," \
      "setuptools $("$v/bin/python" -c 'import setuptools; print(setuptools.__version__)')," \
      "wheel $("$v/bin/python" -c 'import wheel; print(wheel.__version__)'): pip install $*"
  local t0=$SECONDS
  if ! (cd "$src" && "$v/bin/python" -m pip install --no-deps \
        --disable-pip-version-check "$@") >"$out" 2>&1; then
    tail -n 40 "$out"
    log "$name: FAILED (pip install $*)"
    return 1
  fi
  if grep -q 'setup.py develop' "$out"; then
    log "$name: FAILED: pip fell back to setup.py develop"; return 1
  fi
  # import from outside the tree: the installed package and its extension
  if ! (cd / && "$v/bin/python" - "$src" "$name" <<'EOF'
import os, sys
import laud_mm
import laud_mm.ops as ops
src, name = sys.argv[1], sys.argv[2]
where = os.path.realpath(laud_mm.__file__)
if name.startswith('editable'):
    assert where.startswith(os.path.realpath(src)), where
ext = ops.extension()
assert ext is not None, 'laud_mm._ext did not import'
print(f'[fresh-install] {name}: laud_mm from {os.path.dirname(where)}, '
      f'extension built for torch {ext.torch_version}, backend '
      f'{ops.backend()}')
EOF
  ); then
    log "$name: FAILED: laud_mm or its extension does not import"; return 1
  fi
  log "$name: OK ($((SECONDS - t0)) s)"
}

status=0
for mode in ${MODES:-editable-no-isolation}; do
  case "$mode" in
    editable-no-isolation) run_mode "$mode" "pip==23.2.1" --no-build-isolation -e . || status=1 ;;
    regular-no-isolation) run_mode "$mode" "pip==23.2.1" --no-build-isolation . || status=1 ;;
    editable-isolation) run_mode "$mode" "pip==23.2.1" -e . || status=1 ;;
    regular-isolation-new-pip) run_mode "$mode" "pip>=25" . || status=1 ;;
    *) echo "unknown mode $mode" >&2; exit 2 ;;
  esac
done
exit $status
