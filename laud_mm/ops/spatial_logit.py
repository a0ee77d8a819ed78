"""The spatial masker's eval input to its decision: the keep - skip logit
difference on the patch grid, from the block input in one pass.

For x (N, C, H, W), weights w (C,) and bias b (the masker's 1x1 conv reduced
to the keep - skip difference)::

    out[n, i, j] = b + mean over cell (i, j) of sum_c w[c] x[n, c]

with ``F.adaptive_avg_pool2d``'s cells on the (gh, gw) grid: by linearity
the masker module's pool -> 1x1 conv, up to float rounding.
:func:`spatial_logit_pool` runs it with the compiled kernel
(``csrc/cpu/spatial_logit_cpu.cpp``: each sample's channels streamed in
address order into an accumulator that stays in cache, then pooled; the
samples, or bands of cell rows when the batch is small, split over torch's
threads; AVX-512 FMAs where available) instead of a GEMV of the weight row
with x followed by a pool of the logit map, which reads x at a fraction of
the memory bandwidth (``tools/analysis_tools/benchmark_kernels.py --only
masker``). :func:`spatial_logit_pool_reference` is that GEMV and pool (any
device).

:func:`add_relu_logit_pool_` is a residual block's epilogue
``out = relu(out + identity)`` that returns the logits of the new ``out``
for the next block's spatial masker in the same pass (bit-equal to
:func:`spatial_logit_pool` of it): a block computed densely hands them on
(:mod:`laud_mm.models.layers.spatial_logit_record`) and the next block
skips its own read of x. :func:`add_relu_logit_pool_reference` is
``add_``, ``relu_`` and the reference pool.

Source: paper sec. 3.1 (spatial masker), sec. 3.4 ("Fusing the masker and
the first convolution": the masker's cost is part of every spatial block's
latency; "Fusing scatter and add").
"""
from typing import Tuple

import torch
import torch.nn.functional as F

from .dispatch import (check_float32_cpu, extension, is_autocast,
                       is_channels_last, same_layout, use_kernels)
from .epilogue import check_epilogue_args


def _check_grid(grid: Tuple[int, int], hw: Tuple[int, int]
                ) -> Tuple[int, int]:
    gh, gw = (int(v) for v in grid)
    if not (1 <= gh <= hw[0] and 1 <= gw <= hw[1]):
        raise ValueError(f'grid={tuple(grid)} must lie in [1, (H, W) = '
                         f'{tuple(hw)}]')
    return gh, gw


def _check_weights(w: torch.Tensor, c: int) -> None:
    if tuple(w.shape) != (c,):
        raise ValueError(f'w must be (C,) = ({c},), got {tuple(w.shape)}')


def spatial_logit_pool(x: torch.Tensor, w: torch.Tensor, b: float,
                       grid: Tuple[int, int]) -> torch.Tensor:
    """The keep - skip logit difference on the patch grid (module
    docstring), with argument checks.

    Args:
        x: (N, C, H, W) float32 CPU block input.
        w: (C,) float32 weights (keep row - skip row of the masker's conv).
        b: the bias difference.
        grid: (gh, gw) patch grid, 1 <= gh <= H, 1 <= gw <= W.

    Returns:
        (N, gh, gw) float32 logit differences (keep where >= 0).

    Raises:
        ValueError: a tensor that is not float32 on the CPU, x not 4-D, w
            not (C,), or a grid outside [1, (H, W)] (names the argument).
    """
    check_float32_cpu(dict(x=x, w=w))
    if x.dim() != 4:
        raise ValueError(f'x must be (N, C, H, W), got {tuple(x.shape)}')
    _check_weights(w, x.shape[1])
    return _spatial_logit_pool(x, w, float(b), _check_grid(grid, x.shape[2:]))


def _spatial_logit_pool(x: torch.Tensor, w: torch.Tensor, b: float,
                        grid: Tuple[int, int]) -> torch.Tensor:
    """:func:`spatial_logit_pool` without argument checks (internal): the
    compiled kernel when built and x (contiguous or channels_last), w
    (contiguous) are float32 CPU tensors outside autocast, else the
    reference (any device, dtype, autocast)."""
    ext = extension()
    if ext is not None and hasattr(ext, 'spatial_logit_pool') and \
            x.device.type == 'cpu' and use_kernels(x) and \
            not is_autocast(x) and \
            x.dtype == w.dtype == torch.float32 and \
            (x.is_contiguous() or is_channels_last(x)) and \
            w.is_contiguous():
        return ext.spatial_logit_pool(x, w, b, grid[0], grid[1])
    return spatial_logit_pool_reference(x, w, b, grid)


