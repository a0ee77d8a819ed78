"""Device-side index lists and deferred host reads: what lets the CUDA
dynamic paths (``laud_mm.models.<family>.dynamic_cuda``) build the indices of
the kept patches / channels / samples / tokens without a host
synchronisation, and read the one count per block that fixes a tensor size
(the gathered patches, the padded kept channels, the kept samples) with a
single wait placed behind independent work.

- :func:`active_index`: the coordinates of the True entries of a mask (as
  ``mask.nonzero()``) in a tensor of the mask's size
  (``torch.nonzero_static``), each entry's row in that list and their
  count (a prefix sum): no host wait (``nonzero`` waits for the device to
  learn its output size).
- :func:`kept_index`: per row of a 2-D mask, the indices of its True
  entries, ascending, padded to a given width: per-sample kept channels /
  heads, no host wait once the width is known.
- :func:`channel_kept_lists`: a channel gate's per-sample kept-channel
  lists and counts, padded (the fused CPU channel branch's input), in one
  compiled pass on CPU.
- :class:`HostRead`: a few device integers copied to pinned host memory
  without blocking; :meth:`HostRead.get` waits for that copy only (a CUDA
  event), so kernels queued between the two keep the device busy.

On CPU tensors the same functions run eagerly (tests run the CUDA paths'
logic on CPU with them).

Source: paper sec. 3.4 (the masker's output is turned into indices for the
gather / scatter operators); engineering of that step for GPUs.
"""
from typing import List, Tuple

import torch

from .dispatch import extension, use_kernels


def active_index(mask: torch.Tensor
                 ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Index list of the True entries of ``mask``, on its device, with no
    host synchronisation.

    Args:
        mask: bool tensor of any shape (M entries, D dimensions).

    Returns:
        (idx, pos, count): idx (M, D) int64 whose first ``count`` rows are
        the coordinates of the True entries in row-major order (what
        ``mask.nonzero()`` returns; the rows after them are zero); pos
        (mask's shape) int64, the row of each True entry in idx, -1 for a
        False one (the patch map of :func:`laud_mm.ops.patches.patch_map`
        for a spatial gate); count: 0-dim int64 tensor.
    """
    flat = mask.reshape(-1)
    m = flat.numel()
    csum = torch.cumsum(flat, 0)  # int64
    pos = torch.where(flat, csum - 1, -1)
    count = csum[-1] if m else csum.new_zeros(())
    # nonzero_static: the coordinates in one operator with a size fixed in
    # advance, so no host wait for the count (unlike nonzero; its CUDA
    # version is a few kernels over a device-side prefix sum); the padding
    # rows are 0. Made contiguous once here: on CUDA its rows are strided,
    # and the gather / scatter kernels take contiguous (P, D) rows.
    idx = torch.nonzero_static(mask, size=m, fill_value=0).contiguous()
    return idx, pos.view(mask.shape), count


def kept_index(mask: torch.Tensor, width: int, pad_value: int
               ) -> torch.Tensor:
    """Per row of ``mask`` the indices of its True entries, ascending,
    padded with ``pad_value`` to ``width`` columns (no host wait).

    Args:
        mask: (N, C) bool.
        width: columns of the result (>= the largest count of a row;
            entries beyond it are dropped).
        pad_value: the index written after a row's True entries.

    Returns:
        (N, width) int64.
    """
    width = min(width, mask.shape[1])
    # a stable descending sort puts a row's True entries first, in index
    # order; its values mark the padding (six operators: each is host time)
    vals, order = torch.sort(mask.to(torch.uint8), dim=1, descending=True,
                             stable=True)
    return order[:, :width].masked_fill(vals[:, :width] == 0, pad_value)


def channel_kept_lists(gate: torch.Tensor, granularity: int, pad: int
                       ) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """Each sample's kept channels from a channel gate (paper sec. 3.2: a
    gate per group of ``granularity`` channels), as the channel paths take
    them: on CPU with the compiled extension one pass
    (``csrc/cpu/channel_lists_cpu.cpp``), else
    :func:`channel_kept_lists_reference`, which dispatches about a dozen
    operators (host time per block).

    Args:
        gate: (N, n_groups) float gate; a group is kept where > 0.5.
        granularity: G, channels per group (>= 1).
        pad: the padded list length is a multiple of this (>= 1), capped at
            the width n_groups G.

    Returns:
        (chs, counts, kept): chs (N, k_pad) int64, row n the kept channels
        of sample n ascending, then the padding index n_groups G;
        counts (N,) int64 kept channels per sample; kept (int) the kept
        groups of the whole batch.

    Raises:
        ValueError: gate not 2-D, granularity or pad < 1 (naming it).
    """
    if gate.dim() != 2:
        raise ValueError(f'gate must be (N, n_groups), got '
                         f'{tuple(gate.shape)}')
    if granularity < 1 or pad < 1:
        raise ValueError(f'granularity and pad must be >= 1, got '
                         f'granularity={granularity}, pad={pad}')
    ext = extension()
    if ext is not None and gate.device.type == 'cpu' and \
            gate.dtype == torch.float32 and use_kernels(gate):
        return ext.channel_kept_lists(gate.contiguous(), int(granularity),
                                      int(pad))
    return channel_kept_lists_reference(gate, granularity, pad)


def channel_kept_lists_reference(gate: torch.Tensor, granularity: int,
                                 pad: int
                                 ) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """PyTorch reference of :func:`channel_kept_lists` (any device and
    float dtype; :func:`kept_index` for the lists)."""
    keep = gate > 0.5
    keep_ch = keep.repeat_interleave(granularity, dim=1)
    counts = keep_ch.sum(1)
    width = keep_ch.shape[1]
    k = int(counts.max()) if counts.numel() else 0
    k_pad = min(width, -(-k // pad) * pad)
    return kept_index(keep_ch, k_pad, width), counts, int(keep.sum())


class HostRead:
    """Integer values of small device tensors, read on the host later.

    The values are copied now, without blocking, into pinned host memory,
    and a CUDA event is recorded behind the copy on the current stream;
    :meth:`get` waits for that event only. Queue work that does not need
    the values between the two (a dense conv1, the shortcut) and the wait
    costs little or nothing: this is the documented host synchronisation
    of a CUDA dynamic block (one per block). CPU tensors are read at once.

    Args:
        *tensors: 0-dim (or one-element) integer / bool tensors on one
            device.

    Raises:
        ValueError: no tensor given.
    """

    def __init__(self, *tensors: torch.Tensor):
        if not tensors:
            raise ValueError('HostRead needs at least one tensor to read')
        # one operator fewer for a single value (the spatial and layer
        # paths' count): each operator is host time on a GPU
        vals = tensors[0].reshape(1).to(torch.int64) if len(tensors) == 1 \
            else torch.stack([t.reshape(()).to(torch.int64) for t in tensors])
        self._event = None
        if vals.is_cuda:  # the copy to pinned memory is the snapshot
            host = torch.empty(vals.shape, dtype=torch.int64,
                               pin_memory=True)
            host.copy_(vals, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record()
            self._vals = host
        else:  # read now: vals may be a view of a tensor written later
            self._vals = vals.tolist()

    def get(self) -> List[int]:
        """The values (waits for the copy on CUDA)."""
        if self._event is None:
            return list(self._vals)
        self._event.synchronize()
        return self._vals.tolist()
