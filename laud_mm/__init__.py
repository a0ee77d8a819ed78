"""laud_mm: latency-aware unified dynamic networks (LAUDNet) for MMDetection,
MMSegmentation and MMPretrain.

Importing the package registers every laud_mm class in its child registries
(scope 'laud_mm': use ``type='laud_mm.X'`` from mmdet / mmseg / mmpretrain
configs).
Before the models are imported it applies the version workarounds of
:mod:`laud_mm.compat` (see there: torchvision's operator schemas beside a
CPU torch, the ``weights_only`` allow-list of Runner checkpoints).
"""
from .version import __version__  # noqa: F401
from . import compat

compat.declare_missing_torchvision_ops()  # before mmpretrain imports torchvision
compat.register_safe_globals()

from . import registry  # noqa: E402,F401
from . import engine, evaluation, models  # noqa: E402,F401
from .engine import (BackboneSpeedHook, CPUAmpOptimWrapper,  # noqa: E402
                     FoldCacheResetHook,
                     GumbelNoiseHook, GumbelTemperatureHook,
                     MainProcessLoggerHook,
                     RNGStateHook, WeightsOnlyCheckpointHook)
from .evaluation import BackboneLatencyMetric  # noqa: E402
from .models import (DistillationLoss, LAUDBottleneck,  # noqa: E402
                     LAUDDetector, LAUDImageClassifier, LAUDRegNetY,
                     LAUDResNet, LAUDResNetV1c, LAUDSegmentor,
                     LAUDT2TViT, SparsityLoss)

__all__ = ['LAUDResNet', 'LAUDResNetV1c', 'LAUDRegNetY', 'LAUDT2TViT',
           'LAUDBottleneck', 'LAUDDetector', 'LAUDSegmentor',
           'LAUDImageClassifier', 'SparsityLoss',
           'DistillationLoss', 'BackboneSpeedHook', 'FoldCacheResetHook',
           'GumbelNoiseHook',
           'GumbelTemperatureHook', 'RNGStateHook',
           'MainProcessLoggerHook', 'WeightsOnlyCheckpointHook',
           'BackboneLatencyMetric', 'CPUAmpOptimWrapper']
