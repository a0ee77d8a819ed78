"""The next block's spatial masker logits, handed on by a block that
computes its output densely.

A spatial block's masker reads its whole input once for the keep - skip
logit difference on the patch grid (paper sec. 3.1,
:func:`laud_mm.ops.spatial_logit_pool`), a read the static network does
not make. A block whose epilogue writes every output value (the dense
block of a spatial block with every patch on) can compute the next block's
logits in that pass (:func:`laud_mm.ops.add_relu_logit_pool_`, bit-equal
to the masker's own computation) and record them on its output
(:func:`record_spatial_logit`); the next block takes them from there
(:func:`recorded_spatial_logit`) instead of reading the tensor again. The
producer learns its successor from
:func:`~laud_mm.models.layers.dynamic.next_block`.

A record is only used while it fits: the tensor's version counter (an
in-place write through torch bumps it), the very weight tensor the
consumer's masker uses (its folded keep - skip row, so a refolded block
never takes a stale record), the bias and the patch grid; it is ignored
when gradients are needed. Under ``torch.inference_mode`` tensors keep no
version counter, so nothing is recorded there (the same rule as
:mod:`~laud_mm.models.layers.channel_mean`). The compiled kernels write
into a block's input without bumping the counter, so the consumer clears
the record once it has used it (:func:`clear_spatial_logit`), before it
may write into the tensor.

The families' spatial paths share the three steps around the record: the
plan's decision whether a block hands off (:func:`spatial_handoff`), the
producer's epilogue (:func:`dense_epilogue`) and the consumer's gate
(:func:`spatial_gate`).

Source: paper sec. 3.1 (spatial masker), sec. 3.4 (operator fusion).
"""
from typing import Callable, Optional, Tuple

import torch
import torch.nn as nn

from ...ops import policy
from ...ops.dispatch import same_layout
from ...ops.spatial_logit import (_add_relu_logit_pool_, _spatial_logit_pool,
                                  fast_add_relu_logit_pool)
from .dynamic import forced_gate, residual_add_relu_
from .maskers import write_forced_gate

_ATTR = '_laud_spatial_logit'


def record_spatial_logit(x: torch.Tensor, w: torch.Tensor, b: float,
                         grid: Tuple[int, int], logit: torch.Tensor) -> None:
    """Record the next block's spatial masker logits on x (valid while x
    is not modified in place). Nothing is recorded on inference tensors.
    The caller guarantees that ``logit`` is x's (no check: this runs on
    the dynamic path).

    Args:
        x: (N, C, H, W) block output.
        w: (C,) the next masker's keep - skip weights (kept by identity).
        b: its bias difference.
        grid: (gh, gw) its patch grid.
        logit: (N, gh, gw) the logit pool of x with w, b on grid
            (:func:`laud_mm.ops.spatial_logit_pool`).
    """
    if not x.is_inference():
        setattr(x, _ATTR, (x._version, w, float(b),
                           (int(grid[0]), int(grid[1])), logit))


def recorded_spatial_logit(x: torch.Tensor, w: torch.Tensor, b: float,
                           grid: Tuple[int, int]) -> Optional[torch.Tensor]:
    """The logits recorded on x for this masker when still valid, else None.

    Args:
        x: (N, C, H, W) block input.
        w: (C,) the consumer's keep - skip weights (the same tensor object
            the producer used); b: its bias difference.
        grid: (gh, gw) the consumer's patch grid.

    Returns:
        the (N, gh, gw) logits recorded on x when x is unchanged since
        (same version counter), recorded for ``w`` itself, ``b`` and
        ``grid``, with x's batch and dtype, and no gradient is needed;
        else None.
    """
    rec = getattr(x, _ATTR, None)
    if rec is None or x.is_inference() or rec[0] != x._version or \
            rec[1] is not w or rec[2] != float(b) or \
            rec[3] != (int(grid[0]), int(grid[1])) or \
            (torch.is_grad_enabled() and x.requires_grad):
        return None
    logit = rec[4]
    if logit.shape[0] != x.shape[0] or logit.dtype != x.dtype:
        return None
    return logit


def clear_spatial_logit(x: torch.Tensor) -> None:
    """Drop the record on x (N, C, H, W), if any: its consumer has used it
    and may now write into x through a kernel that does not bump the
    version counter."""
    if getattr(x, _ATTR, None) is not None:
        setattr(x, _ATTR, None)


#: a per-call plan's hand-off, decided when the dense epilogue needs it
HANDOFF_AT_USE = object()


