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

Source: paper sec. 3.1 (spatial masker), sec. 3.4 (operator fusion).
"""
from typing import Optional, Tuple

import torch

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
