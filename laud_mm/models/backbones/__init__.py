from .base import LAUDBackboneMixin
from .laud_regnet import LAUDRegNetY
from .laud_resnet import LAUDResNet
from .laud_t2t_vit import LAUDT2TViT

__all__ = ['LAUDBackboneMixin', 'LAUDResNet', 'LAUDRegNetY', 'LAUDT2TViT']
