"""Kept channels moved between compact rows and the columns of a channel
map (channel skipping with grouped convolutions).

LAUD-RegNetY's batched channel path (``laud_mm.models.regnet.dynamic``)
computes conv1 and conv3 for each sample's kept channels only, as batched
GEMMs over compact (N, P, K) tensors (P pixels, K kept-channel slots), but
runs the grouped conv2 over every conv group of an (N, P, W) channel-row
map (NHWC), in which the dropped channels must be exact zeros (as in the
masked-dense block). Two operators move the values between the two:

- :func:`scatter_kept_columns`: conv1's kept values into their columns of
  a zeroed map, with conv1's bias and ReLU applied on the way;
- :func:`gather_kept_columns`: conv2's kept output columns back into
  compact rows for conv3, with conv2's ReLU applied on the way and the
  columns' sums (the SE squeeze) taken in the same pass.

``kept`` is (N, K) int64: per sample its kept channels, distinct,
padded with the index W (a padding slot: nothing is written, 0 is read);
distinctness is the caller's (``channel_kept_lists`` makes such lists) and
is not checked: a repeated channel would be written once per entry, the
last one standing. Both run the compiled kernel
(``csrc/cpu/kept_columns_cpu.cpp``) on float32 CPU tensors (made
contiguous first): one pass over the rows, in order, instead of PyTorch's
zero fill, bias and ReLU passes, its per-element ``scatter_`` / ``gather``
and the squeeze's ``mean``; other dtypes and devices run the PyTorch
reference.

Source: paper sec. 3.2 (channel skipping: a dropped channel's activations
are zero), sec. 3.4 (gather / scatter fused with neighbouring element-wise
operations).
"""
from typing import Optional

import torch

from .dispatch import extension, use_kernels


def _check_kept(kept, n: int, k: Optional[int], width: int,
                device: torch.device) -> None:
    if not isinstance(kept, torch.Tensor) or kept.dtype != torch.int64 or \
            kept.dim() != 2 or kept.shape[0] != n or \
            (k is not None and kept.shape[1] != k):
        want = f'(N, K) = ({n}, {k})' if k is not None else f'(N, K), N = {n}'
        raise ValueError(f'kept must be an int64 {want} tensor, got '
                         f'{getattr(kept, "dtype", type(kept))} '
                         f'{tuple(getattr(kept, "shape", ()))}')
    if kept.device != device:
        raise ValueError(f'kept on {kept.device}, src on {device}')
    if kept.numel() and (int(kept.min()) < 0 or int(kept.max()) > width):
        raise ValueError(f'kept must lie in [0, W = {width}] (W: a padding '
                         f'slot), got [{int(kept.min())}, '
                         f'{int(kept.max())}]')


def _check_relu(relu) -> None:
    if not isinstance(relu, bool):
        raise ValueError(f'relu must be a bool, got {relu!r}')


def scatter_kept_columns(src: torch.Tensor, kept: torch.Tensor, width: int,
                         bias: Optional[torch.Tensor] = None,
                         relu: bool = False) -> torch.Tensor:
    """The kept values ``src`` in their columns of a zeroed channel-row map.

    Args:
        src: (N, P, K) each sample's values of its kept-channel slots.
        kept: (N, K) int64 the slots' channels in [0, W], distinct within
            a row but for the padding index W (slot skipped; distinctness
            not checked, module docstring).
        width: W, the map's channels.
        bias: (W,) added to each kept value by channel, or None.
        relu: ReLU (NaN kept, as torch) after the bias.

    Returns:
        (N, P, W) new tensor: ``out[n, p, kept[n, j]] = epi(src[n, p, j] +
        bias[kept[n, j]])`` for ``kept[n, j] < W``, 0 at every other
        channel.

    Raises:
        ValueError: ``src`` not 3-D, ``kept`` not int64 (N, K) on src's
            device, an entry outside [0, W], a negative ``width``, a
            ``bias`` that is not (W,) of src's dtype and device, or
            ``relu`` not a bool (names the argument).

    Source: paper sec. 3.2 (dropped channels are zeros at conv2's input),
    sec. 3.4 (scatter fused with the bias and ReLU).
    """
    if not isinstance(src, torch.Tensor) or src.dim() != 3:
        raise ValueError(f'src must be a 3-D (N, P, K) tensor, got '
                         f'{tuple(getattr(src, "shape", ()))}')
    if isinstance(width, bool) or not isinstance(width, int) or width < 0:
        raise ValueError(f'width must be an int >= 0, got {width!r}')
    _check_relu(relu)
    _check_kept(kept, src.shape[0], src.shape[2], width, src.device)
    if bias is not None and (
            not isinstance(bias, torch.Tensor) or
            tuple(bias.shape) != (width,) or bias.dtype != src.dtype or
            bias.device != src.device):
        raise ValueError(f'bias must be a ({width},) {src.dtype} tensor on '
                         f'{src.device}, got '
                         f'{getattr(bias, "dtype", type(bias))} '
                         f'{tuple(getattr(bias, "shape", ()))}')
    return _scatter_kept_columns(src, kept, width, bias, relu)


#: the signature generation of the compiled operators this module calls
#: (``_ext.kept_columns_api``): an extension built from other sources
#: leaves both operators to the reference
KEPT_COLUMNS_API = 2


