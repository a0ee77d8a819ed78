from .laud_resnet import LAUDResNet

__all__ = ['LAUDResNet']
