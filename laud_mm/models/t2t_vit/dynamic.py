"""Dynamic inference of LAUD T2T-ViT encoder layers: compute only what the
gates keep.

:func:`dynamic_t2t_layer_forward` returns the same function as the
masked-dense eval layer (``LAUDT2TLayer.masked_dense``, defined in
:mod:`laud_mm.models.t2t_vit.block`), up to float rounding (max abs diff <= 1e-4
in fp32, tested), while skipping the masked work:

- spatial (token skipping): the kept tokens of the whole batch (class token
  always, then the patch tokens whose gate is on) are gathered by index into
  one packed (T, D) matrix - no padding - and ln1, qkv, proj, ln2 and the FFN
  run on it as single GEMMs. The attention (torch's fused kernel,
  :func:`~laud_mm.models.t2t_vit.attention.attend`) runs per sample over
  its kept tokens only (queries and keys): one batched call when every
  sample keeps the same number of tokens, else one call per sample. The
  results are written back by index into a copy of the input; skipped
  tokens pass through unchanged (they are their own residual).
- channel (head skipping): the samples are grouped by their kept-head
  count; per group, each sample's kept heads' rows of the qkv weight and
  the matching input columns of proj are gathered (head-major copies of
  the weights, cached: :func:`head_weights`) and q, k, v, the attention
  and proj run on the kept heads only, as batched GEMMs over the group's
  samples (``proj.bias`` is added once, so a sample with every head off
  adds just the bias). ln1, the residual adds, ln2 and the FFN are dense.
- layer: the layer (mmpretrain's own forward) runs only for the samples
  whose gate is on; the others pass through unchanged. All gates on: the
  static layer for the whole batch; all off: the input itself.

A layer whose gates are all on runs mmpretrain's ``T2TTransformerLayer``
forward (bit for bit the static layer).

Source: paper sec. 3.2 ("spatial-wise dynamic computation can be efficiently
executed through token indexing and selection") and "Experiments on vision
Transformers" (token / head / layer skipping after AdaViT).
"""
from typing import Tuple

import torch
import torch.nn as nn
from mmpretrain.models.backbones.t2t_vit import T2TTransformerLayer

from ...ops import policy
from ...structures.geometry import TokenLayerGeometry
from ..layers.dynamic import run_dynamic_path, sample_gate
from ..layers.folding import cached_fold
from .attention import attend, attention_logit_divisor

#: the CUDA variant of each paradigm's path (device-side indices, one
#: deferred host read per block): filled in by :mod:`.dynamic_cuda`, which
#: the package imports
CUDA_PATHS: dict = {}


def static_t2t_layer_forward(layer: nn.Module, x: torch.Tensor
                             ) -> torch.Tensor:
    """mmpretrain's ``T2TTransformerLayer.forward`` of ``layer`` (the dense
    static layer, masker ignored): (N, L, D) -> (N, L, D)."""
    return T2TTransformerLayer.forward(layer, x)


