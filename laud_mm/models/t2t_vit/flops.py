"""FLOPs of the LAUD transformer layer (``TokenLayerGeometry.kind ==
'vit'``) and of the Tokens-to-Token module, registered with
:mod:`laud_mm.structures.flops`.

Source: paper sec. 3.2 ("Generalization in Transformer architectures"),
T2T-ViT (Yuan et al. 2021; the official T2T-ViT-t-14 count, 6.1 GFLOPs at
224 px).
"""
from typing import Dict

from ...structures.flops import (Density, register_block_flops,
                                 register_stem_flops)
from ...structures.geometry import T2TStemGeometry, TokenLayerGeometry


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
    (:class:`~laud_mm.models.t2t_vit.block.LAUDT2TLayer`).

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


def vit_op_densities(g: TokenLayerGeometry, mask_density: Density,
                     conv1_density: Density = None,
                     conv2_density: Density = None) -> Dict[str, Density]:
    """Fraction of each transformer operator's dense FLOPs that a dynamic
    layer computes (the dynamic path of :mod:`laud_mm.models.t2t_vit.dynamic`
    computes exactly these).

    Args:
        g: the layer geometry (``kind='vit'``; its ``paradigm`` decides).
        mask_density: spatial: fraction of the *patch* tokens kept (the
            class token is always kept); channel: fraction of heads kept;
            layer: the gate. Scalar or (N,) tensor.
        conv1_density, conv2_density: unused (CNN blocks only).

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
    paradigm = g.paradigm
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


register_block_flops('vit', vit_layer_op_flops, vit_op_densities)
register_stem_flops('t2t', t2t_stem_flops)
