"""LAUD-RegNetY: block (:mod:`.block`), dynamic-inference path
(:mod:`.dynamic`), backbone (:mod:`.backbone`), torchvision checkpoint
conversion (:mod:`.convert`) and FLOPs count (:mod:`.flops`)."""
from .backbone import REGNETY_ARCHS, LAUDRegNetY, regnety_geometries
from . import dynamic_cuda  # noqa: F401  (registers the CUDA paths)
from .block import LAUDRegNetYBlock

__all__ = ['LAUDRegNetY', 'LAUDRegNetYBlock', 'REGNETY_ARCHS',
           'regnety_geometries']
