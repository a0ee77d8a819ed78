"""CUDA dynamic inference of LAUD bottlenecks (spatial, channel, layer).

The same function as the CPU path (:mod:`laud_mm.models.resnet.dynamic`) and
the masked-dense block (``LAUDBottleneck._masked_dense``: within 1e-4
relative in fp32), scheduled for a GPU:

- dense convolutions and GEMMs on gathered data run on cuDNN / cuBLAS
  (``F.conv2d``, ``torch.baddbmm``); the gather / scatter steps run the CUDA
  kernels of ``csrc/cuda`` (``torch.ops.laud_mm.*``): patch gather with the
  3 x 3 halo and conv1's ReLU, scatter + residual add + ReLU (a pass over
  the map, or over the active patches only when the block writes into its
  own non-negative input), kept-channel weight gather;
- index lists (active patches, kept channels, kept samples) are built on the
  device (:func:`laud_mm.ops.indexing.active_index`, ``kept_index``): no
  ``nonzero`` / ``.item()`` / ``unique``;
- **one host synchronisation per block**: the count that fixes the size of
  the gathered tensors (active patches P, the largest kept-channel count k,
  the kept samples) is copied to pinned memory without blocking and read
  with :class:`laud_mm.ops.indexing.HostRead` after the work that does not
  depend on it has been queued (spatial: conv1 over the map and the
  shortcut; channel, layer: the shortcut), so the device keeps running
  while the host waits. Everything runs on the current CUDA stream.
- dtypes: the input's, or autocast's (float16 / bfloat16) when autocast is
  on: the BN-folded weights are cast once per dtype
  (:func:`laud_mm.models.layers.dynamic.cast_folded`) and the block runs
  with autocast off in that dtype. The maskers run as the masked-dense
  block runs them (a channel / layer masker under autocast; the spatial
  masker as the one-channel conv of its folded logit difference).

Per paradigm:

- spatial: gate from the masker (one-channel 1x1 conv + average pool to
  the patch grid), dense conv1 (its halo is needed around every patch),
  conv2 / conv3 on the gathered windows of the active patches
  (``spatial_patch_convs``: cuDNN, GEMMs for S = 1), scatter-add + ReLU
  into the shortcut; from :data:`laud_mm.ops.policy.
  SPATIAL_DENSE_THRESHOLD_CUDA` active patches on, dense conv2 / conv3 and
  a mask.
- channel: per-sample kept channels padded to a multiple of
  :data:`~laud_mm.ops.policy.CHANNEL_PAD_CUDA` with a zero channel, conv1
  as one batched GEMM of per-sample weight rows, conv2 as one batched GEMM
  over the 3 x 3 windows (im2col as one gather for the batch; weights from
  the kept-weight gather kernel; the columns take 9x conv1's output),
  conv3 as one batched GEMM accumulated into the shortcut, then bn3's
  shift and the ReLU.
- layer: the dense branch on the kept samples (gathered rows), added into
  their rows of the shortcut with the scatter kernel; the other samples
  output relu(shortcut) (or stay as they are in an owned input).

Run on an H200 once (docs/benchmarks.md, "CUDA"): equal to masked-dense,
each operator dispatched once per batch, but host-bound (35 - 57
Python-dispatched operators per block then, R50 at batch 128; since, the
index lists use ``torch.nonzero_static`` and the kept-channel lists a
sort: 23 - 52 top-level operators per block instead of 29 - 60,
``tools/analysis_tools/count_dispatch.py`` on 2 x 3 x 64 x 64) and
slower than the static network
except for layer and spatial skipping at low rates; the thresholds are not
tuned yet. The channel path's conv2 was a grouped conv with a group per
sample then, which cuDNN ran as about one kernel per group (2780 kernels
per R50 forward at batch 128); it is now one batched GEMM over windows
gathered for the whole batch, not yet timed on a GPU.
``tools/gpu_check.sh`` measures it.

Source: paper sec. 3.4 and appendix B (gather -> compute -> scatter-add
with fused operators); docs/method.md sec. 1.
"""
import functools

import torch
import torch.nn.functional as F

