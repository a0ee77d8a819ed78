"""BN folding for dynamic inference: eval-mode BatchNorm folded into the
preceding convolution, and a per-block cache of the folded weights that
follows parameter and statistic updates.

Source: standard inference-time BN folding; the paper's dynamic operators
(sec. 3.4) run convolution + BN + ReLU as one kernel.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ...ops.dispatch import runs_channels_last


def fold_conv_bn(conv: nn.Conv2d, bn: Optional[nn.Module]
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm into the preceding convolution.

    Args:
        conv: nn.Conv2d (weight (C_out, C_in / groups, k, k), optional bias).
        bn: BatchNorm with running statistics, or None.

    Returns:
        (weight, bias): weight * gamma / sqrt(var + eps) and
        beta + (bias - mean) * gamma / sqrt(var + eps), shapes of the conv
        weight and (C_out,), in the conv's dtype (folded in float64).

    Raises:
        ValueError: if ``bn`` has no running statistics (cannot be folded).
    """
    w = conv.weight.detach()
    b = conv.bias.detach() if conv.bias is not None else None
    if bn is None:
        return w, (b if b is not None else w.new_zeros(w.shape[0]))
    if getattr(bn, 'running_mean', None) is None:
        raise ValueError(f'bn={bn!r} has no running statistics; BN can only '
                         f'be folded with track_running_stats=True')
    var = bn.running_var.detach().double()
    mean = bn.running_mean.detach().double()
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.detach().double()
    shift = -mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias.detach().double()
    if b is not None:
        shift = shift + b.double() * scale
    wf = (w.double() * scale.view(-1, *([1] * (w.dim() - 1)))).to(w.dtype)
    return wf.contiguous(), shift.to(w.dtype)


class LayoutWeight:
    """A folded convolution weight in the memory format of its input.

    PyTorch's CPU and CUDA convolutions run in channels_last when the
    input is channels_last and, given a weight in NCHW (the layout
    :func:`fold_conv_bn` returns), copy the weight into channels_last on
    every call before the library re-lays it out (oneDNN, cuDNN). For a
    k x k kernel with large weights that copy is a large part of the call
    at small batches (``tools/analysis_tools/benchmark_kernels.py``, rows
    ``layout_weight``; docs/benchmarks.md, "Convolution weights in the
    input's format"). The result is the same bit for bit in either
    format. A 1 x 1 weight is the same memory in both formats and is
    returned as is. The copy is kept beside the NCHW weight, which NCHW
    inputs and the fused kernels' packing read: for LAUD-ResNet-50's
    conv2 weights 45 MB more memory once a channels_last input ran.

    Args:
        weight: (C_out, C_in / groups, k, k) folded weight, contiguous.

    Attributes:
        nchw: ``weight``.

    Source: standard inference practice (``model.to(memory_format=
    torch.channels_last)`` converts a static network's weights once);
    the paper's dynamic operators (sec. 3.4) take their weights
    pre-arranged.
    """
    __slots__ = ('nchw', '_channels_last')

    def __init__(self, weight: torch.Tensor):
        self.nchw = weight
        self._channels_last = None

    def like(self, x: torch.Tensor) -> torch.Tensor:
        """The weight for a convolution of ``x`` (N, C, H, W).

        Returns:
            (C_out, C_in / groups, k, k), :attr:`nchw`'s dtype and device:
            a channels_last copy (made on the first such call and kept)
            when the kernel is larger than 1 x 1 and the convolution runs
            channels_last for ``x``
            (:func:`laud_mm.ops.dispatch.runs_channels_last`), else
            :attr:`nchw`. An NCHW input keeps the NCHW weight, so that its
            convolution's output stays NCHW.
        """
        w = self.nchw
        if w.shape[-2:] == (1, 1) or not runs_channels_last(x):
            return w
        if self._channels_last is None:
            self._channels_last = w.contiguous(
                memory_format=torch.channels_last)
        return self._channels_last


#: the attributes :func:`cached_fold` has cached folds in (per family)
FOLD_ATTRS = set()


def _cache_key(*parts: nn.Module) -> tuple:
    """(identity, ``_version``, dtype, device) of every parameter and buffer
    of the modules ``parts`` and their submodules, read from the modules'
    own tables by a plain recursive walk: ``block.parameters()``
    deduplicates through a set of tensors (Python-level
    ``Tensor.__hash__``) and ``modules()`` builds every submodule's name,
    work paid by every block on every dynamic forward (a tensor or module
    shared by two submodules simply appears twice here)."""
    key = []
    for part in parts:
        _append_tensor_keys(part, key)
    return tuple(key)


def _append_tensor_keys(m: nn.Module, key: list) -> None:
    for table in (m._parameters, m._buffers):
        for t in table.values():
            if t is not None:
                key.append((id(t), t._version, t.dtype, t.device))
    for child in m._modules.values():
        if child is not None:
            _append_tensor_keys(child, key)


def cached_fold(block: nn.Module, cls, attr: str,
                parts: Optional[Sequence[nn.Module]] = None):
    """``cls(block)`` (BN-folded, detached weights), cached on the block as
    ``attr`` and rebuilt when any parameter or buffer changed (``_version``,
    identity, dtype or device); shared by every family's dynamic path.

    Args:
        block: an eval-mode LAUD block (or backbone).
        cls: the folded-weights class, called as ``cls(block)``.
        attr: attribute name of the cache on the block.
        parts: the modules whose parameters and buffers the fold reads
            (default: the whole block), e.g. a backbone's stem convolution
            and norm.

    Returns:
        The (possibly cached) ``cls`` instance.
    """
    FOLD_ATTRS.add(attr)
    key = _cache_key(*(parts if parts is not None else (block,)))
    cache = getattr(block, attr, None)
    if cache is None or cache[0] != key:
        with torch.no_grad():
            fb = cls(block)
        # bypass nn.Module.__setattr__: the cache is not module state
        object.__setattr__(block, attr, (key, fb))
        return fb
    return cache[1]


def clear_folds(model: nn.Module) -> int:
    """Drop every fold :func:`cached_fold` cached in ``model``'s modules, so
    that the next dynamic forward folds the current weights. The cache key
    follows every write through torch (``_version``), but not a write
    through ``.data`` (``p.data.copy_(...)``), which bumps no version
    counter: mmengine's ``EMAHook`` swaps the averaged weights in that way
    before each validation (:class:`laud_mm.FoldCacheResetHook` calls this
    after the swap).

    Args:
        model: any nn.Module.

    Returns:
        the number of folds dropped.
    """
    n = 0
    for m in model.modules():
        for attr in FOLD_ATTRS:
            if m.__dict__.pop(attr, None) is not None:
                n += 1
    return n
