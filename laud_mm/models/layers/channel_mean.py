"""The channel means of a block's output, handed to the next block's masker.

The layer and channel maskers start with a global average pool of their
input (paper sec. 3.2), a read of the whole block input that the static
network does not make. A dynamic block whose epilogue already holds its
output values (:func:`laud_mm.ops.add_relu_mean_`) records their means on
the output tensor (:func:`record_channel_mean`); the next block's masker
takes them from there (:func:`channel_mean`) instead of reading the tensor
again. A record is only used while the tensor is unchanged: it carries the
tensor's version counter (any in-place write bumps it), its shape and
dtype, and is ignored when gradients are needed.

Source: paper sec. 3.2 (masker inputs), sec. 3.4 (operator fusion).
"""
import torch

_ATTR = '_laud_channel_mean'


def record_channel_mean(x: torch.Tensor, mean: torch.Tensor) -> None:
    """Record ``mean`` (N, C), the mean of x (N, C, H, W) over H x W, on x
    for the next masker (valid while x is not modified in place)."""
    setattr(x, _ATTR, (x._version, mean))


def channel_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of x (N, C, H, W) over H x W: the recorded one when valid
    (x unchanged since, same shape, no gradient needed), else computed.

    Returns:
        (N, C) tensor (the computed one in autograd when x requires grad).
    """
    rec = getattr(x, _ATTR, None)
    if rec is not None and rec[0] == x._version and \
            not (torch.is_grad_enabled() and x.requires_grad):
        mean = rec[1]
        if mean.shape == x.shape[:2] and mean.dtype == x.dtype:
            return mean
    return x.mean(dim=(2, 3))
