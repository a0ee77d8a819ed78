"""Latency predictor of LAUD backbones (paper appendix A).

Public API::

    from laud_mm.latency import HardwareSpec, get_hardware, LatencyPredictor, BackboneLatency
    pred = LatencyPredictor('v100')                 # name, .yaml/.json path or HardwareSpec
    rep = pred.predict_backbone(geometries, densities, batch_size, stem=None)
    rep_static = pred.predict_static(geometries, batch_size, stem=None)

See ``docs/latency_predictor.md``.
"""
from .hardware import (KNOWN_HARDWARE, HardwareSpec, get_hardware,
                       load_hardware, save_hardware)
from .operators import ConvOp, OpLatency, conv_latency
from .predictor import (BackboneLatency, LatencyPredictor, RESNET_DEPTHS,
                        resnet_geometries)
from .regnet import regnety_geometries  # noqa: E402 (RegNetY blocks)
from .vit import T2T_VIT_ARCHS, t2t_vit_geometries  # noqa: E402 (T2T-ViT)

__all__ = ['HardwareSpec', 'KNOWN_HARDWARE', 'get_hardware', 'load_hardware',
           'save_hardware', 'LatencyPredictor', 'BackboneLatency', 'ConvOp',
           'OpLatency', 'conv_latency', 'resnet_geometries', 'RESNET_DEPTHS',
           'regnety_geometries', 't2t_vit_geometries', 'T2T_VIT_ARCHS']
