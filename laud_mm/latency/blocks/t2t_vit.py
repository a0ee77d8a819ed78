"""Latency-predictor kernels of transformer encoder layers
(:class:`~laud_mm.structures.geometry.TokenLayerGeometry`, ``kind='vit'``) and
of the T2T-ViT Tokens-to-Token module.

Layout: tokens are rows, (N, L, D) row-major. A linear layer on L tokens is a
1x1 "convolution" whose output width is the token axis
(:class:`~laud_mm.latency.operators.ConvOp` ``(batch=N, cin, cout, 1, L)``),
so the tile search of :mod:`laud_mm.latency.operators` applies; as a
library GEMM (``ConvOp.blas_gemm``) it costs the larger of its compute, at
``HardwareSpec.gemm_speed`` times the modelled rate, and its off-chip
traffic (a roofline: its blocking overlaps the two).
The attention products are batched GEMMs with per-(sample, head) operands:
QK^T is ``ConvOp(N*H, cin=dh, cout=L_keys, 1, L_queries)`` and AV is
``ConvOp(N*H, cin=L_keys, cout=dh, 1, L_queries)``, with the keys / values
as per-item weights (``per_sample_channels``: a tile cannot span two
(sample, head) pairs; their bytes counted off-chip).

Kernels of a layer (LayerNorm and the residual adds are streaming kernels,
priced at ``HardwareSpec.token_stream_gbs`` where the spec has it:
:func:`token_stream_latency`; GELU is fused into fc1's epilogue,
``implementation='eager'`` adds it as a separate kernel; the attention is
one fused kernel, :func:`fused_attention_op`, as inference runs it on
every device: ``LAUDT2TViT.inference_kernels`` and the dynamic paths'
``attend``):

* static: ln1, qkv (D -> 3D), attention (QK^T, softmax over N*H*L*L
  logits kept on chip, AV), proj (D -> D), add, ln2, fc1 (D -> F), fc2
  (F -> D), add;
* spatial / token skipping (density d = fraction of patch tokens kept; the
  class token always): masker (Linear(D, 2) on the L - 1 patch tokens,
  compare, index), **gather** of the k = 1 + d (L - 1) kept token rows
  (runs of D contiguous floats), the whole layer on k tokens per sample
  (qkv / proj / FFN scale with k, QK^T / softmax / AV with k^2), **scatter**
  of the k rows back (``eager`` adds the copy of the whole input the PyTorch
  path writes into). A fractional k is blended between the neighbouring
  integers;
* channel / head skipping (density d = fraction of heads kept): masker
  (token mean + 2-layer MLP, one kernel), qkv to the d*H kept heads' 3 * d *
  D outputs and proj from their d * D inputs with per-sample weight sets
  (load imbalance: the kept-head count per sample is binomial, std
  ``sqrt(H d (1 - d))`` heads, as the channel groups of a CNN channel block;
  weights read off-chip: the union of the samples' heads), attention for d*H
  heads per sample; ln / adds / FFN dense;
* layer (density d = fraction of samples run): masker (token mean + linear)
  and the static layer on the d * N kept samples (expected, blended between
  integer counts; ``eager`` adds the index_select / index_copy of the kept
  samples).

Source: paper sec. 3.2 ("Generalization in Transformer architectures":
token indexing and selection instead of pixel gathering), sec. 3.3 /
appendix A (the latency model) and "Experiments on vision Transformers";
docs/method.md sec. 4.
"""
import math
from collections import OrderedDict
from typing import Dict, List, Optional

from ...structures.geometry import (PARADIGMS, T2TStemGeometry,
                                    TokenLayerGeometry)
from ..expectation import expected_ops
from ..hardware import HardwareSpec
from ..operators import (ConvOp, OpLatency, conv_latency, elementwise_latency,
                         launch_latency, pool_latency)
from . import register_block_latency, register_stem_latency
from .common import fused_op

