"""FLOPs of LAUD blocks, dense and dynamic: the single count shared by the
sparsity loss and the latency predictor.

Convention: FLOPs are multiply-accumulates of convolutions and linear layers
(the paper's convention: ResNet-50 = 4.1 GFLOPs at 224 px); pooling counts one
operation per input element; BN, ReLU and additions are not counted.

Source: METHOD_NOTES section 2 (FLOPs-based activation rates including the
masker and the dense downsample; conv1 with the dilated mask; conv2 with the
squared channel density), paper sec. 3.5.
"""
from typing import Dict, Mapping, Union

import torch

from .geometry import BlockGeometry, StemGeometry

Density = Union[float, torch.Tensor]


def block_op_flops(g: BlockGeometry) -> Dict[str, int]:
    """Dense per-sample FLOPs of every operator of a bottleneck block.

    Args:
        g: the block geometry.

    Returns:
        ``{'masker', 'conv1', 'conv2', 'conv3'[, 'downsample']}`` -> FLOPs
        (multiply-accumulates per sample). 'masker' is 0 for a static block.

    Raises:
        ValueError: for an unknown paradigm.
    """
    hi, wi = g.in_hw
    ho, wo = g.out_hw
    ops = {
        'conv1': g.in_channels * g.width * hi * wi,
        'conv2': g.width * g.width * 9 * ho * wo,
        'conv3': g.width * g.out_channels * ho * wo,
    }
    if g.has_downsample:
        ops['downsample'] = g.in_channels * g.out_channels * ho * wo
    pool = g.in_channels * hi * wi
    if g.paradigm is None:
        ops['masker'] = 0
    elif g.paradigm == 'spatial':
        gh, gw = g.patch_grid
        ops['masker'] = pool + g.in_channels * 2 * gh * gw
    elif g.paradigm == 'channel':
        h = g.channel_masker_hidden
        ops['masker'] = pool + g.in_channels * h + h * 2 * g.num_groups
    elif g.paradigm == 'layer':
        ops['masker'] = pool + g.in_channels * 2
    else:
        raise ValueError(f'unknown paradigm {g.paradigm!r}')
    return ops


def op_densities(paradigm: str, mask_density: Density,
                 conv1_density: Density = None) -> Dict[str, Density]:
    """Fraction of each operator's dense FLOPs that a dynamic block computes.

    Args:
        paradigm: 'spatial', 'channel' or 'layer'.
        mask_density: spatial: fraction of output pixels kept (N,) or scalar;
            channel: fraction of channel groups kept; layer: gate (0 or 1).
        conv1_density: spatial only: fraction of conv1 output pixels needed
            by the kept outputs (the mask dilated by the 3x3 kernel, mapped to
            the input grid). Defaults to ``mask_density``.

    Returns:
        operator name -> density (same type and shape as the inputs);
        operators not listed (masker, downsample) run densely.

    Raises:
        ValueError: for an unknown paradigm.
    """
    d = mask_density
    if paradigm == 'spatial':
        return {'conv1': d if conv1_density is None else conv1_density,
                'conv2': d, 'conv3': d}
    if paradigm == 'channel':
        return {'conv1': d, 'conv2': d * d, 'conv3': d}
    if paradigm == 'layer':
        return {'conv1': d, 'conv2': d, 'conv3': d}
    raise ValueError(f'unknown paradigm {paradigm!r}')


def dynamic_flops(op_flops: Mapping[str, int],
                  densities: Mapping[str, Density]) -> Density:
    """FLOPs actually computed: sum_k op_flops[k] * densities.get(k, 1).

    Args:
        op_flops: dense FLOPs per operator (:func:`block_op_flops`).
        densities: per-operator density, scalar or (N,) tensor.

    Returns:
        Per-sample FLOPs, a float or an (N,) tensor (differentiable through
        the densities).
    """
    total = 0.
    for name, f in op_flops.items():
        total = total + f * densities.get(name, 1.)
    return total


def stem_flops(stem: StemGeometry) -> int:
    """Per-sample FLOPs of the ResNet stem (7x7/2 conv; the max-pool counts
    one operation per input element)."""
    h, w = stem.conv_hw
    return stem.in_channels * stem.out_channels * 49 * h * w \
        + stem.out_channels * h * w
