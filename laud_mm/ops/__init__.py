"""Operators of LAUDNet dynamic inference.

Every operator has a pure-PyTorch reference implementation (always
available) and, when ``setup.py`` built ``laud_mm._ext`` from ``csrc/``, a
compiled C++ (CPU) / CUDA kernel with the same semantics. :func:`backend`
reports which one is used; :func:`use_backend` forces one (tests compare them).

Source: paper sec. 3.4 and appendix (operator fusion for dynamic inference).
"""
from .dispatch import (backend, extension, has_cuda_kernels,
                       parallel_kernels, set_backend, use_backend)
from .channel_conv import (channel_branch_add_relu,
                           channel_branch_add_relu_reference,
                           channel_branch_isa, fast_channel_branch)
from .channel_weights import (gather_kept_weights,
                              gather_kept_weights_reference)
from .epilogue import (add_relu_mean_, add_relu_mean_reference,
                       relu_mean_rows_, relu_mean_rows_reference)
from .indexing import channel_kept_lists, channel_kept_lists_reference
from .kept_columns import (gather_kept_columns,
                           gather_kept_columns_reference,
                           scatter_kept_columns,
                           scatter_kept_columns_reference)
from .masker_gate import (fast_masker_gate, masker_gate,
                          masker_gate_reference)
from .max_pool import MaxPool2d, max_pool2d
from .partition import (channel_partition_work, imbalance,
                        sample_gemm_partition, spatial_partition_work)
from .sample_gemm import sample_gemm, sample_gemm_reference
from .patches import (gather_patches, gather_patches_reference, patch_indices,
                      patch_map, scatter_add_relu, scatter_add_relu_reference,
                      window_size)
from .spatial_logit import (add_relu_logit_pool_,
                            add_relu_logit_pool_reference,
                            fast_add_relu_logit_pool,
                            spatial_logit_pool,
                            spatial_logit_pool_reference)
from .panels import pack_panels, unpack_panels
from .spatial_conv import (fast_spatial_branch, spatial_branch_add_relu,
                           spatial_branch_add_relu_reference,
                           spatial_packed_weights)

__all__ = [
    'backend', 'extension', 'has_cuda_kernels', 'parallel_kernels',
    'set_backend', 'use_backend', 'spatial_partition_work',
    'channel_partition_work', 'imbalance', 'sample_gemm_partition',
    'sample_gemm', 'sample_gemm_reference', 'channel_kept_lists',
    'channel_kept_lists_reference', 'scatter_kept_columns',
    'scatter_kept_columns_reference', 'gather_kept_columns',
    'gather_kept_columns_reference', 'masker_gate', 'masker_gate_reference',
    'fast_masker_gate',
    'gather_patches', 'gather_patches_reference', 'patch_indices', 'patch_map',
    'scatter_add_relu', 'scatter_add_relu_reference', 'window_size',
    'gather_kept_weights', 'gather_kept_weights_reference', 'MaxPool2d',
    'channel_branch_add_relu', 'channel_branch_add_relu_reference',
    'channel_branch_isa', 'fast_channel_branch',
    'spatial_branch_add_relu', 'spatial_branch_add_relu_reference',
    'spatial_packed_weights', 'pack_panels', 'unpack_panels',
    'fast_spatial_branch', 'spatial_logit_pool',
    'spatial_logit_pool_reference', 'add_relu_logit_pool_',
    'add_relu_logit_pool_reference', 'fast_add_relu_logit_pool',
    'add_relu_mean_',
    'add_relu_mean_reference', 'relu_mean_rows_', 'relu_mean_rows_reference',
    'max_pool2d'
]
