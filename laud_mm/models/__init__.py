from . import checkpoint_convert  # noqa: F401  (torchvision-cls:// scheme)
from .backbones import LAUDRegNetY, LAUDResNet, LAUDT2TViT
from .blocks import LAUDBottleneck
from .classifiers import LAUDImageClassifier
from .detectors import LAUDDetector, LAUDDetectorMixin
from .losses import DistillationLoss, SparsityLoss

__all__ = ['LAUDResNet', 'LAUDRegNetY', 'LAUDT2TViT', 'LAUDBottleneck',
           'LAUDDetector',
           'LAUDDetectorMixin', 'SparsityLoss', 'DistillationLoss',
           'LAUDImageClassifier']
