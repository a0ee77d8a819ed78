"""Per-sample weights of the kept channels (channel skipping).

A channel-skipping bottleneck keeps, per sample, its own set of k channel
indices ``chs[n]`` (padded to a common k with the index of an all-zero
padding channel, see ``laud_mm.models.resnet.dynamic``). conv2 then maps kept to
kept channels: one grouped convolution whose group n uses
``weight[chs[n, i], chs[n, j]]``. :func:`gather_kept_weights` builds those
weights with the compiled kernel (``csrc/cpu/channel_weights_cpu.cpp``,
``csrc/cuda/channel_weights_cuda.cu``), 3.8-7x faster on CPU than
PyTorch's advanced indexing (``tools/analysis_tools/benchmark_kernels.py``),
which :func:`gather_kept_weights_reference` uses.

Source: paper sec. 3.2 (channel skipping: a group of G channels is a unit
of the gate) and sec. 3.4 (scheduling of the dynamic operators).
"""
import torch

from .cuda_ops import cuda_op
from .dispatch import extension, use_cuda_kernels, use_kernels


def gather_kept_weights(weight: torch.Tensor, chs: torch.Tensor
                        ) -> torch.Tensor:
    """``weight[chs[n, i], chs[n, j]]`` for every sample n.

    Args:
        weight: (C_out, C_in, kh, kw) conv weight (the compiled kernel
            for fp32 / fp64, and on CUDA fp16 / bf16 too; other dtypes the
            reference).
        chs: (N, k) int64 kept channel indices per sample, each in
            [0, min(C_out, C_in)).

    Returns:
        (N, k, k, kh, kw) per-sample weights (a grouped conv of k -> k
        channels per sample after ``.view(N * k, k, kh, kw)``).

    Raises:
        ValueError: weight not 4-D, chs not a 2-D int64 tensor on the same
            device, or an index out of range (names the argument).
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        raise ValueError(f'weight must be a 4-D (C_out, C_in, kh, kw) tensor, '
                         f'got {tuple(getattr(weight, "shape", ()))}')
    if not isinstance(chs, torch.Tensor) or chs.dim() != 2 or \
            chs.dtype != torch.int64:
        raise ValueError(f'chs must be an int64 (N, k) tensor, got '
                         f'{getattr(chs, "dtype", type(chs))} '
                         f'{tuple(getattr(chs, "shape", ()))}')
    if chs.device != weight.device:
        raise ValueError(f'chs on {chs.device}, weight on {weight.device}')
    limit = min(weight.shape[0], weight.shape[1])
    if chs.numel() and (int(chs.min()) < 0 or int(chs.max()) >= limit):
        raise ValueError(f'chs has indices outside [0, {limit}): '
                         f'[{int(chs.min())}, {int(chs.max())}]')
    return _gather_kept(weight, chs)


def _gather_kept(weight: torch.Tensor, chs: torch.Tensor) -> torch.Tensor:
    """:func:`gather_kept_weights` without argument checks (internal)."""
    if use_cuda_kernels(weight):
        return cuda_op('gather_kept_weights')(weight.contiguous(),
                                              chs.contiguous())
    if use_kernels(weight) and weight.dtype in (torch.float32, torch.float64) \
            and hasattr(extension(), 'gather_kept_weights'):
        return extension().gather_kept_weights(weight.contiguous(),
                                               chs.contiguous())
    return gather_kept_weights_reference(weight, chs)


def gather_kept_weights_reference(weight: torch.Tensor, chs: torch.Tensor
                                  ) -> torch.Tensor:
    """Pure-PyTorch :func:`gather_kept_weights` (same arguments and result)."""
    return weight[chs[:, :, None], chs[:, None, :]]