def spatial_handoff(block: nn.Module, nxt: Optional[nn.Module],
                    fold_of: Callable, like: torch.Tensor, c_out: int,
                    out_hw: Tuple[int, int]):
    """Whether ``block``'s dense epilogue computes the next block's masker
    logits (:func:`dense_epilogue`): ``policy.SPATIAL_LOGIT_HANDOFF`` on,
    ``nxt`` a spatial block of ``block``'s class, not under
    ``torch.inference_mode`` (its tensors take no record), the compiled
    one-pass epilogue running for ``like``'s dtype and device
    (:func:`laud_mm.ops.fast_add_relu_logit_pool`), and ``nxt``'s fold
    holding a keep - skip row of ``c_out`` weights in ``like``'s dtype
    and on its device.

    Args:
        block: the producer, a LAUD block; nxt: the block that runs next
            on its output (:func:`~.dynamic.next_block`), or None.
        fold_of: ``fold_of(nxt)`` -> nxt's BN-folded weights (with
            ``logit_w`` (C,) and ``logit_b``), or None where it has none;
            called only when the other conditions hold.
        like: a tensor with the block input's dtype and device.
        c_out: the producer's output channels.
        out_hw: the producer's output size (H, W), the next block's input.

    Returns:
        (nxt's fold, its patch grid (gh, gw)), or None. Raises nothing
        itself. Source: paper sec. 3.1 (spatial masker), sec. 3.4
        (operator fusion across a block boundary).
    """
    if not policy.SPATIAL_LOGIT_HANDOFF or nxt is None or \
            type(nxt) is not type(block) or \
            getattr(nxt, 'paradigm', None) != 'spatial' or \
            torch.is_inference_mode_enabled() or \
            not fast_add_relu_logit_pool(like, layout=False):
        return None
    fn = fold_of(nxt)
    if fn is None or fn.logit_w.shape != (c_out,) or \
            fn.logit_w.device != like.device or \
            fn.logit_w.dtype != like.dtype:
        return None
    return fn, nxt.geometry(out_hw).patch_grid


def dense_epilogue(y: torch.Tensor, identity: torch.Tensor,
                   handoff) -> torch.Tensor:
    """``relu(y + identity)`` of a spatial block computed densely
    (:func:`~.dynamic.residual_add_relu_`); with a hand-off
    (:func:`spatial_handoff`) and the compiled one-pass kernel running (y
    and identity of one dtype, both contiguous or both channels_last, y
    not an inference tensor), in one pass with the next block's masker
    logits, which it records on the output for :func:`spatial_gate`
    (:func:`laud_mm.ops.add_relu_logit_pool_`; the next block then skips
    its read of the output).

    Args:
        y: (N, C, H, W) the block's branch output, masked where patches
            are off (written in place when it can hold the result);
            identity: the shortcut, same shape.
        handoff: (the next block's fold, its patch grid (gh, gw)), or None.

    Returns:
        (N, C, H, W) the block output. Source: paper sec. 3.1, sec. 3.4
        (operator fusion).
    """
    if handoff is None or y is identity or y.is_inference() or \
            identity.dtype != y.dtype or not same_layout(y, identity):
        return residual_add_relu_(y, identity)
    fn, grid = handoff
    logit = _add_relu_logit_pool_(y, identity, fn.logit_w, fn.logit_b, grid)
    record_spatial_logit(y, fn.logit_w, fn.logit_b, grid, logit)
    return y


def spatial_gate(fb, masker: nn.Module, x: torch.Tensor,
                 shape: Tuple[int, int, int]) -> torch.Tensor:
    """Eval gate (N, gh, gw) of a spatial block from its masker's keep -
    skip logit difference as a one-channel 1x1 conv of x (``fb.logit_w``,
    ``fb.logit_b``), average-pooled to the patch grid, in one pass over x
    (:func:`laud_mm.ops.spatial_logit_pool`; under autocast, on other
    devices or dtypes its reference, a GEMV or convolution and a pool):
    the masker's pool -> 1x1 conv by linearity, 5 - 60x cheaper than
    pooling all C_in channels first
    (``tools/analysis_tools/benchmark_kernels.py --only masker``), or the
    logits the previous block computed in its epilogue and recorded on x
    (:func:`dense_epilogue`, bit-equal). A forced gate (tests, benchmarks)
    replaces the decision, not the cost: the logits are still computed.
    Source: paper sec. 3.1 (spatial masker).

    Args:
        fb: the block's folded weights (``logit_w`` (C_in,), ``logit_b``
            a float); masker: its ``SpatialMasker``.
        x: (N, C_in, H, W) block input.
        shape: (N, gh, gw) patch grid.

    Returns:
        (N, gh, gw) gate of x's dtype (1 = keep).

    Raises:
        ValueError: a forced gate of the wrong shape (the masker's check).
    """
    diff = recorded_spatial_logit(x, fb.logit_w, fb.logit_b, shape[1:])
    if diff is None:
        diff = _spatial_logit_pool(x, fb.logit_w, fb.logit_b, shape[1:])
    else:  # used once: this block may write into x without torch seeing it
        clear_spatial_logit(x)
    forced = masker.forced_gate
    if diff.dtype != x.dtype:  # (a reference's logits under autocast)
        return (diff >= 0).to(x.dtype) if forced is None else \
            forced_gate(masker, shape, x)
    # the logits are this call's own tensor (computed here, or a record
    # used once and cleared above): the decision or the forced gate
    # written into it, one operator
    if forced is None:
        return diff.ge_(0)
    if write_forced_gate(diff, forced):
        return diff
    return forced_gate(masker, shape, x)  # (its shape error)
