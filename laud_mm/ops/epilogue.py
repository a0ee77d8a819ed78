"""A residual block's epilogue that also pools its output for the next
block's masker: ``out = relu(out + identity)`` in place, and the mean of the
new ``out`` over H x W, in one pass; :func:`relu_mean_rows_` is the same
for some samples of ``out``, with an addend per sample or none (a
layer-skipping block's kept samples add their branch output into their
shortcut rows; the samples a downsampling one skips output
``relu(shortcut)``).

:func:`add_relu_mean_` runs it with the compiled kernel
(``csrc/cpu/epilogue_cpu.cpp``: rows (n, c) over torch's threads, or
chunks of pixels in channels_last, AVX-512 where available, the same
result at any thread count) instead of torch's
``add_`` and ``relu_`` (two passes over the output) followed by the next
layer / channel masker's ``x.mean(dim=(2, 3))`` (a third);
:func:`add_relu_mean_reference` is those three operations (any device and
dtype).

Source: paper sec. 3.2 (the layer and channel maskers pool their input
globally), sec. 3.4 (operator fusion: "Fusing scatter and add").
"""
from typing import Optional

import torch

from .dispatch import (check_float32_cpu, extension, is_channels_last,
                       same_layout, use_kernels)


def add_relu_mean_(out: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
    """``out = relu(out + identity)`` in place; returns the mean of the new
    ``out`` over its last two dimensions, with argument checks.

    Args:
        out: (N, C, H, W) float32 CPU tensor, written in place (NCHW or
            channels_last: the kernel runs both when ``identity`` has the
            same layout, the reference otherwise).
        identity: (N, C, H, W) float32 CPU tensor, another tensor than out.

    Returns:
        (N, C) float32 channel means of the new ``out``.

    Raises:
        ValueError: a tensor that is not float32 on the CPU, shapes that
            are not (N, C, H, W) or differ, or ``identity`` being ``out``
            (names the argument).
    """
    check_epilogue_args(out, identity)
    return _add_relu_mean_(out, identity)


def check_epilogue_args(out: torch.Tensor, identity: torch.Tensor,
                        **others: torch.Tensor) -> None:
    """The argument checks of an in-place residual epilogue
    ``out = relu(out + identity)`` (:func:`add_relu_mean_`,
    :func:`laud_mm.ops.add_relu_logit_pool_`).

    Args:
        out, identity: (N, C, H, W) float32 CPU tensors, two tensors.
        **others: further tensors that must be float32 on the CPU, by
            argument name.

    Raises:
        ValueError: a tensor that is not float32 on the CPU, shapes that
            are not (N, C, H, W) or differ, or ``identity`` being ``out``
            (names the argument).

    Source: paper sec. 3.4 ("Fusing scatter and add").
    """
    check_float32_cpu(dict(out=out, identity=identity, **others))
    if out.dim() != 4 or out.shape != identity.shape:
        raise ValueError(f'out and identity must be (N, C, H, W) of one '
                         f'shape, got {tuple(out.shape)} and '
                         f'{tuple(identity.shape)}')
    if out is identity:
        raise ValueError('identity must be another tensor than out')


def _add_relu_mean_(out: torch.Tensor, identity: torch.Tensor
                    ) -> torch.Tensor:
    """:func:`add_relu_mean_` without argument checks (internal): the
    compiled kernel for float32 CPU tensors both contiguous or both
    channels_last, else the reference."""
    ext = extension()
    if ext is not None and hasattr(ext, 'add_relu_mean') and \
            out.device.type == 'cpu' and use_kernels(out) and \
            out.dtype == identity.dtype == torch.float32 and \
            same_layout(out, identity):
        return ext.add_relu_mean(out, identity)
    return add_relu_mean_reference(out, identity)


def add_relu_mean_reference(out: torch.Tensor, identity: torch.Tensor
                            ) -> torch.Tensor:
    """Pure-PyTorch :func:`add_relu_mean_` (same arguments and result up to
    float rounding; no argument checks): ``add_``, ``relu_``, ``mean``."""
    out.add_(identity).relu_()
    return out.mean(dim=(2, 3))


def relu_mean_rows_(out: torch.Tensor, rows: torch.Tensor,
                    addend: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``out[rows[j]] = relu(out[rows[j]] + addend[j])`` (without
    ``addend``: ``relu(out[rows[j]])``) in place; returns the mean of each
    new ``out[rows[j]]`` over its last two dimensions, with argument
    checks.

    Args:
        out: (N, C, H, W) float32 CPU tensor, written in place.
        rows: (n,) int64 distinct sample indices in [0, N).
        addend: (n, C, H, W) float32 CPU tensor, not a view of out's
            storage, or None (the kernel runs when it has out's memory
            format, the reference otherwise).

    Returns:
        (n, C) float32 channel means of the new samples.

    Raises:
        ValueError: ``out`` or ``addend`` not a float32 CPU tensor of the
            shapes above, ``addend`` a view of ``out``'s storage, or
            ``rows`` not distinct int64 (n,) indices of ``out``'s samples
            (names the argument).

    Source: paper sec. 3.2 (the next masker pools this block's output),
    sec. 3.4 (operator fusion: "Fusing scatter and add").
    """
    check_float32_cpu(dict(out=out))
    if out.dim() != 4:
        raise ValueError(f'out must be (N, C, H, W), got {tuple(out.shape)}')
    if not isinstance(rows, torch.Tensor) or rows.dtype != torch.int64 or \
            rows.dim() != 1:
        raise ValueError(f'rows must be an int64 (n,) tensor, got '
                         f'{getattr(rows, "dtype", type(rows))} '
                         f'{tuple(getattr(rows, "shape", ()))}')
    if rows.numel() and (int(rows.min()) < 0 or
                         int(rows.max()) >= out.shape[0]):
        raise ValueError(f'rows must lie in [0, {out.shape[0]}), got '
                         f'[{int(rows.min())}, {int(rows.max())}]')
    if rows.unique().numel() != rows.numel():
        raise ValueError(f'rows must be distinct, got {rows.tolist()}')
    if addend is not None:
        check_float32_cpu(dict(addend=addend))
        if addend.dim() != 4 or addend.shape[1:] != out.shape[1:] or \
                addend.shape[0] != rows.shape[0]:
            raise ValueError(
                f'addend must be (len(rows), C, H, W) = '
                f'({rows.shape[0]}, {", ".join(map(str, out.shape[1:]))}), '
                f'got {tuple(addend.shape)}')
        if addend.numel() and \
                addend.untyped_storage().data_ptr() == \
                out.untyped_storage().data_ptr():
            raise ValueError('addend must not be a view of out\'s storage '
                             '(it is read while out is written)')
    return _relu_mean_rows_(out, rows, addend)


def _relu_mean_rows_(out: torch.Tensor, rows: torch.Tensor,
                     addend: Optional[torch.Tensor] = None) -> torch.Tensor:
    """:func:`relu_mean_rows_` without argument checks (internal): the
    compiled kernel for a contiguous or channels_last float32 CPU ``out``
    (and an ``addend`` of its dtype and layout), else the reference."""
    ext = extension()
    if ext is not None and hasattr(ext, 'relu_mean_rows') and \
            out.device.type == 'cpu' and use_kernels(out) and \
            out.dtype == torch.float32 and \
            (out.is_contiguous() or is_channels_last(out)) and \
            (addend is None or addend.dtype == torch.float32 and
             addend.device.type == 'cpu' and same_layout(out, addend)):
        return ext.relu_mean_rows(out, rows.contiguous(), addend)
    return relu_mean_rows_reference(out, rows, addend)


def relu_mean_rows_reference(out: torch.Tensor, rows: torch.Tensor,
                             addend: Optional[torch.Tensor] = None
                             ) -> torch.Tensor:
    """Pure-PyTorch :func:`relu_mean_rows_` (same arguments and result up
    to float rounding; no argument checks), any device and dtype: the rows'
    ``add_`` (with ``addend``) and ``relu_`` one sample at a time (in place,
    no copy of the batch), then their ``mean``."""
    means = []
    for j, s in enumerate(rows.tolist()):
        row = out[s] if addend is None else out[s].add_(addend[j])
        means.append(row.relu_().mean(dim=(1, 2)))
    if not means:
        return out.new_empty(0, out.shape[1])
    return torch.stack(means)
