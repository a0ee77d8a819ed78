"""The fused sparse branch of a channel-skipping bottleneck (CPU kernel).

For every sample n with kept channels ``K_n = chs[n, :counts[n]]`` (BN folded
into the weights, a zero padding channel at index ``width``)::

    h1 = relu(W1[K_n] x_n + b1[K_n])                   # conv1, 1x1
    h2 = relu(W2[K_n, K_n] * h1 + b2[K_n])             # conv2, 3x3
    out_n = relu(out_n + W3[:, K_n] h2 + b3)           # conv3, in place

which is the masked-dense block (a dropped channel's activations are zero).
:func:`channel_branch_add_relu` runs it with the compiled kernel
(``csrc/cpu/channel_conv_cpu.cpp``: output channels on the AVX-512 lanes, 7
pixels x 64 channels per tile, per-sample weight panels gathered once per
call, conv3's kept weight rows read in place from its 64-column panels
(:func:`~laud_mm.ops.pack_panels`), conv3 added into the output with
in-register transposes), in place
of the batched per-sample GEMMs, which run a sample's small conv1 GEMM far
below the static network's efficiency. The backbone figure: R50 channel
r = 0.5, 1.68x CPU-time speedup over the folded static network
(docs/benchmark_history.md, "LAUD-ResNet-50, 8 x 3 x 224 x 224" table, from
``tools/analysis_tools/benchmark_latency.py``).
:func:`channel_branch_add_relu_reference` is the same in PyTorch.

Source: paper sec. 3.2 (channel skipping), sec. 3.4 (scheduling: weights
gathered per sample, conv3 fused with the residual add).
"""
from typing import Optional

import torch
import torch.nn.functional as F

from .dispatch import check_float32_cpu, extension, layout_of, use_kernels
from .panels import unpack_panels


def channel_branch_isa() -> Optional[str]:
    """Instruction set of the compiled kernel's tiles on this CPU:
    'avx512f' (the fast one), 'generic' (plain loops: correct, not tuned;
    also on an AVX-512 CPU when the environment variable
    ``LAUD_MM_CPU_ISA=generic`` selects the portable kernels, read once per
    process: ``csrc/cpu/isa.h``) or None (``laud_mm._ext`` not built).

    Raises:
        ValueError: ``LAUD_MM_CPU_ISA`` is neither 'auto' nor 'generic'.
    """
    ext = extension()
    if ext is None or not hasattr(ext, 'channel_branch_isa'):
        return None
    return ext.channel_branch_isa()


def fast_channel_branch(x: torch.Tensor) -> bool:
    """Whether :func:`channel_branch_add_relu` runs the AVX-512 kernel for
    tensors like ``x`` (CPU, float32, compiled backend active).

    Args:
        x: any tensor of the call, e.g. the (N, C_in, H, W) block input.

    Returns:
        True only where the kernel is the fast path (the dynamic channel
        path's condition, ``laud_mm.ops.policy.CHANNEL_FUSED_CPU``).
        Source: paper sec. 3.4 (hardware-specific scheduling).
    """
    return (x.device.type == 'cpu' and x.dtype == torch.float32
            and use_kernels(x) and channel_branch_isa() == 'avx512f')


def _check(out, x, chs, counts, w1t, b1, w2t, b2, w3p, b3, stride, padding,
           dilation):
    names = dict(out=out, x=x, w1t=w1t, b1=b1, w2t=w2t, b2=b2, w3p=w3p, b3=b3)
    check_float32_cpu(names)
    if x.dim() != 4 or out.dim() != 4 or out.shape[0] != x.shape[0]:
        raise ValueError(f'x {tuple(x.shape)} and out {tuple(out.shape)} must '
                         f'be 4-D with the same batch size')
    n, c_in = x.shape[:2]
    width = b1.shape[0] - 1
    c_out = out.shape[1]
    shapes = dict(w1t=(c_in, width + 1), w2t=(9, width + 1, width + 1),
                  b2=(width + 1,), w3p=((width + 1) * c_out,),
                  b3=(c_out,))
    for k, shp in shapes.items():
        if tuple(names[k].shape) != shp:
            raise ValueError(f'{k} must have shape {shp}, got '
                             f'{tuple(names[k].shape)}')
    for k, v in dict(chs=chs, counts=counts).items():
        if not isinstance(v, torch.Tensor) or v.dtype != torch.int64:
            raise ValueError(f'{k} must be an int64 tensor, got '
                             f'{getattr(v, "dtype", type(v))}')
    if chs.dim() != 2 or chs.shape[0] != n or tuple(counts.shape) != (n,):
        raise ValueError(f'chs must be (N, k) and counts (N,) with N = {n}, '
                         f'got {tuple(chs.shape)} and {tuple(counts.shape)}')
    if counts.numel() and (int(counts.min()) < 0 or
                           int(counts.max()) > chs.shape[1]):
        raise ValueError(f'counts must lie in [0, {chs.shape[1]}], got '
                         f'[{int(counts.min())}, {int(counts.max())}]')
    if chs.numel() and (int(chs.min()) < 0 or int(chs.max()) > width):
        raise ValueError(f'chs must lie in [0, width = {width}], got '
                         f'[{int(chs.min())}, {int(chs.max())}]')
    if stride < 1 or dilation < 1 or padding < 0:
        raise ValueError(f'stride={stride}, dilation={dilation} must be >= 1 '
                         f'and padding={padding} >= 0')
    ho = (x.shape[2] + 2 * padding - 2 * dilation - 1) // stride + 1
    wo = (x.shape[3] + 2 * padding - 2 * dilation - 1) // stride + 1
    if tuple(out.shape[2:]) != (ho, wo):
        raise ValueError(f'out is {tuple(out.shape[2:])} but conv2 '
                         f'(stride={stride}, padding={padding}, '
                         f'dilation={dilation}) gives {(ho, wo)}')


