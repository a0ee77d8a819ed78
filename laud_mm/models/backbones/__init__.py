from .laud_resnet import LAUDResNet
from .laud_regnet import LAUDRegNetY  # noqa: F401  (+ torchvision-regnety://)

__all__ = ['LAUDResNet']
