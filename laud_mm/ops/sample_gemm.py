"""1x1 convolutions of some samples of a batch, in place (CPU kernel): the
GEMMs of a layer-skipping block's kept samples.

For j < n, with ``o = out[rows_out[j]]`` (M x P) and ``a = x[rows_x[j]]``
(K x P)::

    o = epi(o + bias + w a)     if accumulate   (conv3 into the shortcut)
    o = epi(bias + w a)         otherwise       (conv1 into its buffer)

``epi`` is the ReLU when ``relu``. :func:`sample_gemm` runs it with the
compiled kernel (``csrc/cpu/sample_gemm_cpu.cpp``: the n P columns split
over torch's threads, one single-threaded GEMM per piece, the kept rows
read and written in place) instead of a torch.addmm per sample, each of
which threads one small GEMM and waits for it;
:func:`sample_gemm_reference` is one batched GEMM over copies of the rows
(what other devices run: an operation per batch, not per sample).

Source: paper sec. 3.2 (layer skipping), sec. 3.4 (scheduling).
"""
from typing import Optional

import torch

from .dispatch import check_float32_cpu, extension, use_kernels


def sample_gemm(out: torch.Tensor, w: torch.Tensor, x: torch.Tensor,
                rows_x: torch.Tensor, rows_out: torch.Tensor,
                bias: Optional[torch.Tensor] = None, accumulate: bool = False,
                relu: bool = False) -> torch.Tensor:
    """The GEMMs of the listed samples, written into ``out`` (module
    docstring).

    Args:
        out: (N_o, M, P) float32, contiguous; rows ``rows_out`` written.
        w: (M, K) weights; x: (N_x, K, P) inputs, contiguous.
        rows_x, rows_out: (n,) int64 rows of x read / of out written.
        bias: (M,) or None.
        accumulate: add into out's rows (else overwrite them).
        relu: ReLU on the written rows.

    Returns:
        ``out``.

    Raises:
        ValueError: a dtype, device, shape or row index that does not
            match (names the argument).
    """
    check_float32_cpu(dict(out=out, w=w, x=x) if bias is None else
                      dict(out=out, w=w, x=x, bias=bias))
    if out.dim() != 3 or x.dim() != 3 or w.dim() != 2 or \
            out.shape[1] != w.shape[0] or x.shape[1] != w.shape[1] or \
            out.shape[2] != x.shape[2]:
        raise ValueError(f'out (N_o, M, P) {tuple(out.shape)}, w (M, K) '
                         f'{tuple(w.shape)} and x (N_x, K, P) '
                         f'{tuple(x.shape)} do not match')
    if bias is not None and tuple(bias.shape) != (w.shape[0],):
        raise ValueError(f'bias must be ({w.shape[0]},), got '
                         f'{tuple(bias.shape)}')
    for k, v, lim in (('rows_x', rows_x, x.shape[0]),
                      ('rows_out', rows_out, out.shape[0])):
        if not isinstance(v, torch.Tensor) or v.dtype != torch.int64 or \
                v.dim() != 1 or v.shape != rows_x.shape:
            raise ValueError(f'{k} must be an int64 (n,) tensor like rows_x, '
                             f'got {getattr(v, "dtype", type(v))} '
                             f'{tuple(getattr(v, "shape", ()))}')
        if v.numel() and (int(v.min()) < 0 or int(v.max()) >= lim):
            raise ValueError(f'{k} must lie in [0, {lim}), got '
                             f'[{int(v.min())}, {int(v.max())}]')
    return _sample_gemm(out, w, x, rows_x, rows_out, bias, accumulate, relu)


def _sample_gemm(out, w, x, rows_x, rows_out, bias=None, accumulate=False,
                 relu=False):
    """:func:`sample_gemm` without argument checks (internal): the compiled
    kernel when built and every tensor is contiguous, else the
    reference."""
    ext = extension()
    if ext is not None and hasattr(ext, 'sample_gemm') and \
            out.device.type == 'cpu' and use_kernels(out) and \
            out.dtype == w.dtype == x.dtype == torch.float32 and \
            out.is_contiguous() and \
            w.is_contiguous() and x.is_contiguous() and \
            (bias is None or bias.is_contiguous()):
        ext.sample_gemm(out, w, x, rows_x.contiguous(),
                        rows_out.contiguous(), bias, accumulate, relu)
        return out
    return sample_gemm_reference(out, w, x, rows_x, rows_out, bias,
                                 accumulate, relu)


def sample_gemm_reference(out, w, x, rows_x, rows_out, bias=None,
                          accumulate=False, relu=False) -> torch.Tensor:
    """Pure-PyTorch :func:`sample_gemm` (same arguments and result up to
    float rounding; no argument checks), on any device: one batched GEMM
    over the rows (a launch per operation for the whole batch, not per
    sample, on a GPU), the rows read with ``index_select`` and written back
    with ``index_copy_``."""
    y = torch.matmul(w, x.index_select(0, rows_x))  # (n, M, P)
    if accumulate:
        base = out.index_select(0, rows_out)
        if bias is not None:
            base = base + bias[:, None]
        y = base.add_(y)
    elif bias is not None:
        y = y.add_(bias[:, None])
    if relu:
        y = y.relu_()
    return out.index_copy_(0, rows_out, y.to(out.dtype))