def _fast(src: torch.Tensor, name: str) -> bool:
    """Whether the compiled ``name`` runs on ``src``: built from these
    sources (:data:`KEPT_COLUMNS_API`), a float32 CPU tensor, the compiled
    backend active."""
    ext = extension()
    return ext is not None and hasattr(ext, name) and \
        getattr(ext, 'kept_columns_api', None) == KEPT_COLUMNS_API and \
        src.device.type == 'cpu' and src.dtype == torch.float32 and \
        use_kernels(src)


def _scatter_kept_columns(src, kept, width, bias=None, relu=False):
    """:func:`scatter_kept_columns` without argument checks (internal)."""
    if _fast(src, 'scatter_kept_columns') and \
            (bias is None or bias.dtype == torch.float32):
        return extension().scatter_kept_columns(
            src.contiguous(), kept.contiguous(), width,
            None if bias is None else bias.contiguous(), relu)
    return scatter_kept_columns_reference(src, kept, width, bias, relu)


def scatter_kept_columns_reference(src, kept, width, bias=None, relu=False
                                   ) -> torch.Tensor:
    """Pure-PyTorch :func:`scatter_kept_columns` (same arguments and
    result: src (N, P, K), kept (N, K) -> (N, P, W); no argument checks),
    any device and dtype: bias and ReLU over ``src``, then ``scatter_``
    into a zero map with a spare column W that takes the padding slots."""
    n, p, k = src.shape
    v = src
    if bias is not None:
        v = v + torch.cat([bias, bias.new_zeros(1)])[kept][:, None, :]
    if relu:
        v = torch.relu(v)
    out = src.new_zeros(n, p, width + 1)
    out.scatter_(2, kept[:, None, :].expand(n, p, k), v)
    return out[:, :, :width].contiguous()


def gather_kept_columns(src: torch.Tensor, kept: torch.Tensor,
                        relu: bool = False,
                        sums: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The kept columns of a channel-row map as compact rows.

    Args:
        src: (N, P, W) channel rows.
        kept: (N, K) int64 channels in [0, W] (W: a padding slot).
        relu: ReLU (NaN kept, as torch) on the gathered values.
        sums: (N, K) contiguous floating tensor on src's device, or None:
            filled with each gathered column's sum over the P rows (the SE
            squeeze of the kept channels, times P), summed in sums' dtype
            (float32 sums of a half-precision map neither overflow nor
            round twice). The compiled kernel adds fixed chunks of 64
            rows, then the chunks in order: equal to a torch sum up to
            float rounding, the same at any thread count.

    Returns:
        (N, P, K) new tensor ``epi(src[n, p, kept[n, j]])``, 0 in padding
        slots.

    Raises:
        ValueError: ``src`` not 3-D, ``kept`` not int64 (N, K) on src's
            device, an entry outside [0, W], ``relu`` not a bool, or
            ``sums`` not a contiguous floating (N, K) tensor on src's
            device (names the argument).

    Source: paper sec. 3.2 (the SE squeeze over the kept channels), sec.
    3.4 (gather fused with the ReLU and the pooling).
    """
    if not isinstance(src, torch.Tensor) or src.dim() != 3:
        raise ValueError(f'src must be a 3-D (N, P, W) tensor, got '
                         f'{tuple(getattr(src, "shape", ()))}')
    _check_kept(kept, src.shape[0], None, src.shape[2], src.device)
    _check_relu(relu)
    if sums is not None and (
            not isinstance(sums, torch.Tensor) or
            tuple(sums.shape) != tuple(kept.shape) or
            not sums.is_floating_point() or sums.device != src.device or
            not sums.is_contiguous()):
        raise ValueError(f'sums must be a contiguous {tuple(kept.shape)} '
                         f'floating tensor on {src.device}, got '
                         f'{getattr(sums, "dtype", type(sums))} '
                         f'{tuple(getattr(sums, "shape", ()))}')
    return _gather_kept_columns(src, kept, relu, sums)


def _gather_kept_columns(src, kept, relu=False, sums=None):
    """:func:`gather_kept_columns` without argument checks (internal)."""
    if _fast(src, 'gather_kept_columns') and \
            (sums is None or (sums.dtype == torch.float32 and
                              sums.is_contiguous())):
        return extension().gather_kept_columns(
            src.contiguous(), kept.contiguous(), relu, sums)
    return gather_kept_columns_reference(src, kept, relu, sums)


def gather_kept_columns_reference(src, kept, relu=False, sums=None
                                  ) -> torch.Tensor:
    """Pure-PyTorch :func:`gather_kept_columns` (same arguments and result
    up to the sums' float rounding: src (N, P, W), kept (N, K) -> (N, P,
    K), sums (N, K); no argument checks), any device and dtype: ``gather``
    from the map with a zero column W appended, ReLU, ``sum``."""
    n, p, _ = src.shape
    ext = torch.cat([src, src.new_zeros(n, p, 1)], 2)
    out = ext.gather(2, kept[:, None, :].expand(n, p, kept.shape[1]))
    if relu:
        out = out.relu_()
    if sums is not None:
        sums.copy_(out.sum(dim=1, dtype=sums.dtype))
    return out