__all__ = ['vit_layer_ops', 't2t_stem_ops', 'transformer_ops',
           'attention_ops', 'fused_attention_op', 'linear_tokens_latency',
           'token_stream_latency',
           'vit_op_breakdown']

#: the streaming kernels of a transformer layer (:func:`transformer_ops`
#: names, without prefix): what ``HardwareSpec.token_stream_gbs`` is
#: measured on (:func:`laud_mm.latency.calibration.transformer_terms`)
LAYER_STREAM_OPS = ('ln1', 'add1', 'ln2', 'gelu', 'add2')

#: arithmetic operations per element of the streaming kernels
LAYERNORM_OPS = 5.
SOFTMAX_OPS = 4.
GELU_OPS = 8.


# ------------------------------------------------------------------ kernels
def linear_tokens_latency(hw: HardwareSpec, name: str, batch: float,
                          tokens: int, cin: float, cout: float,
                          **kw) -> OpLatency:
    """A Linear(cin, cout) applied to ``tokens`` tokens of each of
    ``batch`` samples (a 1x1 conv with the tokens as the output width), a
    library GEMM (``ConvOp.blas_gemm``: its compute at
    ``HardwareSpec.gemm_speed`` times the modelled rate).

    Args:
        hw: the device.
        name: operator name.
        batch: samples (may be fractional: an expectation).
        tokens: tokens per sample (integer).
        cin, cout: input / output features (may be fractional: expected
            kept heads' features).
        **kw: further :class:`ConvOp` fields (``per_sample_channels``,
            ``cout_std``, ``weight_elems``).

    Returns:
        :class:`OpLatency`; zero when there is no work.
    """
    t = int(tokens)
    return conv_latency(hw, ConvOp(float(batch), cin, cout, 1, t, 1, t,
                                   blas_gemm=True, name=name, **kw))


def token_stream_latency(hw: HardwareSpec, name: str, elems: float,
                         reads: int = 2, writes: int = 1,
                         ops_per_elem: float = 1., **kw) -> OpLatency:
    """A streaming kernel over token activations (LayerNorm, a residual add,
    GELU, a split, gather, scatter or copy of token rows):
    :func:`~laud_mm.latency.operators.elementwise_latency`, or, with
    ``HardwareSpec.token_stream_gbs`` > 0, its bytes moved (whole
    transactions) at that bandwidth plus its launch and parallel region,
    no compute term (the rate measured on an encoder layer covers both).

    Args:
        hw: the device.
        name: operator name.
        elems: output elements (whole batch).
        reads, writes: tensors read / written per element.
        ops_per_elem: arithmetic operations per element (the streaming
            model only).
        **kw: further :func:`elementwise_latency` arguments
            (``run_elems``, ``contiguous_reads``, ...).

    Returns:
        :class:`OpLatency`; zero when ``elems`` is 0.

    Raises:
        ValueError: as :func:`elementwise_latency`.

    Source: paper appendix A (a memory-bound kernel's latency);
    docs/latency_predictor.md, "Transformer layers".
    """
    op = elementwise_latency(hw, name, elems, reads, writes,
                             ops_per_elem=ops_per_elem, **kw)
    if hw.token_stream_gbs <= 0 or op.ms == 0:
        return op
    t_mem = op.offchip_bytes / (hw.token_stream_gbs * 1e6)  # ms
    return OpLatency(name, t_mem + op.launch_ms, 0., t_mem, op.launch_ms,
                     0., op.offchip_bytes, op.onchip_bytes)