def spatial_logit_pool_reference(x: torch.Tensor, w: torch.Tensor, b: float,
                                 grid: Tuple[int, int]) -> torch.Tensor:
    """Pure-PyTorch :func:`spatial_logit_pool` (same arguments and result up
    to float rounding; no argument checks), on any device and dtype: the
    one-channel 1x1 convolution as a GEMV over the channels (a convolution
    with one output channel runs 7 - 10x slower in oneDNN with 2 threads
    than with 1; of its pixel rows for a channels_last x), then
    ``F.adaptive_avg_pool2d``; under autocast (or for another layout) the
    convolution itself, which autocast runs in the
    masked-dense masker's precision."""
    n, c, h, wd = x.shape
    if x.is_contiguous() and not is_autocast(x):
        y = torch.matmul(w.view(1, c).to(x.dtype), x.view(n, c, h * wd))
        y = y.add_(b).view(n, 1, h, wd)
    elif is_channels_last(x) and not is_autocast(x):  # (N, H, W, C) rows
        y = torch.matmul(x.permute(0, 2, 3, 1), w.to(x.dtype))
        y = y.add_(b).unsqueeze(1)
    else:
        y = F.conv2d(x, w.view(1, c, 1, 1).to(x.dtype),
                     x.new_full((1,), b))
    return F.adaptive_avg_pool2d(y, tuple(grid))[:, 0]


def add_relu_logit_pool_(out: torch.Tensor, identity: torch.Tensor,
                         w: torch.Tensor, b: float, grid: Tuple[int, int]
                         ) -> torch.Tensor:
    """``out = relu(out + identity)`` in place; returns
    :func:`spatial_logit_pool` of the new ``out`` (bit-equal with the
    compiled kernels), in one pass over out, with argument checks.

    Args:
        out: (N, C, H, W) float32 CPU residual branch output, written in
            place.
        identity: (N, C, H, W) float32 CPU shortcut, another tensor.
        w: (C,) float32 keep - skip weights of the next block's spatial
            masker; b: its bias difference.
        grid: (gh, gw) the next block's patch grid, 1 <= gh <= H,
            1 <= gw <= W.

    Returns:
        (N, gh, gw) float32 logit differences of the new ``out``.

    ``out`` and ``identity`` both contiguous or both channels_last run
    the compiled kernel, other layouts the reference
    (:func:`add_relu_logit_pool_reference`).

    Raises:
        ValueError: a tensor that is not float32 on the CPU, shapes that
            are not (N, C, H, W) or differ, ``identity`` being ``out``, w
            not (C,), or a grid outside [1, (H, W)] (names the argument).
        RuntimeError: from the kernel, ``out`` and ``identity`` partially
            overlapping in memory, or no channels (C = 0).
    """
    check_epilogue_args(out, identity, w=w)
    _check_weights(w, out.shape[1])
    return _add_relu_logit_pool_(out, identity, w, float(b),
                                 _check_grid(grid, out.shape[2:]))


def fast_add_relu_logit_pool(out: torch.Tensor, layout: bool = True
                             ) -> bool:
    """Whether :func:`add_relu_logit_pool_` runs the compiled one-pass
    kernel for an output like ``out`` (a contiguous or channels_last
    float32 CPU tensor outside autocast, the kernel built and the backend
    not forced to 'pytorch'); elsewhere it runs the reference, a second
    read of the output, which a dense block should not pay for its
    successor.

    Args:
        out: the (N, C, H, W) block output to be, or (``layout=False``)
            any tensor of its dtype and device.
        layout: also require ``out`` contiguous or channels_last; False:
            dtype, device,
            autocast and backend only (a decision made before the output
            exists, its layout checked when it does).

    Returns:
        True where the kernel runs. Source: paper sec. 3.4 (operator
        fusion).
    """
    return (out.device.type == 'cpu' and out.dtype == torch.float32 and
            (not layout or out.is_contiguous() or is_channels_last(out))
            and not is_autocast(out)
            and use_kernels(out) and
            hasattr(extension(), 'add_relu_logit_pool'))


def _add_relu_logit_pool_(out: torch.Tensor, identity: torch.Tensor,
                          w: torch.Tensor, b: float, grid: Tuple[int, int]
                          ) -> torch.Tensor:
    """:func:`add_relu_logit_pool_` without argument checks (internal): the
    compiled kernel where :func:`fast_add_relu_logit_pool` says it runs
    and identity (in out's layout), w (contiguous) are float32 too, else
    the reference."""
    if fast_add_relu_logit_pool(out) and \
            identity.dtype == w.dtype == torch.float32 and \
            same_layout(out, identity) and w.is_contiguous():
        return extension().add_relu_logit_pool(out, identity, w, b, grid[0],
                                               grid[1])
    return add_relu_logit_pool_reference(out, identity, w, b, grid)


def add_relu_logit_pool_reference(out: torch.Tensor, identity: torch.Tensor,
                                  w: torch.Tensor, b: float,
                                  grid: Tuple[int, int]) -> torch.Tensor:
    """Pure-PyTorch :func:`add_relu_logit_pool_`, on any device and dtype
    (no argument checks): ``add_``, ``relu_``, then
    :func:`spatial_logit_pool_reference` of the new ``out``.

    Args:
        out: (N, C, H, W), written in place; identity: same shape.
        w: (C,) keep - skip weights; b: bias difference; grid: (gh, gw).

    Returns:
        (N, gh, gw) logits, equal to the kernel's up to float rounding.
        Source: paper sec. 3.1 (spatial masker).
    """
    out.add_(identity).relu_()
    return spatial_logit_pool_reference(out, w, b, grid)
