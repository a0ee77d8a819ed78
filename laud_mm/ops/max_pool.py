"""The ResNet stem's 3x3 / 2 max-pool at inference, on this project's
compiled kernel (``csrc/cpu/max_pool_cpu.cpp``), else oneDNN's.

PyTorch's CPU ``max_pool2d`` on a contiguous NCHW tensor runs a generic
loop that also computes the argmax indices, and oneDNN's pooling primitive
needs conversions to and from its blocked format, which grow with the map.
Process CPU time at one thread (``tools/analysis_tools/benchmark_kernels.py
--only max_pool --threads 1``, docs/benchmarks.md): on the stem output of
a batch of 8 images at 224 px (8 x 64 x 112 x 112 fp32) 50.8 ms, 6.1 ms
(oneDNN) and 2.3 ms (the compiled kernel); for one 800 x 1216 image
(1 x 64 x 400 x 608) 124.4, 24.4 and 4.0 ms. The compiled kernel takes the
max over each window's rows, then picks every second column with
two-source permutes (AVX-512), reading the map once. The pooled values are
the same (of a tie between +0 and -0 either may be kept): a max is exact
in any order, and all three exclude the padding; the compiled kernel also
keeps NaN as PyTorch does (oneDNN does not).

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

from .dispatch import extension, use_kernels

_Int2 = Union[int, tuple]


def _pair(v: _Int2, key: str) -> list:
    out = list(v) if isinstance(v, (tuple, list)) else [v, v]
    if len(out) != 2 or not all(isinstance(i, int) and i >= 0 for i in out):
        raise ValueError(f'{key}={v!r} must be a non-negative int or a pair '
                         f'of them')
    return out


def _inference_input(x: torch.Tensor) -> bool:
    """A contiguous 4-D fp32 CPU tensor that needs no gradient."""
    return (x.device.type == 'cpu' and x.dtype == torch.float32
            and x.dim() == 4 and x.is_contiguous()
            and not (x.requires_grad and torch.is_grad_enabled()))


def uses_kernel(x: torch.Tensor) -> bool:
    """Whether :func:`max_pool2d` runs the compiled kernel for ``x``: a
    contiguous 4-D fp32 CPU tensor that needs no gradient, the extension
    built and the backend not forced to 'pytorch'
    (:func:`laud_mm.ops.use_backend`)."""
    ext = extension()
    return (_inference_input(x) and ext is not None
            and hasattr(ext, 'max_pool2d') and use_kernels(x))


def uses_onednn(x: torch.Tensor) -> bool:
    """Whether :func:`max_pool2d` runs oneDNN's kernel for ``x``: not the
    compiled kernel (:func:`uses_kernel`), and ``x`` a contiguous 4-D fp32
    CPU tensor that needs no gradient with PyTorch built with oneDNN
    (``torch.backends.mkldnn.is_available()``)."""
    return (not uses_kernel(x) and _inference_input(x)
            and torch.backends.mkldnn.is_available())


def max_pool2d(x: torch.Tensor, kernel_size: _Int2, stride: _Int2,
               padding: _Int2 = 0) -> torch.Tensor:
    """``F.max_pool2d(x, kernel_size, stride, padding)`` (no dilation, floor
    mode), on the compiled kernel where :func:`uses_kernel` holds, else on
    oneDNN's where :func:`uses_onednn` holds, else ``F.max_pool2d``.

    Args:
        x: (N, C, H, W) feature map.
        kernel_size, stride, padding: int or (h, w) pair, pixels.

    Returns:
        (N, C, H_out, W_out) contiguous, equal to ``F.max_pool2d`` (on
        oneDNN's kernel NaN inputs excepted: it does not propagate NaN).

    Raises:
        ValueError: a kernel_size / stride / padding that is not a
            non-negative int or pair, a zero kernel_size or stride, or
            padding above half the kernel (PyTorch's own rule), by key.
        RuntimeError: an empty map or a padded map smaller than the kernel
            (from the compiled kernel, or from ``F.max_pool2d``).
    """
    k = _pair(kernel_size, 'kernel_size')
    s = _pair(stride, 'stride')
    p = _pair(padding, 'padding')
    for key, v, given in (('kernel_size', k, kernel_size),
                          ('stride', s, stride)):
        if 0 in v:
            raise ValueError(f'{key}={given!r} must be positive')
    if any(pi > ki // 2 for pi, ki in zip(p, k)):
        raise ValueError(f'padding={padding!r} must be at most half of '
                         f'kernel_size={kernel_size!r}')
    if uses_kernel(x):
        return extension().max_pool2d(x, k[0], k[1], s[0], s[1], p[0], p[1])
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
