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

from .geometry import (BlockGeometry, StemGeometry, T2TStemGeometry,
                       TokenLayerGeometry)

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
    if g.kind == 'regnety':
        return regnety_block_op_flops(g)
    if g.kind == 'vit':
        return vit_layer_op_flops(g)
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
                 conv1_density: Density = None, geometry=None,
                 conv2_density: Density = None) -> Dict[str, Density]:
    """Fraction of each operator's dense FLOPs that a dynamic block computes.

    Args:
        paradigm: 'spatial', 'channel' or 'layer'.
        mask_density: spatial: fraction of output pixels kept (N,) or scalar;
            channel: fraction of channel groups kept; layer: gate (0 or 1).
        conv1_density: spatial only: fraction of conv1 output pixels needed
            by the kept outputs (the mask dilated by the 3x3 kernel, mapped to
            the input grid). Defaults to ``mask_density``.
        geometry: optional :class:`BlockGeometry`; a ``kind='regnety'``
            block gets :func:`regnety_op_densities` (SE and grouped conv2),
            a ViT layer (``kind='vit'``, :class:`TokenLayerGeometry`)
            :func:`vit_op_densities`.
        conv2_density: RegNetY channel blocks only, see
            :func:`regnety_op_densities`.

    Returns:
        operator name -> density (same type and shape as the inputs);
        operators not listed (masker, downsample) run densely.

    Raises:
        ValueError: for an unknown paradigm.
    """
    if geometry is not None and geometry.kind == 'regnety':
        return regnety_op_densities(geometry, paradigm, mask_density,
                                    conv1_density, conv2_density)
    if geometry is not None and geometry.kind == 'vit':
        return vit_op_densities(geometry, paradigm, mask_density)
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
    one operation per input element), or of the RegNet stem (3x3/2 conv, no
    pool) for a :class:`~laud_mm.models.geometry.RegNetStemGeometry`, or
    of the T2T module for a :class:`~laud_mm.models.geometry.T2TStemGeometry`
    (:func:`t2t_stem_flops`)."""
    if getattr(stem, 'kind', 'resnet') == 't2t':
        return t2t_stem_flops(stem)
    h, w = stem.conv_hw
    if getattr(stem, 'kind', 'resnet') == 'regnet':
        return stem.in_channels * stem.out_channels * 9 * h * w
    return stem.in_channels * stem.out_channels * 49 * h * w \
        + stem.out_channels * h * w


# ------------------------------------------------------------------ RegNetY
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
        block (:func:`block_op_flops`), 0 for a static block.

    Raises:
        ValueError: for an unknown paradigm or a geometry of another kind.

    Source: paper sec. 4.2 (RegNetY results), METHOD_NOTES section 1.
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
    # the masker is the ResNet block's (same inputs, same architectures)
    import dataclasses
    ops['masker'] = block_op_flops(dataclasses.replace(
        g, kind='bottleneck', groups=1, se_channels=0))['masker']
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


def regnety_op_densities(g: BlockGeometry, paradigm: str,
                         mask_density: Density, conv1_density: Density = None,
                         conv2_density: Density = None) -> Dict[str, Density]:
    """Fraction of each RegNetY operator's dense FLOPs that a dynamic block
    computes (the dynamic path of :mod:`laud_mm.models.regnet_dynamic`
    computes exactly these).

    Args:
        g: the block geometry (``kind='regnety'``).
        paradigm: 'spatial', 'channel' or 'layer'.
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


# ------------------------------------------------------------------ T2T-ViT
def transformer_layer_flops(tokens: int, in_dims: int, embed_dims: int,
                            ffn_channels: int) -> Dict[str, int]:
    """Dense per-sample FLOPs (multiply-accumulates) of one transformer
    layer on ``tokens`` tokens.

    Args:
        tokens: L, tokens per sample.
        in_dims: input token width (= ``embed_dims`` in the encoder; the T2T
            module's layers read wider tokens).
        embed_dims: D, width of q, k, v (all heads together) and the output.
        ffn_channels: F, hidden width of the FFN.

    Returns:
        ``{'qkv': L * in * 3D, 'attn_qk': L^2 * D, 'attn_av': L^2 * D,
        'proj': L * D^2, 'fc1': L * D * F, 'fc2': L * F * D}``. QK^T and AV
        are counted (the official T2T-ViT-t-14 count, 6.1 GFLOPs at 224 px);
        LayerNorm, softmax, GELU and additions are not (as BN / ReLU).
    """
    L, D = tokens, embed_dims
    return {'qkv': L * in_dims * 3 * D, 'attn_qk': L * L * D,
            'attn_av': L * L * D, 'proj': L * D * D,
            'fc1': L * D * ffn_channels, 'fc2': L * ffn_channels * D}


