"""FLOPs of the ResNet bottleneck (``BlockGeometry.kind == 'bottleneck'``)
and of the ResNet stem, registered with :mod:`laud_mm.structures.flops`.

Source: docs/method.md sec. 2 (conv1 with the dilated mask in spatial
blocks, conv2 with the squared channel density in channel blocks), paper
sec. 3.2 ("Computational complexity").
"""
from typing import Dict

from ...structures.flops import (Density, conv_masker_flops,
                                 register_block_flops, register_stem_flops)
from ...structures.geometry import (BlockGeometry, DeepStemGeometry,
                                    StemGeometry)


def bottleneck_op_flops(g: BlockGeometry) -> Dict[str, int]:
    """Dense per-sample FLOPs of every operator of a bottleneck block.

    Args:
        g: the block geometry (``kind='bottleneck'``).

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
    ops['masker'] = conv_masker_flops(g)
    return ops


def bottleneck_op_densities(g: BlockGeometry, mask_density: Density,
                            conv1_density: Density = None,
                            conv2_density: Density = None
                            ) -> Dict[str, Density]:
    """Fraction of each bottleneck operator's FLOPs a dynamic block computes.

    Args:
        g: the block geometry (its ``paradigm`` decides).
        mask_density: spatial: fraction of output pixels kept (N,) or
            scalar; channel: fraction of channel groups kept; layer: the
            gate (0 or 1).
        conv1_density: spatial only: fraction of conv1 output pixels needed
            by the kept outputs (the mask dilated by the 3x3 kernel, mapped
            to the input grid). Defaults to ``mask_density``.
        conv2_density: unused (the bottleneck's conv2 is not grouped).

    Returns:
        ``{'conv1', 'conv2', 'conv3'}`` -> density; masker and downsample
        run densely.

    Raises:
        ValueError: for an unknown paradigm.
    """
    d = mask_density
    if g.paradigm == 'spatial':
        return {'conv1': d if conv1_density is None else conv1_density,
                'conv2': d, 'conv3': d}
    if g.paradigm == 'channel':
        return {'conv1': d, 'conv2': d * d, 'conv3': d}
    if g.paradigm == 'layer':
        return {'conv1': d, 'conv2': d, 'conv3': d}
    raise ValueError(f'unknown paradigm {g.paradigm!r}')


def resnet_stem_flops(stem: StemGeometry) -> int:
    """Per-sample FLOPs of the ResNet stem: the 7x7/2 conv and the max-pool
    (one operation per input element)."""
    h, w = stem.conv_hw
    return stem.in_channels * stem.out_channels * 49 * h * w \
        + stem.out_channels * h * w


def resnet_deep_stem_flops(stem: DeepStemGeometry) -> int:
    """Per-sample FLOPs of the deep (ResNetV1c) stem: three 3x3 convs
    (C_in -> C/2 at stride 2, C/2 -> C/2, C/2 -> C) at the stride-2 size and
    the max-pool (one operation per input element)."""
    h, w = stem.conv_hw
    c, m = stem.out_channels, stem.mid_channels
    return (stem.in_channels * m + m * m + m * c) * 9 * h * w + c * h * w


register_block_flops('bottleneck', bottleneck_op_flops,
                     bottleneck_op_densities)
register_stem_flops('resnet', resnet_stem_flops)
register_stem_flops('resnet_deep', resnet_deep_stem_flops)