from ...ops import policy
from ...ops.channel_weights import _gather_kept
from ...ops.indexing import HostRead, active_index, kept_index
from ...ops.patches import _gather, _scatter, _scatter_patches
from ..layers.dynamic import (cast_folded, compute_dtype, is_autocast,
                              no_autocast, owns_input, sample_gate)
from ..layers.masks import expand_spatial_gate
from ..layers.spatial_logit_record import spatial_gate
from .dynamic import CUDA_PATHS, folded, spatial_patch_convs


def _prepare(block, x):
    """(folded weights in the compute dtype, x in it, autocast was on)."""
    cdt = compute_dtype(x)
    return cast_folded(folded(block), cdt), x.to(cdt), is_autocast(x)


def _shortcut(fb, x, autocast_on):
    """The folded shortcut; an unfoldable downsample module (avg_down)
    runs as autocast would run it, cast to x's dtype."""
    if fb.ds_module is None:
        return fb.shortcut(x)
    with torch.autocast(x.device.type, enabled=autocast_on):
        return fb.ds_module(x).to(x.dtype)


def spatial(block, x, geom):
    """CUDA spatial path (see the module docstring)."""
    fb, xc, ac = _prepare(block, x)
    with no_autocast(x):
        return _spatial(block, x, xc, fb, geom, ac)


def _spatial(block, x_in, x, fb, geom, ac):
    s = block.granularity
    gh, gw = geom.patch_grid
    n = x.shape[0]
    width = fb.w1.shape[0]
    gate = spatial_gate(fb, block.masker, x, (n, gh, gw))
    idx_all, pmap, count = active_index(gate > 0.5)
    pending = HostRead(count)
    # queued before the wait: independent of the count
    ident = _shortcut(fb, x, ac)
    h1 = F.conv2d(x, fb.w1, fb.b1)  # ReLU fused into the gather
    (p,) = pending.get()  # the block's host synchronisation
    # an owned input (the previous block's ReLU output) may be written
    owned = owns_input(block, x_in) and x is x_in and ident is x
    total = gate.numel()
    if p == 0:
        return (x if owned else torch.relu(ident)), gate
    if p >= policy.SPATIAL_DENSE_THRESHOLD_CUDA * total:
        h = fb.conv2(h1.relu_()).relu_()
        y = F.conv2d(h, fb.w3, fb.b3)
        if p < total:
            y.mul_(expand_spatial_gate(gate, s, geom.out_hw))
        return y.add_(ident).relu_(), gate
    idx = idx_all[:p]
    win = _gather(h1, idx, s, fb.stride, fb.dilation, width, True)
    y = spatial_patch_convs(fb, win, s)  # (P, C_out, S, S)
    if owned:  # touch the active patches only
        return _scatter_patches(x, y, idx, (s, s)), gate
    out = _scatter(ident, y, idx, (s, s), ident is not x, pmap=pmap)
    return out, gate


def _im2col_index(fb, h: int, w: int, kh: int, kw: int,
                  device: torch.device) -> torch.Tensor:
    """Flat positions, in the zero-padded (H + 2p) x (W + 2p) map, of every
    tap of conv2's kh x kw windows: (kh * kw * Ho * Wo,) int64, tap-major
    (the order of ``F.unfold``'s rows within a channel), for conv2's
    stride, padding and dilation; cached on the folded block per input
    size and device (source: im2col, as a gather index).
    """
    cache = fb.__dict__.setdefault('_im2col_index', {})
    key = (h, w, kh, kw, device)
    if key not in cache:
        p, st, d = fb.padding, fb.stride, fb.dilation
        ho = (h + 2 * p - d * (kh - 1) - 1) // st + 1
        wo = (w + 2 * p - d * (kw - 1) - 1) // st + 1
        ar = functools.partial(torch.arange, device=device)
        rows = ar(kh).view(kh, 1, 1, 1) * d + ar(ho).view(1, 1, ho, 1) * st
        cols = ar(kw).view(1, kw, 1, 1) * d + ar(wo).view(1, 1, 1, wo) * st
        cache[key] = (rows * (w + 2 * p) + cols).reshape(-1)
    return cache[key]


def channel(block, x, geom):
    """CUDA channel path (see the module docstring)."""
    n = x.shape[0]
    gate = sample_gate(block, x)  # as masked-dense
    fb, xc, ac = _prepare(block, x)
    with no_autocast(x):
        return _channel(block, x, xc, fb, gate, ac)