def attention_ops(hw: HardwareSpec, pairs: float, tokens: int,
                  head_dims: int, prefix: str = '') -> List[OpLatency]:
    """QK^T, softmax and AV of ``pairs`` (sample, head) pairs of
    ``tokens`` tokens each.

    Args:
        hw: the device.
        pairs: N * heads (may be fractional: expected kept heads).
        tokens: L, tokens per sample (queries = keys).
        head_dims: dh.
        prefix: prepended to the operator names.

    Returns:
        [attn_qk (MACs pairs * L^2 * dh), softmax (pairs * L^2 elements),
        attn_av (pairs * L^2 * dh)].
    """
    t = int(tokens)
    if pairs <= 0 or t <= 0:
        return []
    kv = float(pairs * t * head_dims)
    qk = conv_latency(hw, ConvOp(float(pairs), head_dims, t, 1, t, 1, t,
                                 per_sample_channels=True, weight_elems=kv,
                                 name=prefix + 'attn_qk'))
    sm = elementwise_latency(hw, prefix + 'softmax', float(pairs * t * t),
                             1, 1, ops_per_elem=SOFTMAX_OPS)
    av = conv_latency(hw, ConvOp(float(pairs), t, head_dims, 1, t, 1, t,
                                 per_sample_channels=True, weight_elems=kv,
                                 name=prefix + 'attn_av'))
    return [qk, sm, av]


def fused_attention_op(hw: HardwareSpec, pairs: float, tokens: int,
                       head_dims: int, prefix: str = '') -> List[OpLatency]:
    """QK^T, softmax and AV of ``pairs`` (sample, head) pairs as one
    kernel that keeps the logits on chip (torch's
    ``scaled_dot_product_attention``, which the Tokens-to-Token module runs
    in inference: ``LAUDT2TViT.inference_kernels``): the compute of the two
    products (their tile model, :func:`attention_ops`) and of the softmax at
    ``HardwareSpec.attention_speed`` times the modelled rate, one launch,
    and off-chip only q, k, v read and the output written (``pairs * L *
    dh`` elements each).

    Returns:
        [attn_fused] (milliseconds; MACs ``2 * pairs * L^2 * dh``), or []
        for no work.

    Source: paper appendix A (compute, memory and launch terms of a
    kernel); FlashAttention's tiling (the logits never leave the chip).
    """
    parts = attention_ops(hw, pairs, tokens, head_dims, prefix)
    if not parts:
        return []
    io = elementwise_latency(hw, prefix + 'attn_io',
                             float(pairs * int(tokens) * head_dims), 3, 1,
                             ops_per_elem=0.)
    compute = sum(o.compute_ms for o in parts) / hw.attention_speed
    launch = max(o.launch_ms for o in parts)
    return [OpLatency(prefix + 'attn_fused', compute + io.memory_ms + launch,
                      compute, io.memory_ms, launch,
                      sum(o.macs for o in parts), io.offchip_bytes,
                      io.onchip_bytes)]


def transformer_ops(hw: HardwareSpec, batch: float, tokens: int,
                    in_dims: int, embed_dims: int, heads: float,
                    head_dims: int, ffn_channels: int, eager: bool = False,
                    prefix: str = '', qkv_kw: Optional[dict] = None,
                    proj_kw: Optional[dict] = None,
                    fused_attention: bool = False) -> List[OpLatency]:
    """Kernels of one transformer layer on ``batch`` samples of ``tokens``
    tokens (see the module docstring).

    Args:
        hw: the device.
        batch: samples (>= 0, may be fractional).
        tokens: tokens per sample.
        in_dims: input token width (ln1, qkv input).
        embed_dims: D (output width, residual).
        heads: heads computed per sample (may be fractional: expected kept
            heads).
        head_dims: dh.
        ffn_channels: F.
        eager: GELU as a separate kernel.
        prefix: prepended to the operator names.
        qkv_kw, proj_kw: extra :class:`ConvOp` fields of qkv / proj
            (per-sample weights of head skipping).
        fused_attention: the attention as one kernel
            (:func:`fused_attention_op`) instead of :func:`attention_ops`.

    Returns:
        list of :class:`OpLatency` (whole batch); empty for ``batch <= 0``.
    """
    if batch <= 0:
        return []
    t = int(tokens)
    p = prefix
    elems = float(batch * t * embed_dims)
    hd = heads * head_dims
    ops = [token_stream_latency(hw, p + 'ln1', float(batch * t * in_dims),
                                1, 1, ops_per_elem=LAYERNORM_OPS),
           linear_tokens_latency(hw, p + 'qkv', batch, t, in_dims, 3 * hd,
                                 **(qkv_kw or {}))]
    ops += (fused_attention_op if fused_attention else attention_ops)(
        hw, batch * heads, t, head_dims, p)
    ops += [linear_tokens_latency(hw, p + 'proj', batch, t, hd, embed_dims,
                                  **(proj_kw or {})),
            token_stream_latency(hw, p + 'add1', elems, 2, 1),
            token_stream_latency(hw, p + 'ln2', elems, 1, 1,
                                 ops_per_elem=LAYERNORM_OPS),
            linear_tokens_latency(hw, p + 'fc1', batch, t, embed_dims,
                                  ffn_channels)]
    if eager:
        ops.append(token_stream_latency(hw, p + 'gelu', float(
            batch * t * ffn_channels), 1, 1, ops_per_elem=GELU_OPS))
    ops += [linear_tokens_latency(hw, p + 'fc2', batch, t, ffn_channels,
                                  embed_dims),
            token_stream_latency(hw, p + 'add2', elems, 2, 1)]
    return [o for o in ops if o.ms > 0]