def channel_branch_add_relu(out: torch.Tensor, x: torch.Tensor,
                            chs: torch.Tensor, counts: torch.Tensor,
                            w1t: torch.Tensor, b1: torch.Tensor,
                            w2t: torch.Tensor, b2: torch.Tensor,
                            w3p: torch.Tensor, b3: torch.Tensor,
                            stride: int = 1, padding: int = 1,
                            dilation: int = 1) -> torch.Tensor:
    """``out = relu(out + branch(x))`` over each sample's kept channels, in
    place (module docstring).

    Args:
        out: (N, C_out, Ho, Wo) shortcut, overwritten with the block output.
        x: (N, C_in, H, W) block input, NCHW or channels_last (the kernel
            then reads it and writes ``out`` in place in that layout,
            without transposing; ``out`` in another layout is converted
            and copied back).
        chs: (N, k) int64 kept channel indices per sample, ascending; entries
            from ``counts[n]`` on are ignored.
        counts: (N,) int64 number of kept channels per sample (0 ... k).
        w1t: (C_in, width + 1) conv1 weight transposed, column ``width``
            zero; b1: (width + 1,) with b1[width] = 0.
        w2t: (9, width + 1, width + 1) conv2 weight as [tap, in, out] with a
            zero padding channel; b2: (width + 1,).
        w3p: ((width + 1) * C_out,) conv3 weight transposed, (width + 1,
            C_out) with row ``width`` zero, in 64-column panels
            (:func:`~laud_mm.ops.pack_panels`; for C_out > 64 a row-major
            flattening of W3^T has the same size, which the checks cannot
            tell apart: pack it); b3: (C_out,).
        stride, padding, dilation: conv2's.

    Returns:
        ``out`` (float32; every tensor on the CPU).

    Raises:
        ValueError: a dtype, device or shape that does not match, counts or
            chs out of range (names the argument).
    """
    _check(out, x, chs, counts, w1t, b1, w2t, b2, w3p, b3, stride, padding,
           dilation)
    return _channel_branch(out, x, chs, counts,
                           (w1t, b1, w2t, b2, w3p, b3), stride, padding,
                           dilation)


def _channel_branch(out, x, chs, counts, packed, stride, padding, dilation,
                    sums=None):
    """:func:`channel_branch_add_relu` without argument checks (internal;
    ``packed`` = (w1t, b1, w2t, b2, w3p, b3)): the compiled kernel when
    built and C_out is a multiple of 16, else the reference. ``sums``: a
    contiguous float32 (N, C_out) tensor filled with the channel sums of
    the new ``out`` (by the kernel's output pass; the reference sums
    ``out`` afterwards), or None. A channels_last ``x`` runs the kernel in
    that layout (``out`` then taken in it too)."""
    if channel_branch_isa() is not None and use_kernels(x) and \
            out.shape[1] % 16 == 0:
        fmt = layout_of(x)
        tensors = [x.contiguous(memory_format=fmt)] + \
            [t.contiguous() for t in (chs, counts) + tuple(packed)]
        target = out if out.is_contiguous(memory_format=fmt) else \
            out.contiguous(memory_format=fmt)
        extension().channel_branch_add_relu(target, *tensors, stride,
                                            padding, dilation, sums=sums)
        if target is not out:
            out.copy_(target)
        return out
    channel_branch_add_relu_reference(out, x, chs, counts, *packed,
                                      stride, padding, dilation)
    if sums is not None:
        sums.copy_(out.sum(dim=(2, 3)))
    return out


def channel_branch_add_relu_reference(out, x, chs, counts, w1t, b1, w2t, b2,
                                      w3p, b3, stride=1, padding=1,
                                      dilation=1) -> torch.Tensor:
    """Pure-PyTorch :func:`channel_branch_add_relu` (same arguments and
    result up to float rounding; no argument checks beyond
    :func:`~laud_mm.ops.unpack_panels`' ValueError for a ``w3p`` of the
    wrong size): a loop over samples of conv1 / conv2 / conv3 with the kept
    channels' weights indexed."""
    width = b1.shape[0] - 1
    w3t = unpack_panels(w3p, width + 1, b3.shape[0])
    w2 = w2t.view(3, 3, width + 1, width + 1).permute(3, 2, 0, 1)
    for i in range(x.shape[0]):
        kept = chs[i, :int(counts[i])]
        acc = out[i] + b3[:, None, None]
        if kept.numel():
            h = F.conv2d(x[i:i + 1], w1t[:, kept].t()[:, :, None, None],
                         b1[kept]).relu_()
            h = F.conv2d(h, w2[kept][:, kept], b2[kept], stride, padding,
                         dilation).relu_()
            acc = acc + F.conv2d(h, w3t[kept].t()[:, :, None, None])[0]
        out[i] = acc.relu_()
    return out
