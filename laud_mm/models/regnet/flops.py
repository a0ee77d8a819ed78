"""FLOPs of the RegNetY block (``BlockGeometry.kind == 'regnety'``) and of
the RegNet stem, registered with :mod:`laud_mm.structures.flops`.

Source: paper sec. 4.3.2 (RegNetY results), docs/method.md sec. 1-2.
"""
from typing import Dict

from ...structures.flops import (Density, conv_masker_flops,
                                 register_block_flops, register_stem_flops)
from ...structures.geometry import BlockGeometry, RegNetStemGeometry


def regnety_block_op_flops(g: BlockGeometry) -> Dict[str, int]:
    """Dense per-sample FLOPs of every operator of a RegNetY block.

    RegNetY block (torchvision ``ResBottleneckBlock`` with SE, bottleneck
    ratio 1): conv1 1x1 (C_in -> w), conv2 3x3 grouped (w -> w, ``g.groups``
    groups, stride), SE (global pool, 1x1 w -> se, ReLU, 1x1 se -> w,
    sigmoid, scale), conv3 1x1 (w -> C_out), optional 1x1 strided
    downsample, add, ReLU.

    Args:
        g: the block geometry, ``g.kind == 'regnety'``.

    Returns:
        ``{'masker', 'conv1', 'conv2', 'se_pool', 'se_fc', 'conv3'[,
        'downsample']}`` -> FLOPs (multiply-accumulates per sample; the SE
        pool counts one operation per element of the conv2 output, the SE
        scale is not counted, like BN and ReLU). 'masker' as for the ResNet
        block (:func:`~laud_mm.structures.flops.conv_masker_flops`), 0 for a static block.

    Raises:
        ValueError: for an unknown paradigm or a geometry of another kind.

    Source: paper sec. 4.3.2 (RegNetY results), docs/method.md sec. 1.
    """
    if g.kind != 'regnety':
        raise ValueError(f'regnety_block_op_flops: geometry kind={g.kind!r} '
                         f"is not 'regnety'")
    hi, wi = g.in_hw
    ho, wo = g.out_hw
    ops = {
        'conv1': g.in_channels * g.width * hi * wi,
        'conv2': g.width * g.group_width * 9 * ho * wo,
        'se_pool': g.width * ho * wo,
        'se_fc': 2 * g.width * g.se_channels,
        'conv3': g.width * g.out_channels * ho * wo,
    }
    if g.has_downsample:
        ops['downsample'] = g.in_channels * g.out_channels * ho * wo
    ops['masker'] = conv_masker_flops(g)  # the CNN maskers, same inputs
    return ops


def expected_active_conv_groups(g: BlockGeometry, mask_density: Density
                                ) -> Density:
    """Expected fraction of conv2's conv groups that hold at least one kept
    channel, for independent channel-group gates at density d.

    A conv group of ``gw = g.group_width`` channels overlaps ``q = gw / G``
    gate groups when G < gw (probability ``1 - (1 - d) ** q`` of being
    active) and lies inside one gate group when G is a multiple of gw
    (probability d).

    Raises:
        ValueError: if ``g`` is not a channel block.
    """
    if g.paradigm != 'channel':
        raise ValueError(f'expected_active_conv_groups: paradigm='
                         f"{g.paradigm!r} is not 'channel'")
    q = g.group_width / float(g.granularity)
    if q <= 1:
        return mask_density
    return 1 - (1 - mask_density) ** q


def regnety_op_densities(g: BlockGeometry, mask_density: Density,
                         conv1_density: Density = None,
                         conv2_density: Density = None) -> Dict[str, Density]:
    """Fraction of each RegNetY operator's dense FLOPs that a dynamic block
    computes (the dynamic path of :mod:`laud_mm.models.regnet.dynamic`
    computes exactly these).

    Args:
        g: the block geometry (``kind='regnety'``; its ``paradigm``
            decides).
        mask_density: spatial: fraction of output pixels kept; channel:
            fraction of channels kept; layer: the gate. Scalar or (N,).
        conv1_density: spatial: fraction of conv1 output pixels read by the
            kept outputs (dilated mask); defaults to ``mask_density``.
        conv2_density: channel: fraction of conv2's conv groups with at
            least one kept channel (conv2 runs whole conv groups); defaults
            to :func:`expected_active_conv_groups`.

    Returns:
        operator -> density. spatial: conv1 (dilated), conv2 / se_pool /
        conv3 d, se_fc 1 (SE FCs run per sample on the pooled kept pixels);
        channel: conv1 / se_pool / se_fc / conv3 d, conv2 the active conv
        groups; layer: every operator of the residual branch, SE included,
        d. Masker and downsample are dense (not listed).

    Raises:
        ValueError: for an unknown paradigm.
    """
    d = mask_density
    paradigm = g.paradigm
    if paradigm == 'spatial':
        return {'conv1': d if conv1_density is None else conv1_density,
                'conv2': d, 'se_pool': d, 'se_fc': 1., 'conv3': d}
    if paradigm == 'channel':
        a = expected_active_conv_groups(g, d) if conv2_density is None \
            else conv2_density
        return {'conv1': d, 'conv2': a, 'se_pool': d, 'se_fc': d,
                'conv3': d}
    if paradigm == 'layer':
        return {'conv1': d, 'conv2': d, 'se_pool': d, 'se_fc': d, 'conv3': d}
    raise ValueError(f'unknown paradigm {paradigm!r}')


def regnet_stem_flops(stem: RegNetStemGeometry) -> int:
    """Per-sample FLOPs of the RegNet stem: one 3x3/2 conv, no pool."""
    h, w = stem.conv_hw
    return stem.in_channels * stem.out_channels * 9 * h * w


register_block_flops('regnety', regnety_block_op_flops, regnety_op_densities)
register_stem_flops('regnet', regnet_stem_flops)
