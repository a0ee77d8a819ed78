"""laud_mm: latency-aware unified dynamic networks (LAUDNet) for MMDetection
and MMPretrain.

Importing the package registers every laud_mm class in its child registries
(scope 'laud_mm': use ``type='laud_mm.X'`` from mmdet / mmpretrain configs)
and makes torch >= 2.6 load mmengine Runner checkpoints with
``weights_only=True`` (see :mod:`laud_mm.engine.safe_load`), and writes the
test metrics json on the main process only under distributed testing
(:mod:`laud_mm.engine.dist_test_log`).
"""
from .version import __version__  # noqa: F401
from .utils_torchvision import declare_missing_torchvision_ops

declare_missing_torchvision_ops()  # before mmpretrain imports torchvision
from . import registry  # noqa: F401
from .engine import patch_test_json_dump, register_safe_globals

register_safe_globals()
patch_test_json_dump()  # distributed test: one json writer

from . import engine, evaluation, models  # noqa: E402,F401
from .engine import CPUAmpOptimWrapper, GumbelTemperatureHook  # noqa: E402
from .evaluation import BackboneLatencyMetric  # noqa: E402
from .models import (DistillationLoss, LAUDBottleneck,  # noqa: E402
                     LAUDDetector, LAUDImageClassifier, LAUDRegNetY,
                     LAUDResNet, LAUDT2TViT, SparsityLoss)

__all__ = ['LAUDResNet', 'LAUDRegNetY', 'LAUDT2TViT', 'LAUDBottleneck',
           'LAUDDetector',
           'LAUDImageClassifier', 'SparsityLoss', 'DistillationLoss',
           'GumbelTemperatureHook', 'BackboneLatencyMetric',
           'CPUAmpOptimWrapper', 'register_safe_globals']