def _static(pred, g: TokenLayerGeometry, batch: float,
            tokens: Optional[int] = None) -> List[OpLatency]:
    return transformer_ops(
        pred.hw, batch, g.num_tokens if tokens is None else tokens,
        g.embed_dims, g.embed_dims, g.num_heads, g.head_dims,
        g.ffn_channels, pred.eager, fused_attention=True)


def _masker_pool_mlp(hw, g: TokenLayerGeometry, batch: int,
                     outs: List[int]) -> OpLatency:
    """One kernel: mean of the L tokens, then Linear layers of widths
    ``outs`` (head masker: [h, 2H]; layer masker: [2])."""
    pool = pool_latency(hw, 'masker', batch, g.embed_dims, (1, g.num_tokens),
                        (1, 1), g.num_tokens)
    parts, cin = [pool], g.embed_dims
    for c in outs:
        parts.append(conv_latency(hw, ConvOp(float(batch), cin, c, 1, 1, 1,
                                             1, name='masker_fc')))
        cin = c
    return fused_op(hw, 'masker', parts)


#: the kernels of a layer that head skipping runs on the kept heads only
_HEAD_OPS = ('qkv', 'attn_fused', 'proj')


@register_block_latency('vit')
def vit_layer_ops(pred, g: TokenLayerGeometry, batch: int,
                  density: Optional[float]) -> List[OpLatency]:
    """Kernels of one LAUD transformer layer (see the module docstring).

    Args:
        pred: the :class:`~laud_mm.latency.LatencyPredictor` (hardware,
            ``eager``).
        g: the layer geometry (``kind='vit'``).
        batch: samples in the batch.
        density: spatial: fraction of patch tokens kept; channel: of heads;
            layer: of samples run; ignored for a static layer.

    Returns:
        list of :class:`OpLatency` (whole batch).

    Raises:
        ValueError: for a geometry of another kind or an unknown paradigm.
    """
    if getattr(g, 'kind', None) != 'vit':
        raise ValueError(f'vit_layer_ops: kind={getattr(g, "kind", None)!r} '
                         f"is not 'vit'")
    hw = pred.hw
    if g.paradigm is None:
        return _static(pred, g, batch)
    d = float(density)
    L, D, e = g.num_tokens, g.embed_dims, g.num_extra_tokens
    if g.paradigm == 'spatial':
        ops = [linear_tokens_latency(hw, 'masker', batch, g.num_patch_tokens,
                                     D, 2),
               elementwise_latency(hw, 'mask_index', float(batch * L), 1, 0,
                                   ops_per_elem=2.)]
        if d >= 1.:  # every token kept: the static layer, no gather
            return ops + _static(pred, g, batch)
        k = e + d * g.num_patch_tokens  # expected kept tokens per sample
        rows = float(batch * k * D)
        ops.append(token_stream_latency(hw, 'gather', rows, 1, 1,
                                        run_elems=float(D)))
        if pred.eager:  # the output is a copy of the input, then indexed
            ops.append(token_stream_latency(hw, 'copy',
                                            float(batch * L * D), 1, 1))
        ops += expected_ops(lambda t: _static(pred, g, batch, t), k)
        ops.append(token_stream_latency(hw, 'scatter', rows, 1, 1,
                                        run_elems=float(D),
                                        contiguous_reads=1))
        return ops
    if g.paradigm == 'channel':
        H, dh = g.num_heads, g.head_dims
        ops = [_masker_pool_mlp(hw, g, batch,
                                [g.channel_masker_hidden, 2 * H])]
        if d >= 1.:
            return ops + _static(pred, g, batch)
        heads = d * H
        std = dh * math.sqrt(H * d * (1. - d))
        union = 1. - (1. - d) ** batch
        layer = transformer_ops(
            hw, batch, L, D, D, heads, dh, g.ffn_channels, pred.eager,
            fused_attention=True,
            qkv_kw=dict(per_sample_channels=True, cout_std=3 * std,
                        cout_max=3 * D,
                        weight_elems=union * 3 * D * D),
            proj_kw=dict(per_sample_channels=True,
                         weight_elems=union * D * D))
        if not pred.eager:
            return ops + layer
        # the PyTorch path: each sample's kept heads' qkv and proj weights
        # gathered, and one group of batched GEMMs per kept-head count in
        # the batch (expected distinct counts, kept-head count binomial)
        wg = elementwise_latency(hw, 'weight_gather', float(
            batch * heads * dh * 4 * D), 1, 1)
        groups = sum(1. - (1. - math.comb(H, k) * d ** k *
                           (1. - d) ** (H - k)) ** batch
                     for k in range(1, H + 1))
        extra = launch_latency(hw, 'head_groups',
                               len(_HEAD_OPS) * max(groups - 1., 0.))
        return ops + [wg] + layer + ([extra] if extra.ms > 0 else [])
    if g.paradigm == 'layer':
        ops = [_masker_pool_mlp(hw, g, batch, [2])]
        if not pred.eager:
            return ops + expected_ops(lambda n: _static(pred, g, n),
                                      d * batch)
        row = float(L * D)

        def eager(n):
            if n >= batch:
                return _static(pred, g, batch)
            if n <= 0:
                return []
            return [token_stream_latency(hw, 'index_select', row * n, 1, 1),
                    token_stream_latency(hw, 'copy', row * batch, 1, 1)] + \
                _static(pred, g, n) + \
                [token_stream_latency(hw, 'index_copy', row * n, 1, 1)]
        return ops + expected_ops(eager, d * batch, with_zero=True)
    raise ValueError(f'layer {g.index}: paradigm={g.paradigm!r} is not one of '
                     f'{PARADIGMS} or None')


