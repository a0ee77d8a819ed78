"""The fused sparse branch of a spatially masked bottleneck (CPU kernel).

For every sample n with active S x S output patches ``A_n`` (rows of
``idx``; BN folded into the weights)::

    D_n   = conv2 input pixels of A_n's output pixels   # mask dilated by 3x3
    h1    = relu(W1 x_n + b1)            at D_n          # conv1, 1x1
    h2    = relu(W2 * h1 + b2)           at A_n          # conv2, 3x3
    out_n = relu(identity_n + W3 h2 + b3) at A_n, relu(identity_n) elsewhere

which is the masked-dense block (a skipped pixel's branch output is zero;
conv2 reads zeros outside the image as its padding). :func:`spatial_branch_add_relu`
runs it with the compiled kernel (``csrc/cpu/spatial_conv_cpu.cpp``: the
register tiles of ``csrc/cpu/tile.h`` read the active pixels in place, so
there is no conv1 on the whole map, no patch-window copy and no patch
buffer between conv3 and the residual add); :func:`spatial_branch_add_relu_reference`
is the same in PyTorch (dense convolutions, then the mask).

The weights are passed in the tiles' panel layout (:func:`pack_panels`):
conv1 as (C_in, width), conv2 as (9 width, width) with rows [tap, in],
conv3 as (width, C_out), each cut into 64-column panels stored one after
the other.

Source: paper sec. 3.1 (spatial masker, granularity S), sec. 3.4 and
appendix (gather / scatter-add fused with the convolutions); docs/method.md
sec. 2 (conv1 FLOPs on the dilated mask).
"""
from typing import Tuple

import torch
import torch.nn.functional as F

from .channel_conv import channel_branch_isa
from .dispatch import check_float32_cpu, extension, layout_of, use_kernels
from .panels import pack_panels, unpack_panels


