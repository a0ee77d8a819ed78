"""Attention arithmetic shared by the LAUD T2T-ViT layer's masked-dense
forward and its dynamic path: the logit divisor mmpretrain really uses,
and the softmax restricted to the kept keys (token skipping).

**Attention scale.** mmpretrain 1.2.0's T2T layers always pass ``qk_scale``
(``(input_dims // num_heads) ** -0.5``), which routes ``MultiheadAttention``
to its Python attention that *divides* the logits by that value (so the
logits are ``q.k * sqrt(head_dims)``). :func:`attention_logit_divisor`
reads the divisor the module really uses, so a LAUD layer computes what
mmpretrain's layer computes with the same weights.

**Fused attention for inference.** The same Python attention materialises
the (N, heads, L, L) logits. In the Tokens-to-Token module's first layer
(L = 3136 tokens at 224 px) that is 315 MB per batch of 8, written and read
by the division, the softmax and two batched GEMMs: on a 2-core CPU about
85 % of the whole backbone's inference time. In the encoder's layers (L =
197) the logits are small, but the batched GEMMs read q, k and v as strided
views of the qkv output: mmpretrain's layer takes about 1.2x the time of the
same layer with fused attention on a 2-core CPU. :func:`fused_attention`
runs those modules' attention as torch's ``scaled_dot_product_attention``
with the same logit divisor (the same function up to float rounding, no
L x L tensor), and :func:`attend` is that kernel for the dynamic paths.

Source: paper sec. 3.2 (token skipping: skipped tokens are neither queries
nor keys), mmpretrain 1.2.0 ``models/utils/attention.py``.
"""
import contextlib
import functools
from typing import Iterator, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.models.utils.attention import \
    scaled_dot_product_attention_pyimpl


def attention_logit_divisor(attn: nn.Module) -> float:
    """The number mmpretrain's ``MultiheadAttention`` divides q.k^T by.

    Args:
        attn: an mmpretrain ``MultiheadAttention``.

    Returns:
        ``scale`` for the Python attention (``partial(
        scaled_dot_product_attention_pyimpl, scale=scale)``, what T2T layers
        use: it divides by ``scale``); ``1 / scale`` for the fused kernel
        :func:`fused_attention` puts in its place; else ``sqrt(head_dims)``
        (PyTorch's ``scaled_dot_product_attention`` multiplies by
        ``head_dims ** -0.5``).
    """
    fn = getattr(attn, 'scaled_dot_product_attention', None)
    if isinstance(fn, functools.partial):
        if fn.func is scaled_dot_product_attention_pyimpl:
            return fn.keywords.get('scale') or attn.head_dims ** 0.5
        if fn.func is F.scaled_dot_product_attention and \
                fn.keywords.get('scale'):  # within :func:`fused_attention`
            return 1.0 / fn.keywords['scale']
    return attn.head_dims ** 0.5


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
           divisor: float) -> torch.Tensor:
    """``softmax(q k^T / divisor) v`` over the last two axes, as torch's
    fused ``scaled_dot_product_attention`` (no L_q x L_k tensor; the
    function of mmpretrain's Python attention up to float rounding).

    Args:
        q: (..., L_q, dh); k, v: (..., L_k, dh) (strided views accepted).
        divisor: :func:`attention_logit_divisor` of the module.

    Returns:
        (..., L_q, dh).

    Source: torch ``scaled_dot_product_attention``; the module doc.
    """
    return F.scaled_dot_product_attention(q, k, v, scale=1.0 / divisor)


def masked_softmax(logits: torch.Tensor,
                   key_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Softmax over the last axis restricted to the kept keys.

    Args:
        logits: (N, H, L_q, L_k) attention logits.
        key_mask: (N, L_k) key gates in {0, 1} (differentiable, e.g. a
            straight-through Gumbel gate), at least one 1 per sample (the
            class token), or None for the plain softmax.

    Returns:
        (N, H, L_q, L_k): ``exp(l - m) * k / sum(exp(l - m) * k)`` with
        ``m`` the largest *kept* logit per row: equal to ``softmax`` over
        the kept keys (0 for skipped keys), and differentiable w.r.t.
        ``key_mask``. Skipped keys' exponents are clamped at 0, so a skipped
        logit above every kept one cannot overflow (its weight is 0 anyway).

    Raises:
        ValueError: if the shapes do not match.
    """
    if key_mask is None:
        return torch.softmax(logits, dim=-1)
    if key_mask.dim() != 2 or key_mask.shape[0] != logits.shape[0] or \
            key_mask.shape[1] != logits.shape[-1]:
        raise ValueError(f'key_mask {tuple(key_mask.shape)} must be (N, L_k) '
                         f'for logits {tuple(logits.shape)}')
    km = key_mask[:, None, None, :].to(logits.dtype)
    top = logits.detach().masked_fill(km == 0, float('-inf')).amax(
        dim=-1, keepdim=True)
    e = torch.exp((logits - top).clamp_max(0.)) * km
    return e / e.sum(dim=-1, keepdim=True)


@contextlib.contextmanager
def fused_attention(attns: Sequence[nn.Module]) -> Iterator[None]:
    """Within the context, every mmpretrain ``MultiheadAttention`` of
    ``attns`` that uses mmpretrain's Python attention runs
    ``F.scaled_dot_product_attention(q, k, v, scale=1 / divisor)``
    instead, ``divisor`` its :func:`attention_logit_divisor`: the same
    softmax(q k^T / divisor) v (float32: within about 1e-6 relative, the
    summation order differs) without materialising the (N, heads, L, L)
    logits. The modules' own function is put back on exit, also on an
    exception; other modules are left alone.

    For inference of the layers whose module stays mmpretrain's (the
    LAUD-T2T-ViT's Tokens-to-Token module, and the encoder layers where
    the dynamic path runs mmpretrain's forward); the attention dropout is
    passed on unchanged (0 in eval).

    Args:
        attns: mmpretrain ``MultiheadAttention`` modules.

    Source: torch ``scaled_dot_product_attention`` (fused CPU / flash CUDA
    kernels); the module doc ("Fused attention for inference").
    """
    saved = []
    try:
        for a in attns:
            fn = a.__dict__.get('scaled_dot_product_attention')
            if isinstance(fn, functools.partial) and \
                    fn.func is scaled_dot_product_attention_pyimpl:
                saved.append((a, fn))
                a.scaled_dot_product_attention = functools.partial(
                    F.scaled_dot_product_attention,
                    scale=1.0 / attention_logit_divisor(a))
        yield
    finally:
        for a, fn in saved:
            a.scaled_dot_product_attention = fn
