"""The inference gate of a layer or channel masker in one call.

A layer masker is ``Linear(C, 2)`` on the block input's channel means, a
channel masker ``Linear(C, h) - ReLU - Linear(h, 2 n_groups)``; at
inference a gate is on where its keep logit is at least its skip logit
(paper sec. 3.2). That is microseconds of arithmetic, but as torch
operators it is five to eight dispatcher calls, and on several threads
each linear layer wakes the sleeping thread pool of torch's BLAS: host
time that a block pays between its large kernels
(docs/benchmark_history.md, fourteenth round). :func:`masker_gate` computes it
on the calling thread in one compiled call
(``csrc/cpu/masker_gate_cpu.cpp``) where :func:`fast_masker_gate` allows,
else with :func:`masker_gate_reference` (the same operators as the
masker modules in training).

Source: paper sec. 3.2 (maskers, the inference gate) and sec. 3.4
(scheduling).
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from . import policy
from .dispatch import extension, is_autocast, use_kernels

#: index of the keep / skip logit in each (keep, skip) pair (as
#: ``laud_mm.models.layers.gates``)
_KEEP, _SKIP = 0, 1


def fast_masker_gate(pooled: torch.Tensor, *params: torch.Tensor) -> bool:
    """Whether :func:`masker_gate` runs the compiled kernel for these
    tensors: the extension is built and not disabled
    (``LAUD_MM_OPS_BACKEND``), every tensor is float32 on the CPU, autocast
    is off (autocast runs the linear layers in its dtype, as in training),
    no gradient is needed (the kernel has no backward), and the dynamic
    paths do not run their CUDA logic on CPU tensors
    (``policy.DEVICE_PATH_ON_CPU``: a GPU has no such kernel, its masker
    runs the reference's operators).

    Args:
        pooled: (N, C) masker input; params: the linear layers' weights and
            biases.

    Returns:
        True where the compiled kernel runs. Source: paper sec. 3.4
        (scheduling of the dynamic operators).
    """
    tensors = (pooled,) + params
    # (Tensor.is_cpu: no torch.device object per tensor; this runs once per
    # block on the dynamic path)
    if not all(t.is_cpu and t.dtype == torch.float32 for t in tensors):
        return False
    if extension() is None or not use_kernels(pooled) or \
            is_autocast(pooled) or policy.DEVICE_PATH_ON_CPU:
        return False
    return not (torch.is_grad_enabled() and
                any(t.requires_grad for t in tensors))


def masker_gate(pooled: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor,
                w2: Optional[torch.Tensor] = None,
                b2: Optional[torch.Tensor] = None
                ) -> Tuple[torch.Tensor, torch.Tensor]:
    """A masker's logits and inference gate (paper sec. 3.2).

    Without ``w2`` (a layer masker): ``logits = pooled w1^T + b1``; with it
    (a channel masker): ``logits = relu(pooled w1^T + b1) w2^T + b2``. The
    logits are (keep, skip) pairs; gate g is 1 where ``logits[:, 2g] >=
    logits[:, 2g + 1]`` (a NaN gives 0), else 0.

    The compiled kernel (:func:`fast_masker_gate`) runs on the calling
    thread, 16 partial sums per dot product in a fixed order: the same
    bits at every thread count, equal to the reference up to float
    rounding (the BLAS sums in another order; a gate can differ only where
    its two logits tie to rounding).

    Args:
        pooled: (N, C) the masker's input (the block input's channel means).
        w1: (H, C); b1: (H,).
        w2: (O, H) or None; b2: (O,) or None (given together).

    Returns:
        (gate (N, O / 2), logits (N, O)), float, O = H without ``w2``.

    Raises:
        ValueError: shapes that do not chain, w2 without b2 (or the
            reverse), or an odd number of outputs (names the argument).
    """
    for name, t in (('pooled', pooled), ('w1', w1), ('b1', b1)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f'{name} must be a tensor, got {t!r} (a masker '
                             f'layer without a bias has no gate offsets)')
    if pooled.dim() != 2 or w1.dim() != 2 or w1.shape[1] != pooled.shape[1] \
            or tuple(b1.shape) != (w1.shape[0],):
        raise ValueError(f'pooled (N, C) {tuple(pooled.shape)}, w1 (H, C) '
                         f'{tuple(w1.shape)} and b1 (H,) {tuple(b1.shape)} '
                         f'do not match')
    if (w2 is None) != (b2 is None):
        raise ValueError('w2 and b2 must be given together (a channel '
                         'masker) or both be None (a layer masker)')
    if w2 is not None and (w2.dim() != 2 or w2.shape[1] != w1.shape[0] or
                           tuple(b2.shape) != (w2.shape[0],)):
        raise ValueError(f'w2 (O, H) {tuple(w2.shape)} and b2 (O,) '
                         f'{tuple(b2.shape)} do not follow w1 (H, C) '
                         f'{tuple(w1.shape)}')
    out = w1.shape[0] if w2 is None else w2.shape[0]
    if out % 2 or out == 0:
        raise ValueError(f'the last layer has {out} outputs: it needs '
                         f'(keep, skip) pairs, an even, positive number')
    if fast_masker_gate(pooled, w1, b1, *(() if w2 is None else (w2, b2))):
        return _masker_gate(pooled, w1, b1, w2, b2)
    return masker_gate_reference(pooled, w1, b1, w2, b2)


def _masker_gate(pooled, w1, b1, w2=None, b2=None):
    """:func:`masker_gate`'s compiled call without its argument checks
    (internal: for callers that checked :func:`fast_masker_gate`, as the
    maskers' inference path does once per block)."""
    return extension().masker_gate(
        _contiguous(pooled), _contiguous(w1), _contiguous(b1),
        None if w2 is None else _contiguous(w2),
        None if b2 is None else _contiguous(b2))


def _contiguous(t: torch.Tensor) -> torch.Tensor:
    """t, or a contiguous copy (``Tensor.contiguous`` dispatches an
    operator even when t already is)."""
    return t if t.is_contiguous() else t.contiguous()


def masker_gate_reference(pooled: torch.Tensor, w1: torch.Tensor,
                          b1: torch.Tensor,
                          w2: Optional[torch.Tensor] = None,
                          b2: Optional[torch.Tensor] = None
                          ) -> Tuple[torch.Tensor, torch.Tensor]:
    """PyTorch reference of :func:`masker_gate`: the same logits and gate
    with torch's operators (any device and dtype, autograd through the
    logits; the gate is the inference decision, as
    ``laud_mm.models.layers.gates.gumbel_gate`` in eval).

    Args:
        pooled: (N, C); w1: (H, C); b1: (H,); w2: (O, H) or None; b2: (O,)
            or None.

    Returns:
        (gate (N, O / 2), logits (N, O)).

    Raises:
        RuntimeError: shapes that do not chain (``F.linear``) or an odd
            number of outputs (the pair view); :func:`masker_gate` checks
            these first and raises ValueError.

    Source: paper sec. 3.2 (keep if logit_keep >= logit_skip at inference).
    """
    logits = F.linear(pooled, w1, b1)
    if w2 is not None:
        logits = F.linear(F.relu(logits), w2, b2)
    pairs = logits.view(logits.shape[0], logits.shape[1] // 2, 2)
    gate = (pairs[..., _KEEP] >= pairs[..., _SKIP]).to(logits.dtype)
    return gate, logits