@register_stem_latency('t2t')
def t2t_stem_ops(pred, stem: T2TStemGeometry, batch: int
                 ) -> List[OpLatency]:
    """Kernels of the Tokens-to-Token module (always dense): soft split 0
    (unfold 7x7/4), T2T layer 1 (one head, width ``token_dims``, value
    shortcut), soft split 1, T2T layer 2, soft split 2, the projection to
    ``embed_dims``, class token + position embedding. The two T2T layers'
    attention is one fused kernel each (:func:`fused_attention_op`), as
    inference runs it (``LAUDT2TViT.inference_kernels``).

    ``eager`` (this project's PyTorch path, mmpretrain's module) counts
    the copies that path runs on every device: each T2T layer's output
    copied from token rows into a (N, C, H, W) map (``to_map``), and
    soft splits 1 and 2 as ATen's ``im2col`` and the transposing copy of
    its columns into token rows (``*_rows``); soft split 0 likewise on a
    GPU, on a CPU (a spec with ``max_tile_batch`` 1) as the padded copy
    of the image and one copy of its windows into token rows
    (:func:`~laud_mm.models.t2t_vit.soft_split.soft_split_tokens`, the
    CPU inference path). Otherwise (fused kernels) each split is one
    pass."""
    hw, eager = pred.hw, pred.eager
    td = stem.token_dims
    l0 = stem.hw0[0] * stem.hw0[1]
    l1 = stem.hw1[0] * stem.hw1[1]
    l2 = stem.num_patches
    c0 = stem.in_channels * 49
    split0 = float(batch * c0 * l0)
    if eager and hw.max_tile_batch == 1:  # the token-major split
        h, w = stem.in_hw
        ops = [token_stream_latency(hw, 'pad0', float(
                   batch * stem.in_channels * (h + 4) * (w + 4)), 1, 1),
               token_stream_latency(hw, 'soft_split0', split0, 1, 1)]
    else:
        ops = [token_stream_latency(hw, 'soft_split0', split0, 1, 1)]
        if eager:
            ops.append(token_stream_latency(hw, 'soft_split0_rows', split0,
                                            1, 1))
    for i, (l_in, l_out) in enumerate(((l0, l1), (l1, l2)), 1):
        ops += transformer_ops(hw, batch, l_in, c0 if i == 1 else td * 9,
                               td, 1, td, td, eager, prefix=f't2t{i}.',
                               fused_attention=True)
        split = float(batch * td * 9 * l_out)
        if eager:
            ops.append(token_stream_latency(hw, f'to_map{i}', float(
                batch * td * l_in), 1, 1))
        ops.append(token_stream_latency(hw, f'soft_split{i}', split, 1, 1))
        if eager:
            ops.append(token_stream_latency(hw, f'soft_split{i}_rows',
                                            split, 1, 1))
    ops.append(linear_tokens_latency(hw, 'project', batch, l2, td * 9,
                                     stem.embed_dims))
    ops.append(token_stream_latency(hw, 'cls_pos_embed', float(
        batch * (l2 + 1) * stem.embed_dims), 2, 1))
    return ops


