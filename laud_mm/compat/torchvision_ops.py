"""Make a CUDA-only torchvision wheel importable beside a CPU build of torch.

mmpretrain 1.2.0 imports torchvision at module level (transforms, box ops).
PyPI has no CPU build of torchvision: the wheel matching torch 2.13.0
(torchvision 0.28.0) ships a ``_C.so`` linked against ``libtorch_cuda.so``,
which a CPU torch lacks. torchvision then imports without its C++ ops, except
that its ``_meta_registrations`` calls ``torch.library.register_fake`` on
``torchvision::nms`` and ``torchvision::qnms`` unconditionally, which raises
"operator torchvision::nms does not exist".

:func:`declare_missing_torchvision_ops` declares exactly those two operator
schemas when, and only when, torchvision's ``_C`` cannot be loaded. Nothing
changes where torchvision works (GPU machines, matching CPU builds). The ops
stay without a kernel: calling ``torchvision.ops.nms`` still fails loudly;
mmdet and mmcv use mmcv's own NMS.

Compat: torchvision 0.28.0 (PyPI, CUDA build) beside torch 2.13.0 (CPU
build); nothing to do with a matching torchvision build.
"""
import glob
import importlib.util
import os
import sys

import torch

_SCHEMAS = {
    'nms': 'nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor',
    'qnms': 'qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor',
}
_LIB = None


def declare_missing_torchvision_ops() -> bool:
    """Declare ``torchvision::nms`` / ``qnms`` if torchvision's C++ library
    cannot load here. Must run before torchvision is first imported.

    Returns:
        True if the schemas were declared, False if nothing was needed
        (torchvision absent, already imported, or its ops load).
    """
    global _LIB
    if _LIB is not None or 'torchvision' in sys.modules:
        return False
    spec = importlib.util.find_spec('torchvision')
    if spec is None or not spec.submodule_search_locations:
        return False
    libs = glob.glob(os.path.join(spec.submodule_search_locations[0], '_C*.so'))
    if not libs:
        return False
    try:
        torch.ops.load_library(libs[0])
        return False  # the real ops are there
    except (OSError, RuntimeError):
        pass
    _LIB = torch.library.Library('torchvision', 'DEF')
    for schema in _SCHEMAS.values():
        _LIB.define(schema)
    return True
