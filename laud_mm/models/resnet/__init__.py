"""LAUD-ResNet: block (:mod:`.block`), dynamic-inference path
(:mod:`.dynamic`), backbone (:mod:`.backbone`), checkpoint conversion
(:mod:`.convert`) and FLOPs count (:mod:`.flops`)."""
from .backbone import (RESNET_ARCHS, LAUDResNet, LAUDResNetV1c,
                       resnet_geometries, stage_block_settings)
from . import dynamic_cuda  # noqa: F401  (registers the CUDA paths)
from .block import LAUDBottleneck

__all__ = ['LAUDResNet', 'LAUDResNetV1c', 'LAUDBottleneck', 'RESNET_ARCHS',
           'resnet_geometries', 'stage_block_settings']