def dynamic_t2t_layer_forward(layer: nn.Module, x: torch.Tensor,
                              geom: TokenLayerGeometry
                              ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Dynamic (skip-the-work) forward of a
    :class:`~laud_mm.models.t2t_vit.block.LAUDT2TLayer` (the transformer
    counterpart of :func:`laud_mm.models.layers.dynamic.run_dynamic_path`).

    Args:
        layer: the layer (eval mode, paradigm set).
        x: (N, L, D) tokens, the class token first.
        geom: ``layer.geometry(L)``.

    Returns:
        (out, gate): out (N, L, D), equal up to float rounding to
        ``layer.masked_dense(x, gate)``; gate as the masker returns it in
        eval (spatial (N, L - extra), channel (N, H), layer (N,)), honouring
        ``masker.forced_gate``.

    Raises:
        ValueError: a layer in training mode, x not (N, L, D), or a layer
            without a paradigm.
    """
    if policy.device_path(x):  # CUDA (or its logic on CPU, tests)
        paths = CUDA_PATHS
    else:
        paths = dict(spatial=_tokens, channel=_heads, layer=_layer)
    return run_dynamic_path(layer, x, geom, paths, rank=3)


# ---------------------------------------------------------------- tokens
def packed_attention(qkv: torch.Tensor, counts: torch.Tensor, num_heads: int,
                     divisor: float) -> torch.Tensor:
    """Self-attention of packed variable-length token sequences.

    Args:
        qkv: (T, 3 * D) q, k, v of the kept tokens of every sample, sample
            after sample (T = counts.sum()).
        counts: (N,) kept tokens per sample (each >= 1).
        num_heads: H.
        divisor: the logit divisor (:func:`attention_logit_divisor`).

    Returns:
        (T, D) attention output (heads concatenated), each sample attending
        to its own tokens only: one batched call if every count is equal,
        else one call per sample (no padding).
    """
    t, d3 = qkv.shape
    d = d3 // 3
    dh = d // num_heads
    cl = counts.tolist()
    if min(cl) == max(cl):
        n, k = len(cl), cl[0]
        q, kk, v = qkv.view(n, k, 3, num_heads, dh).permute(2, 0, 3, 1, 4)
        return attend(q, kk, v, divisor).transpose(1, 2).reshape(t, d)
    outs = []
    for part in torch.split(qkv, cl):
        q, kk, v = part.view(-1, 3, num_heads, dh).permute(1, 2, 0, 3)
        outs.append(attend(q, kk, v, divisor).transpose(0, 1)
                    .reshape(-1, d))
    return torch.cat(outs, 0)


def _tokens(layer, x, geom):
    n, L, D = x.shape
    e = geom.num_extra_tokens
    gate = sample_gate(layer, x)
    keep = torch.cat([torch.ones(n, e, dtype=torch.bool, device=x.device),
                      gate > 0.5], 1)
    if bool(keep.all()):
        return static_t2t_layer_forward(layer, x), gate
    attn = layer.attn
    flat = keep.reshape(-1).nonzero()[:, 0]  # sample-major token indices
    xf = x.reshape(n * L, D)
    xs = xf.index_select(0, flat)  # (T, D) kept tokens, packed
    qkv = attn.qkv(layer.ln1(xs))
    o = packed_attention(qkv, keep.sum(1), attn.num_heads,
                         attention_logit_divisor(attn))
    xs = xs + attn.out_drop(attn.gamma1(attn.proj_drop(attn.proj(o))))
    xs = xs + layer.ffn_branch(layer.ln2(xs))
    out = xf.clone().index_copy_(0, flat, xs)
    return out.view(n, L, D), gate


# ----------------------------------------------------------------- heads
class HeadWeights:
    """The attention weights of one layer in head-major order (detached,
    contiguous), so that a sample's kept heads are whole rows of one
    gather.

    Attributes:
        qkv: (H, 3 * dh, D) each head's q, k, v rows of ``qkv.weight``.
        qkv_bias: (H, 3 * dh) or None.
        proj: (H, dh, D) each head's input columns of ``proj.weight``,
            transposed.

    Source: paper sec. 3.2 (head skipping computes the kept heads only).
    """

    def __init__(self, attn: nn.Module):
        nh, dh = attn.num_heads, attn.head_dims
        d_in = attn.qkv.weight.shape[1]
        self.qkv = attn.qkv.weight.detach().view(3, nh, dh, d_in).transpose(
            0, 1).reshape(nh, 3 * dh, d_in)
        b = attn.qkv.bias
        self.qkv_bias = None if b is None else b.detach().view(
            3, nh, dh).transpose(0, 1).reshape(nh, 3 * dh)
        self.proj = attn.proj.weight.detach().view(-1, nh, dh).permute(
            1, 2, 0).contiguous()


def head_weights(attn: nn.Module) -> HeadWeights:
    """:class:`HeadWeights` of an attention module, cached on it and rebuilt
    when a weight changes (:func:`~laud_mm.models.layers.folding.
    cached_fold`; dropped by ``clear_folds``). Source: paper sec. 3.2."""
    return cached_fold(attn, HeadWeights, '_laud_head_weights')


def _heads(layer, x, geom):
    n, L, D = x.shape
    attn = layer.attn
    dh = attn.head_dims
    gate = sample_gate(layer, x)
    keep = gate > 0.5
    if bool(keep.all()):
        return static_t2t_layer_forward(layer, x), gate
    h = layer.ln1(x)
    hw = head_weights(attn)
    bp = attn.proj.bias
    div = attention_logit_divisor(attn)
    # samples grouped by their kept-head count (at most H + 1 groups; one
    # when the counts are equal): per group one gather of the kept heads'
    # weights and batched GEMMs over its samples, so that the work splits
    # over the intra-op threads by sample
    counts = keep.sum(1)
    order = torch.argsort(counts, stable=True)
    sizes = torch.bincount(counts, minlength=attn.num_heads + 1).tolist()
    a = torch.empty_like(x)
    start = 0
    for kh, size in enumerate(sizes):
        if not size:
            continue
        samples = order[start:start + size]
        start += size
        if kh == 0:  # every head off: proj of zeros
            y = x.new_zeros(size, L, D) if bp is None else \
                bp.expand(size, L, D)
        else:
            heads = keep.index_select(0, samples).nonzero()[:, 1]
            hs = h if size == n else h.index_select(0, samples)
            # whole (3 dh, D) blocks per head: advanced indexing copies
            # rows this large faster than index_select on a CPU
            w = hw.qkv[heads].view(size, kh * 3 * dh, -1)
            if hw.qkv_bias is None:
                qkv = torch.bmm(hs, w.transpose(1, 2))
            else:
                b = hw.qkv_bias.index_select(0, heads).view(size, 1, -1)
                qkv = torch.baddbmm(b, hs, w.transpose(1, 2))
            q, k, v = qkv.view(size, L, kh, 3, dh).permute(3, 0, 2, 1, 4)
            o = attend(q, k, v, div).transpose(1, 2).reshape(
                size, L, kh * dh)
            wp = hw.proj[heads].view(size, kh * dh, D)
            y = torch.bmm(o, wp) if bp is None else \
                torch.baddbmm(bp.view(1, 1, D), o, wp)
        # under autocast the GEMMs run in the low-precision dtype, the bias
        # alone (every head off) and the residual stream in float32
        a.index_copy_(0, samples, y.to(a.dtype))
    x = x + attn.out_drop(attn.gamma1(attn.proj_drop(a)))
    return x + layer.ffn_branch(layer.ln2(x)), gate


# ----------------------------------------------------------------- layer
def _layer(layer, x, geom):
    gate = sample_gate(layer, x)
    on = gate > 0.5
    n_on = int(on.sum())
    if n_on == x.shape[0]:
        return static_t2t_layer_forward(layer, x), gate
    if n_on == 0:
        return x, gate
    samples = on.nonzero()[:, 0]
    res = static_t2t_layer_forward(layer, x.index_select(0, samples))
    return x.clone().index_copy_(0, samples, res), gate
