from .backbones import LAUDResNet
from .backbones import LAUDRegNetY  # noqa: F401
from .blocks import LAUDBottleneck
from .detectors import LAUDDetector, LAUDDetectorMixin
from .losses import DistillationLoss, SparsityLoss
from . import checkpoint_convert  # noqa: F401  (torchvision-cls:// scheme)
from .classifiers import LAUDImageClassifier

__all__ = ['LAUDResNet', 'LAUDBottleneck', 'LAUDDetector', 'LAUDDetectorMixin',
           'SparsityLoss', 'DistillationLoss', 'LAUDImageClassifier']
