"""LAUD models: shared layers (:mod:`.layers`), one sub-package per model
family (:mod:`.resnet`, :mod:`.regnet`, :mod:`.t2t_vit`), losses, and small
mixins over the upstream task models (:mod:`.detectors` for mmdet,
:mod:`.classifiers` for mmpretrain, :mod:`.segmentors` for mmseg)."""
from .classifiers import LAUDImageClassifier
from .detectors import LAUDDetector, LAUDDetectorMixin
from .losses import DistillationLoss, SparsityLoss
from .regnet import LAUDRegNetY, LAUDRegNetYBlock, regnety_geometries
from .resnet import (LAUDBottleneck, LAUDResNet, LAUDResNetV1c,
                     resnet_geometries)
from .segmentors import LAUDSegmentor, LAUDSegmentorMixin
from .t2t_vit import LAUDT2TLayer, LAUDT2TViT, t2t_vit_geometries

__all__ = ['LAUDResNet', 'LAUDResNetV1c', 'LAUDRegNetY', 'LAUDT2TViT',
           'LAUDBottleneck', 'LAUDRegNetYBlock', 'LAUDT2TLayer',
           'LAUDDetector', 'LAUDDetectorMixin', 'LAUDSegmentor',
           'LAUDSegmentorMixin', 'SparsityLoss', 'DistillationLoss',
           'LAUDImageClassifier', 'resnet_geometries', 'regnety_geometries',
           't2t_vit_geometries']
