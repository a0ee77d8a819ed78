#!/usr/bin/env bash
# Download what tools/gpu_check.sh needs on a GPU machine without a package
# index, into DIR, for that machine's Python (default 3.12, x86-64 Linux):
# the pure-Python OpenMMLab packages laud_mm imports (mmengine 0.10.7,
# mmdet 3.3.0, mmpretrain 1.2.0) and their small dependencies as wheels,
# pycocotools / shapely / wcwidth built for that Python, setuptools < 82
# (mmcv's setup.py imports pkg_resources), and the mmcv 2.1.0 source
# archive (no mmcv wheel matches a given torch: gpu_check.sh builds it
# there). Assumes the GPU machine has torch, numpy, scipy, matplotlib,
# opencv, pyyaml, rich, tqdm, einops, click, markdown, six and pytest (a
# PyTorch image has them); about 8 MB.
#
#   bash tools/download_gpu_deps.sh DIR [PYTHON_VERSION]
#   # on the GPU machine:  LAUD_MM_WHEELS=DIR bash tools/gpu_check.sh OUT_DIR
set -euo pipefail
DIR="${1:?usage: bash tools/download_gpu_deps.sh DIR [PYTHON_VERSION]}"
PYV="${2:-3.12}"
PY=${PYTHON:-python3}
mkdir -p "$DIR"
plat=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 \
         manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  plat+=(--platform "$p")
done
# a local find-links folder (a CPU torch) must not stand in for PyPI here
export PIP_CONFIG_FILE=/dev/null
unset PIP_FIND_LINKS
"$PY" -m pip download -q --disable-pip-version-check --no-deps \
  --only-binary=:all: --python-version "$PYV" --implementation cp \
  "${plat[@]}" -d "$DIR" \
  mmengine==0.10.7 mmdet==3.3.0 mmpretrain==1.2.0 addict termcolor \
  yapf platformdirs terminaltables pycocotools shapely importlib_metadata \
  lazy-importer mat4py model-index modelindex ordered-set prettytable \
  wcwidth "setuptools>=77.0.3,<82"
# the sdist: pip then runs its setup.py for metadata, which imports torch
# (the local one, no build isolation); only the archive is needed
"$PY" -m pip download -q --disable-pip-version-check --no-deps \
  --no-binary :all: --no-build-isolation -d "$DIR" mmcv==2.1.0 \
  >/dev/null 2>&1 || true
ls "$DIR"/mmcv-2.1.0.tar.gz >/dev/null || {
  echo "download_gpu_deps: the mmcv 2.1.0 source archive was not downloaded" >&2
  exit 1
}
echo "download_gpu_deps: $(ls "$DIR" | wc -l) files, $(du -sh "$DIR" | cut -f1) in $DIR (Python $PYV)"
