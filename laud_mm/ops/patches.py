"""Patch gather (with halo) and fused scatter-add + ReLU for spatially sparse
bottlenecks, with a pure-PyTorch reference and the compiled kernels of
``csrc/`` (C++ on CPU, CUDA on GPU) behind one API.

Geometry (shared with :func:`laud_mm.models.layers.masks.expand_spatial_gate`):
the output map (H_out, W_out) is split into S x S patches, patch (gi, gj)
covering output rows gi*S .. gi*S+S-1 (the last row / column of patches may be
partial). A 3x3 conv2 with stride s and dilation d (padding d) reads, for that
patch, the conv1-output window of (S-1)*s + 2d + 1 rows starting at row
gi*S*s - d (likewise for columns); pixels outside the image are the zero
padding of conv2.

Source: paper sec. 3.4 and appendix ("Fusing the gather operation and the
dynamic convolution", "Fusing the scatter operation and the add operation"):
the masker yields the indices of the active patches; each patch records its
sample and location, so the whole batch is processed at once.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .cuda_ops import cuda_op
from .dispatch import extension, use_cuda_kernels, use_kernels


def window_size(granularity: int, stride: int, dilation: int = 1) -> int:
    """Side of the conv1-output window read by one S x S output patch of a
    3x3 conv: ``(S - 1) * stride + 2 * dilation + 1`` pixels."""
    return (granularity - 1) * stride + 2 * dilation + 1


def _check_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f'{name}={value!r} must be an integer >= {minimum}')
    return value


def _check_idx(idx: torch.Tensor, n: int, grid: Optional[Tuple[int, int]],
               device: torch.device) -> None:
    if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or \
            idx.shape[1] != 3 or idx.dtype != torch.int64:
        raise ValueError('idx must be an int64 tensor of shape (P, 3) holding '
                         f'(sample, patch row, patch column), got '
                         f'{getattr(idx, "dtype", type(idx))} '
                         f'{tuple(getattr(idx, "shape", ()))}')
    if idx.device != device:
        raise ValueError(f'idx is on {idx.device}, the features on {device}')
    if idx.numel() and grid is not None:
        lo = idx.min(dim=0).values
        hi = idx.max(dim=0).values
        if bool((lo < 0).any()) or int(hi[0]) >= n or int(hi[1]) >= grid[0] \
                or int(hi[2]) >= grid[1]:
            raise ValueError(f'idx holds patches outside the batch of {n} and '
                             f'the patch grid {grid}')


def patch_indices(gate: torch.Tensor) -> torch.Tensor:
    """Indices of the active patches of a spatial gate.

    Args:
        gate: (N, gh, gw) gates in {0, 1}.

    Returns:
        (P, 3) int64 (sample, patch row, patch column), one row per gate > 0.5,
        in row-major order.

    Raises:
        ValueError: if ``gate`` is not 3-D.
    """
    if gate.dim() != 3:
        raise ValueError(f'gate must be (N, gh, gw), got {tuple(gate.shape)}')
    return (gate > 0.5).nonzero()


def gather_patches(feat: torch.Tensor, idx: torch.Tensor, granularity: int,
                   stride: int = 1, dilation: int = 1,
                   channels: Optional[int] = None,
                   relu: bool = False) -> torch.Tensor:
    """Gather the conv2 input window (with its 3x3 halo, zero outside the
    image) of every active output patch.

    Args:
        feat: (N, C_t, H, W) conv1 output (NCHW; made contiguous if needed).
        idx: (P, 3) int64 (sample, patch row, patch column) of output patches.
        granularity: S, output patch side in pixels (>= 1).
        stride: conv2 stride (>= 1).
        dilation: conv2 dilation (>= 1, padding = dilation).
        channels: gather only the first ``channels`` channels (default C_t;
            used to skip the fused masker channel of conv1).
        relu: apply ReLU to the gathered values (fuses conv1's ReLU).

    Returns:
        (P, channels, K, K) windows, K = ``window_size(S, stride, dilation)``;
        a valid 3x3 conv (stride, dilation) of them gives the S x S patches.

    Raises:
        ValueError: bad shapes, dtypes or hyper-parameters (names the
            argument).
    """
    _check_int('granularity', granularity)
    _check_int('stride', stride)
    _check_int('dilation', dilation)
    if not isinstance(feat, torch.Tensor) or feat.dim() != 4:
        raise ValueError(f'feat must be a 4-D (N, C, H, W) tensor, got '
                         f'{tuple(getattr(feat, "shape", ()))}')
    n, c_t, h, w = feat.shape
    if channels is None:
        channels = c_t
    _check_int('channels', channels, 0)
    if channels > c_t:
        raise ValueError(f'channels={channels} exceeds the {c_t} channels of feat')
    _check_idx(idx, n, None, feat.device)
    return _gather(feat, idx, granularity, stride, dilation, channels, relu)


def _gather(feat, idx, granularity, stride, dilation, channels, relu):
    """:func:`gather_patches` without argument checks (internal fast path)."""
    if use_cuda_kernels(feat):
        return cuda_op('gather_patches')(feat.contiguous(), idx.contiguous(),
                                         granularity, stride, dilation,
                                         channels, relu)
    if use_kernels(feat) and feat.dtype in (torch.float32, torch.float64):
        return extension().gather_patches(feat.contiguous(), idx.contiguous(),
                                          granularity, stride, dilation,
                                          channels, relu)
    return gather_patches_reference(feat, idx, granularity, stride, dilation,
                                    channels, relu)


def gather_patches_reference(feat: torch.Tensor, idx: torch.Tensor,
                             granularity: int, stride: int = 1,
                             dilation: int = 1, channels: Optional[int] = None,
                             relu: bool = False) -> torch.Tensor:
    """Pure-PyTorch :func:`gather_patches` (same arguments and result): pad,
    then advanced indexing of the window rows and columns."""
    n, c_t, h, w = feat.shape
    channels = c_t if channels is None else channels
    s, st, d = granularity, stride, dilation
    k = window_size(s, st, d)
    p = idx.shape[0]
    if p == 0:
        return feat.new_zeros(0, channels, k, k)
    gh, gw = int(idx[:, 1].max()) + 1, int(idx[:, 2].max()) + 1
    # window origin in padded coordinates (pad d on top/left)
    pad_b = max(0, (gh - 1) * s * st + k - d - h)
    pad_r = max(0, (gw - 1) * s * st + k - d - w)
    src = feat[:, :channels]
    if relu:
        src = F.relu(src)
    src = F.pad(src, (d, pad_r, d, pad_b))
    ar = torch.arange(k, device=feat.device)
    rows = idx[:, 1:2] * (s * st) + ar  # (P, K)
    cols = idx[:, 2:3] * (s * st) + ar
    win = src.permute(0, 2, 3, 1)[idx[:, 0, None, None], rows[:, :, None],
                                  cols[:, None, :]]  # (P, K, K, C)
    return win.permute(0, 3, 1, 2).contiguous()


def _patch_size(granularity) -> Tuple[int, int]:
    if isinstance(granularity, (tuple, list)):
        if len(granularity) != 2:
            raise ValueError(f'granularity={granularity!r} must be S or (Sh, Sw)')
        return (_check_int('granularity', granularity[0]),
                _check_int('granularity', granularity[1]))
    s = _check_int('granularity', granularity)
    return s, s


def patch_map(idx: torch.Tensor, n: int, grid: Tuple[int, int]
              ) -> torch.Tensor:
    """(N, gh, gw) int64 map from patch to its row in ``idx`` (-1: inactive)."""
    pmap = torch.full((n, grid[0], grid[1]), -1, dtype=torch.int64,
                      device=idx.device)
    pmap[idx[:, 0], idx[:, 1], idx[:, 2]] = torch.arange(
        idx.shape[0], device=idx.device)
    return pmap


def scatter_add_relu(identity: torch.Tensor, patches: torch.Tensor,
                     idx: torch.Tensor, granularity,
                     inplace: bool = False,
                     identity_nonneg: bool = False) -> torch.Tensor:
    """Fused scatter + residual add + ReLU: ``relu(identity + scatter(patches))``
    where positions of inactive patches get ``relu(identity)``; the compiled
    CPU kernels make one pass over the output (patches of more than 4
    pixels) or two passes over L1-sized channel blocks (S = 1, 2: 3 - 7x
    faster than the one-pass kernel there,
    ``tools/analysis_tools/benchmark_kernels.py`` 'scatter' rows).

    Args:
        identity: (N, C, H_out, W_out) shortcut (identity or downsample).
        patches: (P, C, Sh, Sw) conv3 output of the active patches (parts of
            partial patches outside the map are ignored).
        idx: (P, 3) int64 (sample, patch row, patch column); distinct rows.
        granularity: S (square patches) or (Sh, Sw); layer skipping uses the
            whole map (H_out, W_out) with a 1 x 1 patch grid.
        inplace: overwrite ``identity`` (it must not be needed afterwards).
        identity_nonneg: ``identity`` is >= 0 everywhere (a ReLU output),
            so with ``inplace`` its inactive pixels are already the result
            and the CPU kernel skips them (the result is the same; inside a
            backbone an identity block's input is the previous block's ReLU
            output). Checked here: a negative value raises.

    Returns:
        (N, C, H_out, W_out) block output (``identity`` itself if inplace).

    Raises:
        ValueError: shape / dtype / device mismatch or patches outside the
            grid (names the argument); ``identity_nonneg=True`` with a
            negative ``identity``.
    """
    sh, sw = _patch_size(granularity)
    if not isinstance(identity, torch.Tensor) or identity.dim() != 4:
        raise ValueError('identity must be a 4-D (N, C, H, W) tensor')
    n, c, h, w = identity.shape
    if not isinstance(patches, torch.Tensor) or patches.dim() != 4 or \
            tuple(patches.shape[1:]) != (c, sh, sw) or \
            patches.shape[0] != getattr(idx, 'shape', (None,))[0]:
        raise ValueError(f'patches must be (P, {c}, {sh}, {sw}) with P = '
                         f'len(idx), got {tuple(getattr(patches, "shape", ()))}')
    if patches.dtype != identity.dtype or patches.device != identity.device:
        raise ValueError('patches and identity need the same dtype and device')
    grid = (-(-h // sh), -(-w // sw))
    _check_idx(idx, n, grid, identity.device)
    if identity_nonneg and identity.numel() and bool((identity < 0).any()):
        raise ValueError('identity_nonneg=True but identity has negative '
                         f'values (min {float(identity.min())})')
    return _scatter(identity, patches, idx, (sh, sw), inplace,
                    identity_nonneg=identity_nonneg)


def _scatter(identity, patches, idx, patch_hw, inplace, pmap=None,
             identity_nonneg=False):
    """:func:`scatter_add_relu` without argument checks (internal fast
    path); ``pmap`` may be given precomputed (:func:`patch_map`);
    ``identity_nonneg`` is trusted."""
    n, c, h, w = identity.shape
    sh, sw = patch_hw
    grid = (-(-h // sh), -(-w // sw))
    cuda = use_cuda_kernels(identity)
    if cuda or use_kernels(identity) and identity.dtype in (torch.float32,
                                                            torch.float64):
        ident = identity.contiguous()
        out = ident if inplace else torch.empty_like(ident)
        if pmap is None:
            pmap = patch_map(idx, n, grid)
        fn = cuda_op('scatter_add_relu') if cuda else \
            extension().scatter_add_relu
        fn(out, ident, patches.contiguous(), pmap, sh, sw, identity_nonneg)
        if inplace and out is not identity:
            identity.copy_(out)
            return identity
        return out
    return scatter_add_relu_reference(identity, patches, idx, (sh, sw),
                                      inplace)


def _scatter_patches(out, patches, idx, patch_hw):
    """``out = relu(out + scatter(patches))`` in place, touching the active
    patches only: ``out`` must be contiguous and already >= 0 everywhere (a
    ReLU output owned by the caller), ``idx`` distinct rows. The CUDA kernel
    launches one thread per active-patch element (no pass over the map);
    elsewhere the scatter with ``identity_nonneg`` (same result).

    Args:
        out: (N, C, H, W) non-negative, contiguous; updated and returned.
        patches: (P, C, Sh, Sw); idx: (P, 3) int64; patch_hw: (Sh, Sw).
    """
    if use_cuda_kernels(out) and patches.dtype == out.dtype:
        cuda_op('scatter_patches_add_relu')(out, patches.contiguous(),
                                            idx.contiguous(), *patch_hw)
        return out
    return _scatter(out, patches, idx, patch_hw, True, identity_nonneg=True)


def scatter_add_relu_reference(identity: torch.Tensor, patches: torch.Tensor,
                               idx: torch.Tensor, granularity,
                               inplace: bool = False) -> torch.Tensor:
    """Pure-PyTorch :func:`scatter_add_relu` (same arguments and result):
    scatter into a zero map padded to whole patches, add, ReLU."""
    n, c, h, w = identity.shape
    sh, sw = _patch_size(granularity)
    gh, gw = -(-h // sh), -(-w // sw)
    full = identity.new_zeros(n, gh, gw, c, sh, sw)
    full[idx[:, 0], idx[:, 1], idx[:, 2]] = patches
    full = full.permute(0, 3, 1, 4, 2, 5).reshape(n, c, gh * sh, gw * sw)
    full = full[:, :, :h, :w]
    if inplace:
        return identity.add_(full).relu_()
    return torch.relu(identity + full)
