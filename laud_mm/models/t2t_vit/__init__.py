"""LAUD-T2T-ViT: encoder layer (:mod:`.block`, attention arithmetic in
:mod:`.attention`), dynamic-inference path (:mod:`.dynamic`), backbone and
architecture table (:mod:`.backbone`) and FLOPs count (:mod:`.flops`).
Checkpoints are mmpretrain's (no conversion)."""
from .backbone import (T2T_VIT_ARCHS, LAUDT2TViT, t2t_vit_arch_kwargs,
                       t2t_vit_geometries)
from . import dynamic_cuda  # noqa: F401  (registers the CUDA paths)
from .block import LAUDT2TLayer

__all__ = ['LAUDT2TViT', 'LAUDT2TLayer', 'T2T_VIT_ARCHS',
           't2t_vit_arch_kwargs', 't2t_vit_geometries']
