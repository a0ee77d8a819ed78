"""CUDA dynamic inference of LAUD T2T-ViT encoder layers (token, head and
layer skipping).

The same function as the CPU path (:mod:`laud_mm.models.t2t_vit.dynamic`)
and the masked-dense layer (1e-4 relative in fp32), without its per-sample
loops and host waits: device-side index lists
(:func:`laud_mm.ops.indexing.active_index`, ``kept_index``) and one
deferred host read per layer (:class:`~laud_mm.ops.indexing.HostRead`),
the dense work on cuBLAS (``F.linear``, ``torch.baddbmm``) and PyTorch's
fused attention (``F.scaled_dot_product_attention``). The layer's modules
run as they are (autocast applies to them as to the masked-dense layer).

- tokens: the kept tokens of the batch are packed into one (T, D) matrix
  (ln1, qkv, proj, ln2 and the FFN run on it as single GEMMs); the
  attention runs batched over the samples, each padded to the largest kept
  count with its padding keys masked out (every sample attends to its own
  kept tokens only); the results are written back into a copy of the input.
- heads: per sample the kept heads, padded to the largest count with a
  masked-out head: q, k, v from one batched GEMM with per-sample weight
  rows, attention over the kept heads, proj as one batched GEMM with
  per-sample weight columns (padding heads contribute zero); ln1, the
  residuals, ln2 and the FFN dense.
- layer: the layer on the kept samples, copied into their rows.

Source: paper sec. 3.2 and "Experiments on vision Transformers".
"""
import torch
import torch.nn.functional as F

from ...ops.indexing import HostRead, active_index, kept_index
from ..layers.dynamic import sample_gate
from .attention import attention_logit_divisor
from .dynamic import CUDA_PATHS, static_t2t_layer_forward


def tokens(layer, x, geom):
    """CUDA token-skipping path (see the module docstring)."""
    n, L, D = x.shape
    e = geom.num_extra_tokens
    gate = sample_gate(layer, x)
    keep = torch.cat([torch.ones(n, e, dtype=torch.bool, device=x.device),
                      gate > 0.5], 1)
    counts = keep.sum(1)
    idx_all, _, total = active_index(keep)
    l_min, l_max = torch.aminmax(counts)
    t, l_max, l_min = HostRead(total, l_max, l_min).get()
    if l_min == L:
        return static_t2t_layer_forward(layer, x), gate
    attn = layer.attn
    nh = attn.num_heads
    dh = D // nh
    coords = idx_all[:t]  # (T, 2) sample, token: sample-major
    flat = coords[:, 0] * L + coords[:, 1]
    xf = x.reshape(n * L, D)
    xs = xf.index_select(0, flat)  # (T, D) kept tokens, packed
    qkv = attn.qkv(layer.ln1(xs))  # (T, 3 D)
    # packed row of slot j of sample n (padding slots: row 0, masked)
    start = torch.cumsum(counts, 0) - counts
    slot = torch.arange(l_max, device=x.device)
    valid = slot[None] < counts[:, None]  # (N, l_max)
    rowmap = torch.where(valid, start[:, None] + slot[None],
                         torch.zeros_like(valid, dtype=torch.int64))
    q, k, v = qkv.index_select(0, rowmap.reshape(-1)).view(
        n, l_max, 3, nh, dh).permute(2, 0, 3, 1, 4)
    o = F.scaled_dot_product_attention(
        q, k, v, attn_mask=valid[:, None, None, :],
        scale=1.0 / attention_logit_divisor(attn))  # (N, H, l_max, dh)
    o = o.transpose(1, 2).reshape(n * l_max, D)
    # back to the packed order: row r is slot (r - start[n]) of sample n
    back = coords[:, 0] * l_max + (torch.arange(t, device=x.device) -
                                   start.index_select(0, coords[:, 0]))
    o = o.index_select(0, back)
    xs = xs + attn.out_drop(attn.gamma1(attn.proj_drop(attn.proj(o))))
    xs = xs + layer.ffn_branch(layer.ln2(xs))
    out = xf.clone().index_copy_(0, flat, xs.to(xf.dtype))
    return out.view(n, L, D), gate


def heads(layer, x, geom):
    """CUDA head-skipping path (see the module docstring)."""
    n, L, D = x.shape
    attn = layer.attn
    nh, dh = attn.num_heads, attn.head_dims
    gate = sample_gate(layer, x)
    keep = gate > 0.5
    counts = keep.sum(1)
    k_min, k_max = torch.aminmax(counts)  # one operator for both
    k_max, k_min = HostRead(k_max, k_min).get()
    if k_min == nh:
        return static_t2t_layer_forward(layer, x), gate
    h = layer.ln1(x)
    bp = attn.proj.bias
    if k_max == 0:  # every head off everywhere: proj of zeros
        a = x.new_zeros(n, L, D) if bp is None else bp.expand(n, L, D)
    else:
        hs = kept_index(keep, k_max, 0)  # (N, kh), padding: head 0, masked
        valid = (torch.arange(k_max, device=x.device)[None] <
                 counts[:, None])
        wqkv = attn.qkv.weight.view(3, nh, dh, D).transpose(0, 1)
        w = wqkv.index_select(0, hs.reshape(-1)).view(n, k_max, 3, dh, D)
        w = w.transpose(1, 2).reshape(n, 3 * k_max * dh, D)
        if attn.qkv.bias is None:
            qkv = torch.bmm(h, w.transpose(1, 2))
        else:
            b = attn.qkv.bias.view(3, nh, dh).transpose(0, 1).index_select(
                0, hs.reshape(-1)).view(n, k_max, 3, dh).transpose(1, 2)
            qkv = torch.baddbmm(b.reshape(n, 1, -1), h, w.transpose(1, 2))
        q, k, v = qkv.view(n, L, 3, k_max, dh).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(
            q, k, v, scale=1.0 / attention_logit_divisor(attn))
        o = o * valid[:, :, None, None].to(o.dtype)  # padding heads: 0
        o = o.transpose(1, 2).reshape(n, L, k_max * dh)
        wp = attn.proj.weight.view(D, nh, dh).permute(1, 2, 0)  # (H,dh,D)
        wps = wp.index_select(0, hs.reshape(-1)).view(n, k_max * dh, D)
        a = torch.bmm(o, wps.to(o.dtype))
        if bp is not None:
            a = a + bp
    x = x + attn.out_drop(attn.gamma1(attn.proj_drop(a)))
    return x + layer.ffn_branch(layer.ln2(x)), gate


def layer(layer_, x, geom):
    """CUDA layer-skipping path (see the module docstring)."""
    n = x.shape[0]
    gate = sample_gate(layer_, x)
    idx_all, _, count = active_index(gate > 0.5)
    (n_on,) = HostRead(count).get()
    if n_on == n:
        return static_t2t_layer_forward(layer_, x), gate
    if n_on == 0:
        return x, gate
    rows = idx_all[:n_on, 0]
    res = static_t2t_layer_forward(layer_, x.index_select(0, rows))
    return x.clone().index_copy_(0, rows, res.to(x.dtype)), gate


CUDA_PATHS.update(dict(spatial=tokens, channel=heads, layer=layer))
