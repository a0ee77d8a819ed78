"""How the fused CPU kernels split their work over threads, computed without
running them: the per-thread work of the plan the kernel itself builds for
a mask, a block geometry and a thread count (``csrc/cpu/partition.h``,
called through the extension, so the figures are the kernel's own
partition, not a re-implementation of it).

Each kernel runs in phases separated by barriers (spatial: conv1 at the
dilated mask; conv2 + conv3 + the add at the active pixels. channel:
conv1; conv2 + conv3 + the add); a phase's pixels are cut into one
contiguous range per thread of near-equal cost. The layer path runs the
spatial kernel with a patch per kept sample on AVX-512 CPUs
(``policy.LAYER_FUSED_CPU``); elsewhere its GEMMs
(:func:`laud_mm.ops.sample_gemm`) cut the kept samples' columns likewise
(:func:`sample_gemm_partition`). A block's time is bounded
by the sum over its phases of the busiest thread's work, so
:func:`imbalance` = sum of the phases' maxima / sum of their means (1 =
perfect balance, T = one of T threads does everything).

Source: LAUDNet paper sec. 3.4 (scheduling of the dynamic operators);
docs/benchmarks.md, "Load balance beyond two cores".
"""
from typing import Sequence

import torch

from .dispatch import extension


def _ext():
    ext = extension()
    if ext is None or not hasattr(ext, 'spatial_partition_work'):
        raise RuntimeError('the partition of the fused kernels is computed '
                           'by laud_mm._ext, which is not built (pip '
                           'install --no-build-isolation -e .)')
    return ext


def _check_threads(threads: int) -> None:
    if isinstance(threads, bool) or not isinstance(threads, int) or \
            threads < 1:
        raise ValueError(f'threads={threads!r} must be an integer >= 1')


def spatial_partition_work(idx: torch.Tensor, n: int, c_in: int,
                           hw: Sequence[int], width: int, c_out: int,
                           s: int, stride: int, dilation: int,
                           threads: int) -> torch.Tensor:
    """Per-thread MACs of :func:`laud_mm.ops.spatial_branch_add_relu` for
    ``threads`` threads.

    Args:
        idx: (P, 3) int64 active patches (sample, patch row, patch column),
            sorted by sample (``nonzero()`` of the gate).
        n: batch size; c_in: input channels; hw: (H, W) input map.
        width, c_out: bottleneck width and output channels.
        s, stride, dilation: granularity S and conv2's stride / dilation.
        threads: threads of the partition (>= 1).

    Returns:
        (2, threads) float64: row 0 the conv1 MACs of each thread (phase 1,
        C_in x width per input pixel of the dilated mask), row 1 the conv2
        + conv3 MACs (phase 2, 9 width^2 + width C_out per active output
        pixel).

    Raises:
        ValueError: ``threads`` < 1 or not an int.
        RuntimeError: the extension is not built, or idx outside the patch
            grid / not sorted by sample (the kernel's own check).
    """
    _check_threads(threads)
    return _ext().spatial_partition_work(
        idx.contiguous(), int(n), int(c_in), int(hw[0]), int(hw[1]),
        int(width), int(c_out), int(s), int(stride), int(dilation), threads)


def channel_partition_work(chs: torch.Tensor, counts: torch.Tensor,
                           c_in: int, hw: Sequence[int], width: int,
                           c_out: int, stride: int, padding: int,
                           dilation: int, threads: int) -> torch.Tensor:
    """Per-thread cost of :func:`laud_mm.ops.channel_branch_add_relu` for
    ``threads`` threads.

    Args:
        chs: (N, k) int64 kept channels per sample (ascending; entries from
            ``counts[n]`` on ignored); counts: (N,) int64.
        c_in: input channels; hw: (H, W) input map; width, c_out: the
            bottleneck's; stride, padding, dilation: conv2's.
        threads: threads of the partition (>= 1).

    Returns:
        (3, threads) float64 MAC-equivalents, the costs the partition
        balances: row 0 conv1 (phase 1), row 1 conv2 + conv3 + the
        epilogue (phase 2), row 2 zeros; where the kernel splits columns
        (fewer samples than threads, conv1's input at most
        ``policy.CHANNEL_BLOCKED_MAX_IN_PIXELS`` and conv2's output at most
        ``policy.CHANNEL_COLUMN_MAX_OUT_PIXELS`` pixels,
        ``policy.CHANNEL_COLUMN_UNITS`` units of 16 kept columns per
        thread) row 1 conv2 alone and row 2 conv3 +
        the epilogue (a third phase), the same totals.

    Raises:
        ValueError: ``threads`` < 1 or not an int.
        RuntimeError: the extension is not built, or counts / chs out of
            range (the kernel's own check).
    """
    _check_threads(threads)
    return _ext().channel_partition_work(
        chs.contiguous(), counts.contiguous(), int(c_in), int(hw[0]),
        int(hw[1]), int(width), int(c_out), int(stride), int(padding),
        int(dilation), threads)


def sample_gemm_partition(n: int, p: int, threads: int) -> torch.Tensor:
    """Columns each thread runs in :func:`laud_mm.ops.sample_gemm` (the
    layer path's conv1 / conv3 of n kept samples of P pixels).

    Returns:
        (threads,) int64, summing to n P.

    Raises:
        ValueError: ``threads`` < 1; RuntimeError: no extension.
    """
    _check_threads(threads)
    return _ext().sample_gemm_partition(int(n), int(p), threads)


def imbalance(work: torch.Tensor) -> float:
    """Sum over the phases (rows) of the busiest thread's work, divided by
    the sum of their mean work per thread: the factor by which the kernel's
    time exceeds a perfectly balanced run (1.0 when every phase is split
    evenly; 1.0 for no work).

    Args:
        work: (phases, threads) per-thread work, e.g. from
            :func:`spatial_partition_work`.
    """
    if work.dim() != 2 or work.shape[1] < 1:
        raise ValueError(f'work must be (phases, threads), got '
                         f'{tuple(work.shape)}')
    mean = float(work.mean(1).sum())
    return float(work.max(1).values.sum()) / mean if mean > 0 else 1.0
