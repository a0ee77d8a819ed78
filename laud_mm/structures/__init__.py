"""Shapes and FLOPs of LAUD networks, shared by the models, the sparsity
loss, the latency predictor and the tools: block geometry for any input
size (:mod:`.geometry`) and the FLOPs count (:mod:`.flops`, families
register theirs by geometry kind).
"""
from .flops import (block_op_flops, conv_masker_flops, dynamic_flops,
                    op_densities, register_block_flops, register_stem_flops,
                    stem_flops)
from .geometry import (PARADIGMS, BlockGeometry, DeepStemGeometry,
                       RegNetStemGeometry, StemGeometry, T2TStemGeometry,
                       TokenLayerGeometry,
                       block_out_hw, ceil_div, check_paradigm, conv_out_size)

__all__ = ['PARADIGMS', 'BlockGeometry', 'StemGeometry', 'DeepStemGeometry',
           'RegNetStemGeometry',
           'TokenLayerGeometry', 'T2TStemGeometry', 'block_out_hw',
           'ceil_div', 'check_paradigm', 'conv_out_size', 'block_op_flops',
           'op_densities', 'dynamic_flops', 'stem_flops', 'conv_masker_flops',
           'register_block_flops', 'register_stem_flops']
