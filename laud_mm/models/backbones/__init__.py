from .base import LAUDBackboneMixin
from .laud_regnet import LAUDRegNetY
from .laud_resnet import LAUDResNet

__all__ = ['LAUDBackboneMixin', 'LAUDResNet', 'LAUDRegNetY']