#: operator-name categories of :func:`vit_op_breakdown`, first match wins
_CATEGORIES = (('masker', ('masker', 'mask_index')),
               ('gather / scatter', ('gather', 'scatter', 'copy',
                                     'index_select', 'index_copy')),
               ('layernorm', ('ln1', 'ln2')),
               ('qkv', ('qkv',)),
               ('attention (QK^T, softmax, AV)', ('attn_qk', 'softmax',
                                                  'attn_av', 'attn_fused')),
               ('proj', ('proj',)),
               ('mlp (fc1, GELU, fc2)', ('fc1', 'fc2', 'gelu')),
               ('residual add', ('add1', 'add2')))


def vit_op_breakdown(rep) -> 'OrderedDict[str, float]':
    """Milliseconds per operator category, summed over the encoder layers of
    a :class:`~laud_mm.latency.BackboneLatency` (the T2T module: its
    ``stem_ms``, reported as ``'T2T module (dense)'``).

    Returns:
        OrderedDict category -> ms (whole batch), categories of
        :data:`_CATEGORIES` plus ``'other'`` and the T2T module.
    """
    out: Dict[str, float] = OrderedDict((c, 0.) for c, _ in _CATEGORIES)
    out['other'] = 0.
    for ops in rep.block_ops:
        for o in ops:
            for cat, keys in _CATEGORIES:
                if any(o.name == k or o.name.startswith(k) for k in keys):
                    out[cat] += o.ms
                    break
            else:
                out['other'] += o.ms
    out['T2T module (dense)'] = rep.stem_ms
    return out
