"""Gate-to-mask expansion: the one place that turns a masker's gates into
the masks the masked-dense forward multiplies by, so that training, masked
-dense evaluation, FLOPs counting and dynamic inference agree exactly.

Source: paper sec. 3.2 and fig. 2 (spatial masks nearest-upsampled from the
patch grid, channel-group masks); docs/method.md sec. 1 (conv1 needs the
mask dilated by conv2's kernel).
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F


def expand_spatial_gate(gate: torch.Tensor, granularity: int,
                        out_hw: Tuple[int, int]) -> torch.Tensor:
    """Patch gates to a pixel mask: output pixel (i, j) takes the gate of
    patch (i // S, j // S); the last row/column of patches may be partial.

    Args:
        gate: (N, gh, gw) gates.
        granularity: S.
        out_hw: (H_out, W_out).

    Returns:
        (N, 1, H_out, W_out) mask, differentiable w.r.t. ``gate``.
    """
    s = granularity
    m = gate.repeat_interleave(s, dim=1).repeat_interleave(s, dim=2)
    return m[:, None, :out_hw[0], :out_hw[1]]


def conv1_needed_mask(mask: torch.Tensor, stride: int, in_hw: Tuple[int, int],
                      dilation: int = 1) -> torch.Tensor:
    """Input-grid pixels whose conv1 output a kept output pixel reads: the
    output mask dilated by the 3x3 kernel of conv2 and mapped back through its
    stride.

    Args:
        mask: (N, 1, H_out, W_out) output mask.
        stride: conv2 stride.
        in_hw: (H_in, W_in), the conv1 output size.
        dilation: conv2 dilation (padding = dilation).

    Returns:
        (N, 1, H_in, W_in) mask in {0, 1}, differentiable (max-pool gradient).
    """
    n = mask.shape[0]
    hi, wi = in_hw
    if stride == 1 and dilation == 1:
        return F.max_pool2d(mask, 3, 1, 1)
    # place each output pixel at its centre tap on the input grid, then dilate
    up = mask.new_zeros(n, 1, hi, wi)
    ho, wo = mask.shape[-2:]
    up[:, :, :(ho - 1) * stride + 1:stride, :(wo - 1) * stride + 1:stride] = mask
    k = 2 * dilation + 1
    return F.max_pool2d(up, k, 1, dilation)


def expand_channel_gate(gate: torch.Tensor, granularity: int) -> torch.Tensor:
    """Group gates to a channel mask: channel c takes the gate of group c // G.

    Args:
        gate: (N, n_groups).
        granularity: G.

    Returns:
        (N, n_groups * G, 1, 1) mask.
    """
    return gate.repeat_interleave(granularity, dim=1)[:, :, None, None]


def conv_gate_densities(gate: torch.Tensor, geom
                        ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Per-sample mask densities of a convolutional block's gates, for its
    FLOPs count (:func:`laud_mm.structures.flops.op_densities`).

    Args:
        gate: spatial (N, gh, gw), channel (N, n_groups) or layer (N,)
            gates (float).
        geom: the block's :class:`~laud_mm.structures.geometry.
            BlockGeometry` (paradigm, granularity, stride, dilation, sizes).

    Returns:
        (density (N,), conv1_density (N,) or None): the kept fraction of
        output pixels / channel groups / the layer gate, and for spatial
        blocks the fraction of conv1 outputs the kept pixels read
        (:func:`conv1_needed_mask`).
    """
    if geom.paradigm == 'spatial':
        mask = expand_spatial_gate(gate, geom.granularity, geom.out_hw)
        return mask.mean(dim=(1, 2, 3)), conv1_needed_mask(
            mask, geom.stride, geom.in_hw, geom.dilation).mean(dim=(1, 2, 3))
    if geom.paradigm == 'channel':
        return gate.mean(dim=1), None
    return gate, None


def masked_avg_pool(h: torch.Tensor, mask: Optional[torch.Tensor]
                    ) -> torch.Tensor:
    """Mean of ``h`` over the pixels where ``mask`` is 1 (the spatial SE
    squeeze over the active region).

    Args:
        h: (N, C, H, W) features.
        mask: (N, 1, H, W) mask in {0, 1} (differentiable, e.g. a
            straight-through Gumbel gate), or None for the plain mean.

    Returns:
        (N, C, 1, 1) of h's dtype: ``sum(h * mask) / max(1, sum(mask))`` per
        sample and channel (0 for a sample without kept pixels), summed and
        counted in float32 whatever h's dtype (a bfloat16 count is not exact
        beyond 256 pixels); with ``mask=None`` ``F.adaptive_avg_pool2d(h,
        1)`` (torchvision's SE, bit for bit).

    Raises:
        ValueError: if the shapes do not match.
    """
    if mask is None:
        return F.adaptive_avg_pool2d(h, 1)
    if mask.dim() != 4 or mask.shape[1] != 1 or \
            mask.shape[0] != h.shape[0] or mask.shape[2:] != h.shape[2:]:
        raise ValueError(f'mask {tuple(mask.shape)} must be (N, 1, H, W) for '
                         f'features {tuple(h.shape)}')
    num = (h * mask).sum(dim=(2, 3), keepdim=True, dtype=torch.float32)
    den = mask.sum(dim=(2, 3), keepdim=True, dtype=torch.float32)
    return (num / den.clamp_min(1.)).to(h.dtype)
