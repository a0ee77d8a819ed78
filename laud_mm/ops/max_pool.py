"""The ResNet stem's 3x3 / 2 max-pool at inference, on oneDNN's kernel.

PyTorch's CPU ``max_pool2d`` on a contiguous NCHW tensor runs a generic
loop that also computes the argmax indices: on the stem output of a batch
of 8 images at 224 px (8 x 64 x 112 x 112 fp32) it takes 48 - 49 ms on
one thread here, 6 % of the whole static ResNet-50, while oneDNN's pooling
primitive takes 5.7 - 6.2 ms including the conversions to and from its
tensor format (``tools/analysis_tools/benchmark_kernels.py``, 'max_pool'
row). The pooled values are the same: a max is exact in any order, and both
exclude the padding.

It is not part of the dynamic computation: the static and the dynamic
backbone share the stem, so this changes their latency by the same
milliseconds (:class:`MaxPool2d` is the stem pool of ``LAUDResNet``; the
benchmark's BN-folded stem calls :func:`max_pool2d`).

Source: engineering of the paper's sec. 4 latency measurements (the stem
is part of the backbone's measured latency); oneDNN pooling primitive.
"""
from typing import Union

import torch
import torch.nn as nn
import torch.nn.functional as F

_Int2 = Union[int, tuple]


def _pair(v: _Int2, key: str) -> list:
    out = list(v) if isinstance(v, (tuple, list)) else [v, v]
    if len(out) != 2 or not all(isinstance(i, int) and i >= 0 for i in out):
        raise ValueError(f'{key}={v!r} must be a non-negative int or a pair '
                         f'of them')
    return out


def uses_onednn(x: torch.Tensor) -> bool:
    """Whether :func:`max_pool2d` runs oneDNN's kernel for ``x``: a
    contiguous 4-D fp32 CPU tensor that needs no gradient, with PyTorch
    built with oneDNN (``torch.backends.mkldnn.is_available()``)."""
    return (x.device.type == 'cpu' and x.dtype == torch.float32
            and x.dim() == 4 and x.is_contiguous()
            and not (x.requires_grad and torch.is_grad_enabled())
            and torch.backends.mkldnn.is_available())


def max_pool2d(x: torch.Tensor, kernel_size: _Int2, stride: _Int2,
               padding: _Int2 = 0) -> torch.Tensor:
    """``F.max_pool2d(x, kernel_size, stride, padding)`` (no dilation, floor
    mode), on oneDNN's pooling kernel where :func:`uses_onednn` holds.

    Args:
        x: (N, C, H, W) feature map.
        kernel_size, stride, padding: int or (h, w) pair, pixels.

    Returns:
        (N, C, H_out, W_out) contiguous, equal to ``F.max_pool2d`` (NaN
        inputs excepted: oneDNN does not propagate NaN).

    Raises:
        ValueError: a kernel_size / stride / padding that is not a
            non-negative int or pair, or padding above half the kernel
            (PyTorch's own rule).
    """
    k = _pair(kernel_size, 'kernel_size')
    s = _pair(stride, 'stride')
    p = _pair(padding, 'padding')
    if any(pi > ki // 2 for pi, ki in zip(p, k)):
        raise ValueError(f'padding={padding!r} must be at most half of '
                         f'kernel_size={kernel_size!r}')
    if not uses_onednn(x):
        return F.max_pool2d(x, k, s, p)
    return torch.mkldnn_max_pool2d(x.to_mkldnn(), k, s, p).to_dense()


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` whose inference runs :func:`max_pool2d` (same
    values, no parameters: checkpoints are unaffected). Training, dilation,
    ceil mode and ``return_indices`` use ``nn.MaxPool2d`` itself.

    Shapes: (N, C, H, W) -> (N, C, H_out, W_out).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.training or self.return_indices or self.ceil_mode
                or self.dilation not in (1, (1, 1))):
            return super().forward(x)
        return max_pool2d(x, self.kernel_size, self.stride, self.padding)
