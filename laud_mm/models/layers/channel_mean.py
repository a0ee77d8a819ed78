"""The channel means of a block's output, handed to the next block's masker.

The layer and channel maskers start with a global average pool of their
input (paper sec. 3.2), a read of the whole block input that the static
network does not make. A dynamic block whose epilogue already holds its
output values (:func:`laud_mm.ops.add_relu_mean_`) records their means on
the output tensor (:func:`record_channel_mean`); the next block's masker
takes them from there (:func:`channel_mean`) instead of reading the tensor
again. A record is only used while the tensor is unchanged: it carries the
tensor's version counter (any in-place write through torch bumps it), its
shape and dtype, and is ignored when gradients are needed. Under
``torch.inference_mode`` tensors keep no version counter, so nothing is
recorded there (``torch.no_grad`` keeps the hand-off). Writes that
bypass torch (through ``tensor.numpy()`` or ``.data``) do not bump the
counter; the tensors that carry records are the backbone's own block
inputs and outputs, which nothing outside it writes.

Producers (ResNet blocks): :func:`laud_mm.models.layers.dynamic.
residual_add_relu_pooled_` (blocks with every gate on), the fused channel
kernel's output pass, and every layer block: for the kept samples the
fused spatial kernel's epilogue (AVX-512 CPUs; its ``sums``), elsewhere
the per-sample GEMM kernel's epilogue
(:func:`laud_mm.ops.sample_gemm` with ``sums``) or the gathered path's
:func:`laud_mm.ops.add_relu_mean_`;
:func:`laud_mm.ops.relu_mean_rows_` for the skipped samples of a copied or
downsampled shortcut, the input's record for those of a block writing into
its input. The masker's own computation records too, so that such a layer
block finds its input's means.

Producers (RegNetY): the folded stem's ReLU pass
(:func:`laud_mm.models.layers.dynamic.relu_pooled_`), the blocks with every
gate on (``residual_add_relu_pooled_``), the channel path's output pass
(``relu_pooled_``), and every layer block: one
:func:`laud_mm.ops.relu_mean_rows_` pass adding the kept samples' branch
into their shortcut rows (its ``addend``), another over the skipped
samples of a copied or downsampled shortcut, the input's record for those
of a block writing into its input.

Source: paper sec. 3.2 (masker inputs), sec. 3.4 (operator fusion).
"""
from typing import Optional

import torch

_ATTR = '_laud_channel_mean'


def record_channel_mean(x: torch.Tensor, mean: torch.Tensor) -> None:
    """Record ``mean`` (N, C), the mean of x (N, C, H, W) over H x W, on x
    for the next masker (valid while x is not modified in place). Inference
    tensors (``torch.inference_mode``) keep no version counter: nothing is
    recorded on them. The caller guarantees that ``mean`` is x's (no check:
    this runs on the dynamic path)."""
    if not x.is_inference():
        setattr(x, _ATTR, (x._version, mean))


def recorded_channel_mean(x: torch.Tensor) -> Optional[torch.Tensor]:
    """The mean recorded on x when still valid, else None.

    Args:
        x: (N, C, H, W) tensor.

    Returns:
        the recorded (N, C) mean of x over H x W when x is unchanged since
        it was recorded (same version counter), the record has x's (N, C)
        shape and dtype, and no gradient is needed; else None.
    """
    rec = getattr(x, _ATTR, None)
    if rec is None or x.is_inference() or rec[0] != x._version or \
            (torch.is_grad_enabled() and x.requires_grad):
        return None
    mean = rec[1]
    if mean.shape != x.shape[:2] or mean.dtype != x.dtype:
        return None
    return mean


def channel_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of x (N, C, H, W) over H x W: the recorded one when valid
    (:func:`recorded_channel_mean`), else computed (and, without autograd,
    recorded: a layer block that writes into its input derives its
    output's means from it).

    Returns:
        (N, C) tensor (the computed one in autograd when x requires grad).
    """
    mean = recorded_channel_mean(x)
    if mean is not None:
        return mean
    mean = x.mean(dim=(2, 3))
    if not (torch.is_grad_enabled() and x.requires_grad):
        record_channel_mean(x, mean)
    return mean
