#!/usr/bin/env bash
# Install whatever laud_mm needs that is missing; a re-run skips what is there.
#   torch (the one already installed, else 2.13.0), setuptools >=77.0.3,<82,
#   mmengine 0.10.7, mmcv 2.1.0 built with ops (~9 min on 2 cores, cached by
#   pip afterwards), mmdet 3.3.0, mmpretrain 1.2.0, mmsegmentation 1.2.2 with
#   the ftfy / regex / prettytable its utils import, test/plot tools, and
#   laud_mm itself (editable, with its C++ extension).
set -eo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP="$PY -m pip install --disable-pip-version-check -q"
log() { echo "[install] $*"; }

pyok() { "$PY" -c "$1" >/dev/null 2>&1; }

if ! pyok "import setuptools as s, sys; v = tuple(int(x) for x in s.__version__.split('.')[:2]); sys.exit(not ((77, 0) <= v < (82, 0)))"; then
  log 'setuptools >=77.0.3,<82'; $PIP "setuptools>=77.0.3,<82"
fi
if ! pyok "import torch"; then
  log 'torch 2.13.0 (CPU build)'; $PIP torch==2.13.0
fi
# mmpretrain imports torchvision; PyPI has only CUDA builds of it, so take the
# one matching torch without its CUDA dependencies (laud_mm makes it import
# on CPU torch: see laud_mm/compat/torchvision_ops.py)
if ! pyok "import importlib.util as u, sys; sys.exit(u.find_spec('torchvision') is None)"; then
  tv=$("$PY" -c "import torch; v = '.'.join(torch.__version__.split('+')[0].split('.')[:2]); print({'2.13': '0.28.0', '2.12': '0.27.1', '2.11': '0.26.0', '2.10': '0.25.0', '2.9': '0.24.1', '2.8': '0.23.0', '2.7': '0.22.1', '2.6': '0.21.0'}.get(v, ''))")
  if [ -z "$tv" ]; then echo "[install] no known torchvision for this torch: install the matching one" >&2; exit 1; fi
  log "torchvision $tv (no dependencies)"; $PIP --no-deps "torchvision==$tv"
fi
if ! pyok "import mmengine, sys; sys.exit(mmengine.__version__ != '0.10.7')"; then
  log 'mmengine 0.10.7'; $PIP mmengine==0.10.7
fi
if ! pyok "import mmcv, sys; from mmcv.ops import nms, RoIAlign; sys.exit(mmcv.__version__ != '2.1.0')"; then
  log 'mmcv 2.1.0 with ops (a source build: about 9 minutes on 2 cores the first time)'
  MMCV_WITH_OPS=1 $PIP --no-build-isolation mmcv==2.1.0
fi
if ! pyok "import mmdet, sys; sys.exit(mmdet.__version__ != '3.3.0')"; then
  log 'mmdet 3.3.0'; $PIP mmdet==3.3.0
fi
if ! pyok "import mmpretrain, sys; sys.exit(mmpretrain.__version__ != '1.2.0')"; then
  log 'mmpretrain 1.2.0'; $PIP mmpretrain==1.2.0
fi
# mmsegmentation 1.2.2 accepts mmcv >= 2.0.0rc4, < 2.2.0 (our 2.1.0 build);
# its wheel requires neither torch nor mmcv, so pip replaces neither.
# `import mmseg.utils` also needs ftfy, regex and prettytable
if ! pyok "import mmseg, sys; sys.exit(mmseg.__version__ != '1.2.2')"; then
  log 'mmsegmentation 1.2.2'; $PIP mmsegmentation==1.2.2
fi
for mod in ftfy regex prettytable; do
  if ! pyok "import $mod"; then log "$mod"; $PIP "$mod"; fi
done
for mod in numpy pytest hypothesis matplotlib pycocotools yaml; do
  if ! pyok "import $mod"; then
    pkg=$mod; [ "$mod" = yaml ] && pkg=pyyaml
    log "$pkg"; $PIP "$pkg"
  fi
done
# laud_mm: editable install of this checkout; re-install when the installed
# one is another checkout (checked outside the repository, where the current
# directory cannot stand in for the install), or a csrc/ file is newer than
# the build
stamp=build/.laud_mm_built
here=$(pwd -P)
if ! (cd / && pyok "import laud_mm, os, sys; sys.exit(os.path.realpath(os.path.dirname(os.path.dirname(laud_mm.__file__))) != '$here')") || \
   [ ! -f "$stamp" ] || \
   [ -n "$(find csrc setup.py -newer "$stamp" 2>/dev/null | head -n 1)" ]; then
  log 'laud_mm (editable, C++ extension)'
  $PIP --no-build-isolation --no-deps -e .
  mkdir -p build && touch "$stamp"
fi
log "ready: $(cd / && "$PY" -c 'import torch, mmcv, mmdet, mmpretrain, laud_mm, laud_mm.ops as o, mmseg.utils, mmseg; print(f"torch {torch.__version__}, mmcv {mmcv.__version__}, mmdet {mmdet.__version__}, mmpretrain {mmpretrain.__version__}, mmseg {mmseg.__version__}, laud_mm {laud_mm.__version__}, ops backend {o.backend()}")')"
