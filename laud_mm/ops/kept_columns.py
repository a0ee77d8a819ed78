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
  compact rows for the SE squeeze and conv3.

``kept`` is (N, K) int64: per sample its kept channels, padded with the
index W (a padding slot: nothing is written, 0 is read). Both run the
compiled kernel (``csrc/cpu/kept_columns_cpu.cpp``: one pass over the
rows, in order, instead of PyTorch's zero fill, bias and ReLU passes and
its per-element ``scatter_`` / ``gather``) for contiguous float32 CPU
tensors, else the PyTorch reference (any device and dtype).

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


def scatter_kept_columns(src: torch.Tensor, kept: torch.Tensor, width: int,
                         bias: Optional[torch.Tensor] = None,
                         relu: bool = False) -> torch.Tensor:
    """The kept values ``src`` in their columns of a zeroed channel-row map.

    Args:
        src: (N, P, K) each sample's values of its kept-channel slots.
        kept: (N, K) int64 the slots' channels in [0, W], distinct within
            a row but for the padding index W (slot skipped).
        width: W, the map's channels.
        bias: (W,) added to each kept value by channel, or None.
        relu: ReLU (NaN kept, as torch) after the bias.

    Returns:
        (N, P, W) new tensor: ``out[n, p, kept[n, j]] = epi(src[n, p, j] +
        bias[kept[n, j]])`` for ``kept[n, j] < W``, 0 at every other
        channel.

    Raises:
        ValueError: ``src`` not 3-D, ``kept`` not int64 (N, K) on src's
            device, an entry outside [0, W], a negative ``width`` or a
            ``bias`` that is not (W,) of src's dtype and device (names the
            argument).
    """
    if not isinstance(src, torch.Tensor) or src.dim() != 3:
        raise ValueError(f'src must be a 3-D (N, P, K) tensor, got '
                         f'{tuple(getattr(src, "shape", ()))}')
    if isinstance(width, bool) or not isinstance(width, int) or width < 0:
        raise ValueError(f'width must be an int >= 0, got {width!r}')
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


def _fast(src: torch.Tensor) -> bool:
    ext = extension()
    return ext is not None and hasattr(ext, 'scatter_kept_columns') and \
        src.device.type == 'cpu' and src.dtype == torch.float32 and \
        use_kernels(src)


def _scatter_kept_columns(src, kept, width, bias=None, relu=False):
    """:func:`scatter_kept_columns` without argument checks (internal)."""
    if _fast(src) and (bias is None or bias.dtype == torch.float32):
        return extension().scatter_kept_columns(
            src.contiguous(), kept.contiguous(), width,
            None if bias is None else bias.contiguous(), relu)
    return scatter_kept_columns_reference(src, kept, width, bias, relu)


def scatter_kept_columns_reference(src, kept, width, bias=None, relu=False
                                   ) -> torch.Tensor:
    """Pure-PyTorch :func:`scatter_kept_columns` (same arguments and
    result; no argument checks): bias and ReLU over ``src``, then
    ``scatter_`` into a zero map with a spare column W that takes the
    padding slots."""
    n, p, k = src.shape
    v = src
    if bias is not None:
        v = v + torch.cat([bias, bias.new_zeros(1)])[kept][:, None, :]
    if relu:
        v = torch.relu(v)
    out = src.new_zeros(n, p, width + 1)
    out.scatter_(2, kept[:, None, :].expand(n, p, k), v)
    return out[:, :, :width].contiguous()


def gather_kept_columns(src: torch.Tensor, kept: torch.Tensor
                        ) -> torch.Tensor:
    """The kept columns of a channel-row map as compact rows.

    Args:
        src: (N, P, W) channel rows.
        kept: (N, K) int64 channels in [0, W] (W: a padding slot).

    Returns:
        (N, P, K) new tensor ``src[n, p, kept[n, j]]``, 0 in padding
        slots.

    Raises:
        ValueError: ``src`` not 3-D, ``kept`` not int64 (N, K) on src's
            device, or an entry outside [0, W] (names the argument).
    """
    if not isinstance(src, torch.Tensor) or src.dim() != 3:
        raise ValueError(f'src must be a 3-D (N, P, W) tensor, got '
                         f'{tuple(getattr(src, "shape", ()))}')
    _check_kept(kept, src.shape[0], None, src.shape[2], src.device)
    return _gather_kept_columns(src, kept)


def _gather_kept_columns(src, kept):
    """:func:`gather_kept_columns` without argument checks (internal)."""
    if _fast(src):
        return extension().gather_kept_columns(src.contiguous(),
                                               kept.contiguous())
    return gather_kept_columns_reference(src, kept)


def gather_kept_columns_reference(src, kept) -> torch.Tensor:
    """Pure-PyTorch :func:`gather_kept_columns` (same arguments and result;
    no argument checks): ``gather`` from the map with a zero column W
    appended."""
    n, p, _ = src.shape
    ext = torch.cat([src, src.new_zeros(n, p, 1)], 2)
    return ext.gather(2, kept[:, None, :].expand(n, p, kept.shape[1]))
