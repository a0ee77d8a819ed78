"""Layers shared by every LAUD model family: gates, maskers, gate-to-mask
expansion, the block and backbone mixins, BN folding, the dynamic-path
plumbing, activation statistics and checkpoint helpers. A family imports
only these names, never another family's.
"""
from .backbone import LAUDBackboneMixin
from .block import BlockStats, LAUDBlockMixin
from .checkpoint import (CLASSIFIER_REVISE_KEYS, classifier_to_backbone,
                         load_state_dict_file, unwrap_state_dict)
from .dynamic import (forced_gate, is_autocast, next_block,
                      owned_block_inputs, owns_input, run_dynamic_path,
                      sample_gate)
from .folding import cached_fold, fold_conv_bn
from .gates import KEEP, SKIP, gumbel_gate, init_keep_bias
from .maskers import (ChannelMasker, HeadMasker, LayerMasker, MaskerBase,
                      SpatialMasker, TokenLayerMasker, TokenMasker,
                      build_masker, build_token_masker)
from .masks import (conv1_needed_mask, conv_gate_densities,
                    expand_channel_gate, expand_spatial_gate)
from .stats import attach_laud_stats

__all__ = [
    'BlockStats', 'LAUDBackboneMixin', 'LAUDBlockMixin', 'CLASSIFIER_REVISE_KEYS',
    'classifier_to_backbone', 'load_state_dict_file', 'unwrap_state_dict',
    'forced_gate', 'is_autocast', 'next_block', 'owned_block_inputs',
    'owns_input',
    'run_dynamic_path', 'sample_gate', 'cached_fold', 'fold_conv_bn', 'KEEP',
    'SKIP', 'gumbel_gate', 'init_keep_bias', 'MaskerBase', 'SpatialMasker',
    'ChannelMasker', 'LayerMasker', 'TokenMasker', 'HeadMasker',
    'TokenLayerMasker', 'build_masker', 'build_token_masker',
    'conv1_needed_mask', 'conv_gate_densities', 'expand_channel_gate',
    'expand_spatial_gate', 'attach_laud_stats'
]