def _channel(block, x_in, x, fb, gate, ac):
    n, c_in, h, w = x.shape
    width = fb.w1.shape[0]
    keep_ch = (gate > 0.5).repeat_interleave(block.granularity, dim=1)
    counts = keep_ch.sum(1)
    k_lo, k_hi = torch.aminmax(counts)  # one operator for both
    pending = HostRead(k_hi, k_lo)
    ident = _shortcut(fb, x, ac)
    k_max, k_min = pending.get()  # the block's host synchronisation
    if k_min == width:
        return fb.branch(x).add_(ident).relu_(), gate
    ho, wo = ident.shape[-2:]
    c_out = ident.shape[1]
    # accumulate into: the downsample output, an owned input, or a copy
    if ident is not x:
        out = ident.contiguous()
    elif owns_input(block, x_in) and x is x_in and x.is_contiguous():
        out = x
    else:
        out = x.clone(memory_format=torch.contiguous_format)
    o = out.view(n, c_out, ho * wo)
    pad = policy.CHANNEL_PAD_CUDA
    k = min(width, -(-k_max // pad) * pad)
    if k:
        chs = kept_index(keep_ch, k, width)  # (N, k), padding: zero channel
        w1p, b1p, w2p, b2p, w3tp = fb.padded()
        flat = chs.reshape(-1)
        h1 = torch.baddbmm(b1p.index_select(0, flat).view(n, k, 1),
                           w1p.index_select(0, flat).view(n, k, c_in),
                           x.reshape(n, c_in, h * w)).relu_()
        w2s = _gather_kept(w2p, chs)  # (N, k, k, kh, kw)
        kh, kw = w2s.shape[-2:]
        # conv2 as one batched GEMM over the windows, gathered for the whole
        # batch: a grouped conv with a group per sample runs in cuDNN as
        # about one kernel per group, and F.unfold loops over the samples
        p = fb.padding
        hp = F.pad(h1.view(n, k, h, w), (p, p, p, p)) if p else h1
        taps = _im2col_index(fb, h, w, kh, kw, x.device)
        cols = hp.reshape(n, k, -1).index_select(2, taps).view(
            n, k * kh * kw, ho * wo)
        h2 = torch.baddbmm(b2p.index_select(0, flat).view(n, k, 1),
                           w2s.view(n, k, -1), cols).relu_()
        w3s = w3tp.index_select(0, flat).view(n, k, c_out).transpose(1, 2)
        o.baddbmm_(w3s, h2)
    o.add_(fb.b3.view(1, -1, 1)).relu_()
    return out, gate


def layer(block, x, geom):
    """CUDA layer path (see the module docstring)."""
    n = x.shape[0]
    gate = sample_gate(block, x)  # as masked-dense
    fb, xc, ac = _prepare(block, x)
    with no_autocast(x):
        return _layer(block, x, xc, fb, gate, ac)


def _layer(block, x_in, x, fb, gate, ac):
    n = x.shape[0]
    idx_all, pos, count = active_index(gate > 0.5)
    pending = HostRead(count)
    ident = _shortcut(fb, x, ac)
    (n_on,) = pending.get()  # the block's host synchronisation
    if n_on == n:
        return fb.branch(x).add_(ident).relu_(), gate
    owned = owns_input(block, x_in) and x is x_in and ident is x and \
        x.is_contiguous()
    if n_on == 0:
        return (x if owned else torch.relu(ident)), gate
    rows = idx_all[:n_on, 0]
    res = fb.branch(x.index_select(0, rows)).contiguous()
    hw = tuple(ident.shape[-2:])
    idx = torch.zeros(n_on, 3, dtype=torch.int64, device=x.device)
    idx[:, 0] = rows
    if owned:  # kept rows updated in place, the others untouched
        return _scatter_patches(x, res, idx, hw), gate
    # one pass: relu(shortcut + branch) on kept rows, relu(shortcut) else
    out = _scatter(ident, res, idx, hw, ident is not x,
                   pmap=pos.view(n, 1, 1))
    return out, gate


CUDA_PATHS.update(dict(spatial=spatial, channel=channel, layer=layer))