def spatial_packed_weights(w1: torch.Tensor, w2: torch.Tensor,
                           w3: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """Folded conv weights -> the kernel's (w1p, w2p, w3p).

    Args:
        w1: conv1 (width, C_in, 1, 1); w2: conv2 (width, width, 3, 3);
        w3: conv3 (C_out, width, 1, 1).

    Returns:
        (C_in * width,), (9 * width * width,), (width * C_out,) panels.
    """
    width = w2.shape[0]
    return (pack_panels(w1.flatten(1).t()),
            pack_panels(w2.permute(2, 3, 1, 0).reshape(9 * width, width)),
            pack_panels(w3.flatten(1).t()))


def fast_spatial_branch(x: torch.Tensor, width: int, c_out: int) -> bool:
    """Whether :func:`spatial_branch_add_relu` runs the AVX-512 kernel for a
    block with input like ``x`` (CPU, float32, compiled backend active,
    width and C_out multiples of 16).

    Args:
        x: the (N, C_in, H, W) block input.
        width: the bottleneck width; c_out: the block's output channels.

    Returns:
        True only where the kernel is the fast path (the dynamic spatial
        path's condition with ``laud_mm.ops.policy.SPATIAL_FUSED_CPU``).
        Source: paper sec. 3.4 (hardware-specific scheduling).
    """
    return (x.device.type == 'cpu' and x.dtype == torch.float32
            and width % 16 == 0 and c_out % 16 == 0 and use_kernels(x)
            and hasattr(extension(), 'spatial_branch_add_relu')
            and channel_branch_isa() == 'avx512f')


def _check(out, x, identity, idx, packed, s, stride, dilation,
           identity_nonneg):
    w1p, b1, w2p, b2, w3p, b3 = packed
    names = dict(out=out, x=x, identity=identity, w1p=w1p, b1=b1, w2p=w2p,
                 b2=b2, w3p=w3p, b3=b3)
    check_float32_cpu(names)
    if x.dim() != 4 or out.dim() != 4 or out.shape[0] != x.shape[0]:
        raise ValueError(f'x {tuple(x.shape)} and out {tuple(out.shape)} must '
                         f'be 4-D with the same batch size')
    if identity.shape != out.shape:
        raise ValueError(f'identity {tuple(identity.shape)} must have out\'s '
                         f'shape {tuple(out.shape)}')
    for k, v in dict(S=s, stride=stride, dilation=dilation).items():
        if not isinstance(v, int) or v < 1:
            raise ValueError(f'{k}={v!r} must be an int >= 1')
    n, c_in, h, w = x.shape
    width, c_out = b1.shape[0], out.shape[1]
    sizes = dict(w1p=c_in * width, w2p=9 * width * width, b2=width,
                 w3p=width * c_out, b3=c_out)
    for k, size in sizes.items():
        if names[k].dim() != 1 or names[k].numel() != size:
            raise ValueError(f'{k} must be 1-D with {size} elements, got '
                             f'{tuple(names[k].shape)}')
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    if tuple(out.shape[2:]) != (ho, wo):
        raise ValueError(f'out is {tuple(out.shape[2:])} but conv2 '
                         f'(stride={stride}, padding=dilation) gives '
                         f'{(ho, wo)}')
    if not isinstance(idx, torch.Tensor) or idx.dtype != torch.int64 or \
            idx.dim() != 2 or idx.shape[1] != 3:
        raise ValueError(f'idx must be an int64 (P, 3) tensor, got '
                         f'{getattr(idx, "dtype", type(idx))} '
                         f'{tuple(getattr(idx, "shape", ()))}')
    grid = (n, -(-ho // s), -(-wo // s))
    if idx.numel():
        for k, lim in enumerate(grid):
            if int(idx[:, k].min()) < 0 or int(idx[:, k].max()) >= lim:
                raise ValueError(f'idx column {k} must lie in [0, {lim}) '
                                 f'(patch grid {grid} of S={s})')
        if bool((idx[1:, 0] < idx[:-1, 0]).any()):
            raise ValueError('idx must be sorted by sample (as nonzero() '
                             'returns it)')
    if out.data_ptr() == x.data_ptr() and \
            identity.data_ptr() != out.data_ptr():
        # conv1 reads x while out = relu(identity) is written
        raise ValueError('out may alias x only together with identity (an '
                         'identity block written in place)')
    if identity_nonneg and identity.data_ptr() == out.data_ptr() and \
            bool((identity < 0).any()):
        raise ValueError('identity_nonneg=True but identity has negative '
                         'values')


def spatial_branch_add_relu(out: torch.Tensor, x: torch.Tensor,
                            identity: torch.Tensor, idx: torch.Tensor,
                            w1p: torch.Tensor, b1: torch.Tensor,
                            w2p: torch.Tensor, b2: torch.Tensor,
                            w3p: torch.Tensor, b3: torch.Tensor, s: int,
                            stride: int = 1, dilation: int = 1,
                            identity_nonneg: bool = False) -> torch.Tensor:
    """``out = relu(identity + mask * branch(x))`` (module docstring).

    Args:
        out: (N, C_out, Ho, Wo) output; may be ``identity`` itself (in
            place). Ho = (H - 1) // stride + 1 (conv2 padded by dilation).
        x: (N, C_in, H, W) block input, NCHW or channels_last (the kernel
            reads x and writes out in place in that layout when out has
            it too; otherwise the PyTorch reference runs).
        identity: (N, C_out, Ho, Wo) shortcut (x itself or the downsample
            output).
        idx: (P, 3) int64 active patches (sample, patch row, patch column),
            sorted by sample (``(gate > 0.5).nonzero()``).
        w1p, w2p, w3p: conv1 / conv2 / conv3 weights in panels
            (:func:`spatial_packed_weights`); b1 (width,), b2 (width,),
            b3 (C_out,).
        s: granularity S (patch side in output pixels).
        stride, dilation: conv2's (its padding is ``dilation``).
        identity_nonneg: with ``out`` aliasing ``identity``, the caller
            guarantees identity >= 0 (a previous block's ReLU output): the
            inactive pixels are left as they are.

    Returns:
        ``out`` (float32; every tensor on the CPU).

    Raises:
        ValueError: a dtype, device or shape that does not match, idx
            outside the patch grid or not sorted by sample, or
            ``identity_nonneg`` with a negative identity value (names the
            argument).
    """
    packed = (w1p, b1, w2p, b2, w3p, b3)
    _check(out, x, identity, idx, packed, s, stride, dilation,
           identity_nonneg)
    return _spatial_branch(out, x, identity, idx, packed, s, stride,
                           dilation, identity_nonneg)


def _spatial_branch(out, x, identity, idx, packed, s, stride, dilation,
                    identity_nonneg=False, leave_inactive=False, sums=None):
    """:func:`spatial_branch_add_relu` without argument checks (internal):
    the compiled kernel when built and width, C_out are multiples of 16,
    else the reference. ``leave_inactive`` (``out`` aliasing ``identity``,
    which may be negative): only the active pixels are written, the
    others keep the identity's values, for a caller that rectifies them
    itself (the layer path: its skipped samples' rows). For the kernel
    that is what ``identity_nonneg`` does without the sign condition.
    ``sums``: a contiguous float32 (N, C_out) tensor filled with each
    sample's channel sums of the new ``out`` at its active pixels (zero
    for a sample without one): the kernel adds the values its epilogue
    writes, each thread's partial sums added in thread order (the output
    is the same at any thread count, the sums to float rounding). For a
    layer block, whose kept samples are each one patch covering the map,
    those are the kept rows' channel sums the next masker pools (paper
    sec. 3.2)."""
    ext = extension()
    # the kernel runs NCHW, or channels_last when x and out both are
    fmt = layout_of(x)
    if ext is not None and hasattr(ext, 'spatial_branch_add_relu') and \
            use_kernels(x) and packed[1].shape[0] % 16 == 0 and \
            out.shape[1] % 16 == 0 and out.is_contiguous(memory_format=fmt):
        # identity.contiguous() is out itself when the call is in place
        tensors = [t.contiguous(memory_format=fmt) for t in (x, identity)] + \
            [t.contiguous() for t in (idx,) + tuple(packed)]
        ext.spatial_branch_add_relu(out, *tensors, s, stride, dilation,
                                    identity_nonneg or leave_inactive,
                                    sums=sums)
        return out
    return spatial_branch_add_relu_reference(out, x, identity, idx, *packed,
                                             s, stride, dilation,
                                             leave_inactive=leave_inactive,
                                             sums=sums)


def spatial_branch_add_relu_reference(out, x, identity, idx, w1p, b1, w2p,
                                      b2, w3p, b3, s, stride=1, dilation=1,
                                      identity_nonneg=False,
                                      leave_inactive=False,
                                      sums=None) -> torch.Tensor:
    """Pure-PyTorch :func:`spatial_branch_add_relu` (same arguments and
    result up to float rounding; no argument checks): the dense branch,
    multiplied by the expanded patch mask, added to the identity.
    ``leave_inactive``, ``sums``: as :func:`_spatial_branch`'s (the
    inactive pixels keep the identity's values; the active pixels'
    channel sums)."""
    n, c_in = x.shape[:2]
    width, c_out = b1.shape[0], out.shape[1]
    w1 = unpack_panels(w1p, c_in, width).t()[:, :, None, None]
    w2 = unpack_panels(w2p, 9 * width, width).view(3, 3, width, width) \
        .permute(3, 2, 0, 1)
    w3 = unpack_panels(w3p, width, c_out).t()[:, :, None, None]
    h = F.conv2d(x, w1, b1).relu_()
    h = F.conv2d(h, w2, b2, stride, dilation, dilation).relu_()
    y = F.conv2d(h, w3, b3)
    ho, wo = out.shape[2:]
    gate = torch.zeros(n, -(-ho // s), -(-wo // s), dtype=x.dtype)
    if idx.numel():
        gate[idx[:, 0], idx[:, 1], idx[:, 2]] = 1
    mask = gate.repeat_interleave(s, 1).repeat_interleave(s, 2)[:, :ho, :wo]
    res = (identity + y * mask[:, None]).relu_()
    if leave_inactive:
        res = torch.where(mask[:, None] > 0, res, identity)
    out.copy_(res)
    if sums is not None:
        sums.copy_(torch.where(mask[:, None] > 0, out, 0.).sum(dim=(2, 3)))
    return out
