"""The Tokens-to-Token module's image split, token-major, for inference.

mmpretrain's ``T2TModule`` starts with ``soft_split0(x).transpose(1, 2)``:
``nn.Unfold`` (7 x 7 windows, stride 4, padding 2) writes its (N, C k^2,
L) columns with ATen's ``im2col``, and the transposed view is copied into
the (N, L, C k^2) token rows by the next operator (the first LayerNorm
reads it contiguous). Both passes run over 14.75 MB at 8 x 224 px, the
second one a transposition with a 147-float stride. :func:`soft_split_tokens`
writes the token rows directly, in one copy of the windows (rows of k
contiguous pixels read, token rows written front to back) after a
padded copy of the image; the values are the same, element for element
(the same floats moved, nothing computed).

:func:`token_major_soft_split` runs a CPU input's image split that way
within its context, as mmpretrain's module returns it (the (N, C k^2, L)
transpose of the token rows, whose ``.transpose(1, 2)`` is then the
contiguous rows themselves). It is entered by
:meth:`~laud_mm.models.LAUDT2TViT.inference_kernels`, as the fused
attention. Only the image split: on the module's later splits (64
channels of 3 x 3 windows) the window copy does not pay at every thread
count (docs/t2t_vit.md, "The image split, token-major").

Source: T2T-ViT (Yuan et al. 2021) soft split = ``nn.Unfold``; paper
sec. 3.4 (operators scheduled for the hardware).
"""
import contextlib
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F


def _pair(v, name: str):
    v = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    if len(v) != 2 or not all(isinstance(i, int) and
                              not isinstance(i, bool) for i in v):
        raise ValueError(f'soft_split_tokens: {name}={v!r} must be an int '
                         f'or a pair of ints')
    return v


def soft_split_tokens(x: torch.Tensor, kernel_size, stride, padding
                      ) -> torch.Tensor:
    """``F.unfold(x, kernel_size, stride=stride, padding=padding)
    .transpose(1, 2)`` written contiguous: the token rows of the windows.

    Args:
        x: (N, C, H, W) input (any strides).
        kernel_size, stride, padding: as ``nn.Unfold`` (ints or pairs;
            dilation 1).

    Returns:
        (N, L, C kh kw) contiguous, L = Ho x Wo windows in row-major
        order, each row ordered (channel, kernel row, kernel column) as
        ``nn.Unfold``'s columns: equal to the unfold's transpose element
        for element.

    Raises:
        ValueError: x not 4-D, a size that is not an int or a pair, or an
            input smaller than one window.

    Source: T2T-ViT's soft split (``nn.Unfold``); the module doc.
    """
    if x.dim() != 4:
        raise ValueError(f'soft_split_tokens: x must be (N, C, H, W), got '
                         f'{tuple(x.shape)}')
    (kh, kw), (sh, sw), (ph, pw) = (_pair(kernel_size, 'kernel_size'),
                                    _pair(stride, 'stride'),
                                    _pair(padding, 'padding'))
    n, c, h, w = x.shape
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    if ho < 1 or wo < 1:
        raise ValueError(f'soft_split_tokens: input {h} x {w} with padding '
                         f'{(ph, pw)} is smaller than the {kh} x {kw} window')
    xp = F.pad(x, (pw, pw, ph, ph))
    win = xp.unfold(2, kh, sh).unfold(3, kw, sw)  # (N, C, Ho, Wo, kh, kw)
    out = x.new_empty(n, ho, wo, c, kh, kw)
    out.copy_(win.permute(0, 2, 3, 1, 4, 5))
    return out.view(n, ho * wo, c * kh * kw)


def _token_major_forward(unfold: nn.Unfold):
    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.device.type != 'cpu' or x.dim() != 4:
            return F.unfold(x, unfold.kernel_size, unfold.dilation,
                            unfold.padding, unfold.stride)
        return soft_split_tokens(x, unfold.kernel_size, unfold.stride,
                                 unfold.padding).transpose(1, 2)
    return forward


@contextlib.contextmanager
def token_major_soft_split(unfold: nn.Unfold) -> Iterator[None]:
    """Within the context, ``unfold`` (an ``nn.Unfold`` of dilation 1, the
    T2T module's image split) returns, for a CPU input, the transpose of
    :func:`soft_split_tokens` (the same (N, C k^2, L) values as its own
    forward, as a view whose ``.transpose(1, 2)`` is contiguous); other
    inputs run its own forward. The module's own forward is put back on
    exit, also on an exception; a module with another dilation is left
    alone.

    Args:
        unfold: the ``nn.Unfold`` module.

    Raises:
        ValueError: on entering, a dilation that is neither an int nor a
            pair of ints (naming it).

    Source: the module doc.
    """
    swap = isinstance(unfold, nn.Unfold) and \
        _pair(unfold.dilation, 'dilation') == (1, 1) and \
        'forward' not in unfold.__dict__
    if swap:
        unfold.forward = _token_major_forward(unfold)
    try:
        yield
    finally:
        if swap:
            del unfold.forward
