"""1x1 convolutions of some samples of a batch, in place (CPU kernel): the
GEMMs of a layer-skipping block's kept samples.

For j < n, with ``o = out[rows_out[j]]`` (M x P) and ``a = x[rows_x[j]]``
(K x P)::

    o = epi(o + bias + w a)     if accumulate   (conv3 into the shortcut)
    o = epi(bias + w a)         otherwise       (conv1 into its buffer)

``epi`` is the ReLU when ``relu``. With ``sums`` given, ``sums[j]`` gets
the sum over P of each row of the new ``o`` (M,), taken in the epilogue
pass: a layer block's output channel sums for the next block's masker
(:mod:`laud_mm.models.layers.channel_mean`). :func:`sample_gemm` runs it with the
compiled kernel (``csrc/cpu/sample_gemm_cpu.cpp``: the n P columns split
over torch's threads, one single-threaded GEMM per piece, the kept rows
read and written in place) instead of a torch.addmm per sample, each of
which threads one small GEMM and waits for it. A piece's GEMM is oneDNN's
matmul where torch exports it (``_ext.sample_gemm_backend()``:
``'onednn'``; the library of the static network's convolutions, faster
than MKL's GEMM on AMD CPUs) when torch computes float32 exactly there
(:func:`onednn_fp32_exact`), else torch's BLAS;
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
                relu: bool = False, sums: Optional[torch.Tensor] = None
                ) -> torch.Tensor:
    """The GEMMs of the listed samples, written into ``out`` (module
    docstring).

    Args:
        out: (N_o, M, P) float32, contiguous; rows ``rows_out`` written.
        w: (M, K) weights; x: (N_x, K, P) inputs, contiguous.
        rows_x, rows_out: (n,) int64 rows of x read / of out written.
        bias: (M,) or None.
        accumulate: add into out's rows (else overwrite them).
        relu: ReLU on the written rows.
        sums: (n, M) float32 contiguous, or None: filled with the sum over
            P of each written row (after the ReLU). The kernel adds each
            thread's partial sums in thread order: equal to a torch sum up
            to fp32 rounding, identical across calls at one thread count.

    Returns:
        ``out``.

    Raises:
        ValueError: a dtype, device, shape or row index that does not
            match (names the argument).
    """
    tensors = dict(out=out, w=w, x=x, bias=bias, sums=sums)
    check_float32_cpu({k: v for k, v in tensors.items() if v is not None})
    if out.dim() != 3 or x.dim() != 3 or w.dim() != 2 or \
            out.shape[1] != w.shape[0] or x.shape[1] != w.shape[1] or \
            out.shape[2] != x.shape[2]:
        raise ValueError(f'out (N_o, M, P) {tuple(out.shape)}, w (M, K) '
                         f'{tuple(w.shape)} and x (N_x, K, P) '
                         f'{tuple(x.shape)} do not match')
    if bias is not None and tuple(bias.shape) != (w.shape[0],):
        raise ValueError(f'bias must be ({w.shape[0]},), got '
                         f'{tuple(bias.shape)}')
    if sums is not None and (tuple(sums.shape) != (rows_x.numel(),
                                                   w.shape[0]) or
                             not sums.is_contiguous()):
        raise ValueError(f'sums must be a contiguous (n, M) = '
                         f'({rows_x.numel()}, {w.shape[0]}) tensor, got '
                         f'{tuple(sums.shape)}')
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
    return _sample_gemm(out, w, x, rows_x, rows_out, bias, accumulate, relu,
                        sums)


def _sample_gemm(out, w, x, rows_x, rows_out, bias=None, accumulate=False,
                 relu=False, sums=None):
    """:func:`sample_gemm` without argument checks (internal): the compiled
    kernel when built and every tensor is contiguous, else the
    reference."""
    ext = extension()
    if ext is not None and hasattr(ext, 'sample_gemm') and \
            out.device.type == 'cpu' and use_kernels(out) and \
            out.dtype == w.dtype == x.dtype == torch.float32 and \
            out.is_contiguous() and \
            w.is_contiguous() and x.is_contiguous() and \
            (bias is None or bias.is_contiguous()) and \
            (sums is None or sums.is_contiguous()):
        ext.sample_gemm(out, w, x, rows_x.contiguous(),
                        rows_out.contiguous(), bias, accumulate, relu, sums,
                        not onednn_fp32_exact())
        return out
    return sample_gemm_reference(out, w, x, rows_x, rows_out, bias,
                                 accumulate, relu, sums)


def onednn_fp32_exact() -> bool:
    """Whether torch lets oneDNN run float32 matmuls in float32: its
    oneDNN enabled (``torch.backends.mkldnn.enabled``), float32 matmul
    precision ``'highest'`` and no reduced oneDNN float32 precision
    (``torch.backends.mkldnn[.matmul].fp32_precision`` 'none' or 'ieee',
    where torch has them). Otherwise torch's oneDNN matmul would compute
    in bfloat16 / TF32, and :func:`sample_gemm`'s pieces use the BLAS.

    Returns:
        True when the compiled kernel may use oneDNN's matmul (reads
        torch's settings at each call, about 2 us). Source: paper sec. 3.4
        (the dynamic operators use the static network's libraries).
    """
    mk = torch.backends.mkldnn
    if not (mk.is_available() and mk.enabled) or \
            torch.get_float32_matmul_precision() != 'highest':
        return False
    for owner in (mk, getattr(mk, 'matmul', None)):
        if getattr(owner, 'fp32_precision', 'none') not in ('none', 'ieee'):
            return False
    return True


def sample_gemm_reference(out, w, x, rows_x, rows_out, bias=None,
                          accumulate=False, relu=False, sums=None
                          ) -> torch.Tensor:
    """Pure-PyTorch :func:`sample_gemm` (same arguments and result up to
    float rounding; no argument checks), on any device: one batched GEMM
    over the rows (a launch per operation for the whole batch, not per
    sample, on a GPU), the rows read with ``index_select`` and written back
    with ``index_copy_``; ``sums`` from a torch sum of the written
    rows."""
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
    y = y.to(out.dtype)
    if sums is not None:
        sums.copy_(y.sum(dim=2))
    return out.index_copy_(0, rows_out, y)