def vit_layer_op_flops(g: TokenLayerGeometry) -> Dict[str, int]:
    """Dense per-sample FLOPs of every operator of a LAUD transformer layer
    (:class:`~laud_mm.models.vit_blocks.LAUDT2TLayer`).

    Args:
        g: the layer geometry (``kind='vit'``).

    Returns:
        :func:`transformer_layer_flops` plus ``'masker'``: token masker
        ``(L - extra) * D * 2`` (a Linear(D, 2) per patch token); head
        masker ``L * D`` (token mean) ``+ D * h + h * 2H`` (h = max(H // 16,
        16)); layer masker ``L * D + D * 2``; 0 for a static layer.

    Raises:
        ValueError: for an unknown paradigm or a geometry of another kind.
    """
    if g.kind != 'vit':
        raise ValueError(f'vit_layer_op_flops: geometry kind={g.kind!r} is '
                         f"not 'vit'")
    L, D = g.num_tokens, g.embed_dims
    ops = transformer_layer_flops(L, D, D, g.ffn_channels)
    if g.paradigm is None:
        ops['masker'] = 0
    elif g.paradigm == 'spatial':
        ops['masker'] = g.num_patch_tokens * D * 2
    elif g.paradigm == 'channel':
        h = g.channel_masker_hidden
        ops['masker'] = L * D + D * h + h * 2 * g.num_heads
    elif g.paradigm == 'layer':
        ops['masker'] = L * D + D * 2
    else:
        raise ValueError(f'unknown paradigm {g.paradigm!r}')
    return ops


def vit_op_densities(g: TokenLayerGeometry, paradigm: str,
                     mask_density: Density) -> Dict[str, Density]:
    """Fraction of each transformer operator's dense FLOPs that a dynamic
    layer computes (the dynamic path of :mod:`laud_mm.models.vit_dynamic`
    computes exactly these).

    Args:
        g: the layer geometry (``kind='vit'``).
        paradigm: 'spatial', 'channel' or 'layer'.
        mask_density: spatial: fraction of the *patch* tokens kept (the
            class token is always kept); channel: fraction of heads kept;
            layer: the gate. Scalar or (N,) tensor.

    Returns:
        operator -> density. spatial, with token fraction ``t = (extra + d *
        (L - extra)) / L``: qkv / proj / fc1 / fc2 t, attn_qk / attn_av t^2
        (kept queries x kept keys); channel: qkv / attn_qk / attn_av / proj
        d, the FFN dense (not listed); layer: every operator d. The masker is
        dense (not listed).

    Raises:
        ValueError: for an unknown paradigm.
    """
    d = mask_density
    if paradigm == 'spatial':
        t = (g.num_extra_tokens + d * g.num_patch_tokens) / g.num_tokens
        return {'qkv': t, 'attn_qk': t * t, 'attn_av': t * t, 'proj': t,
                'fc1': t, 'fc2': t}
    if paradigm == 'channel':
        return {'qkv': d, 'attn_qk': d, 'attn_av': d, 'proj': d}
    if paradigm == 'layer':
        return {k: d for k in ('qkv', 'attn_qk', 'attn_av', 'proj', 'fc1',
                               'fc2')}
    raise ValueError(f'unknown paradigm {paradigm!r}')


def t2t_stem_flops(stem: T2TStemGeometry) -> int:
    """Per-sample FLOPs of the Tokens-to-Token module: its two one-head
    transformer layers (input widths ``C_in * 49`` and ``token_dims * 9``,
    width and FFN ``token_dims``, on the ``hw0`` / ``hw1`` token grids) and
    the projection ``token_dims * 9 -> embed_dims`` of the ``out_hw``
    tokens. Unfolds move data only (not counted).

    Source: T2T-ViT (Yuan et al. 2021), mmpretrain ``T2TModule``.
    """
    td = stem.token_dims
    l0 = stem.hw0[0] * stem.hw0[1]
    l1 = stem.hw1[0] * stem.hw1[1]
    total = sum(transformer_layer_flops(l0, stem.in_channels * 49, td,
                                        td).values())
    total += sum(transformer_layer_flops(l1, td * 9, td, td).values())
    return total + stem.num_patches * td * 9 * stem.embed_dims
