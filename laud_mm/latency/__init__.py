"""Latency predictor of LAUD backbones (paper appendix A).

Public API::

    from laud_mm.latency import LatencyPredictor, get_hardware
    pred = LatencyPredictor('v100')                 # name, .yaml/.json path or HardwareSpec
    rep = pred.predict_backbone(geometries, densities, batch_size, stem=None)
    rep_static = pred.predict_static(geometries, batch_size, stem=None)

Layers (each imports only those above it): :mod:`.hardware` (device specs),
:mod:`.operators` (per-operator model with tile search),
:mod:`.expectation` (expected cost under random masks), :mod:`.blocks`
(one latency block per model family, registered by geometry kind),
:mod:`.predictor`, :mod:`.search` (granularity search). Geometries without
building a model: ``laud_mm.models.resnet_geometries`` /
``regnety_geometries`` / ``t2t_vit_geometries``.

See ``docs/latency_predictor.md``.
"""
from .hardware import (KNOWN_HARDWARE, HardwareSpec, get_hardware,
                       load_hardware, save_hardware)
from .operators import ConvOp, OpLatency, conv_latency
from .predictor import BackboneLatency, LatencyPredictor
from .search import format_search, search_granularity

__all__ = ['HardwareSpec', 'KNOWN_HARDWARE', 'get_hardware', 'load_hardware',
           'save_hardware', 'LatencyPredictor', 'BackboneLatency', 'ConvOp',
           'OpLatency', 'conv_latency', 'search_granularity', 'format_search']
