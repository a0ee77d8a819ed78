"""CUDA dynamic inference of LAUD RegNetY blocks (spatial, channel, layer).

The same function as the CPU path (:mod:`laud_mm.models.regnet.dynamic`)
and the masked-dense block (1e-4 relative in fp32), scheduled for a GPU as
the ResNet one (:mod:`laud_mm.models.resnet.dynamic_cuda`: cuDNN / cuBLAS
for the dense work on gathered data, the CUDA gather / scatter kernels,
device-side index lists, one deferred host read per block, queued behind
conv1 / the shortcut; folded weights cast to the compute dtype, autocast's
when on):

- spatial: masker as a one-channel conv + pool, dense conv1, the active
  patches' windows gathered, grouped conv2 on them, the SE squeeze over the
  kept pixels (sum of each sample's active patches inside the map divided
  by their pixel count), conv3, scatter-add + ReLU into the shortcut; dense
  conv2 / conv3 with the same masked squeeze from
  :data:`laud_mm.ops.policy.SPATIAL_DENSE_THRESHOLD_CUDA` on.
- channel: batched over the samples instead of the CPU path's loop over
  distinct gate patterns (each pattern costs host waits). Per sample the
  conv groups of conv2 that hold a kept channel (padded to the batch's
  largest count A with a masked-out group): conv1 for their channels as one
  batched GEMM, masked to the kept channels (exact zeros elsewhere, as the
  masked-dense block); conv2 as one grouped conv with N x A groups (weights
  of each active group); the SE squeeze over all channels (dropped ones are
  zero) and the excitation of the kept ones; conv3 as one batched GEMM from
  the active groups' channels accumulated into the shortcut. conv2 costs the
  active groups, not the kept channels (``expected_active_conv_groups`` in
  the FLOPs count and the predictor prices the same).
- layer: the dense block on the kept samples, scattered into their rows of
  the shortcut (the others relu(shortcut)).

Source: paper sec. 3.4 and sec. 4.3.2 (RegNetY); docs/method.md sec. 1.
"""
import torch
import torch.nn.functional as F

from ...ops import policy
from ...ops.indexing import HostRead, active_index, kept_index
from ...ops.patches import _gather, _scatter
from ..layers.dynamic import (cast_folded, compute_dtype, forced_gate,
                              no_autocast, sample_gate)
from ..layers.masks import expand_channel_gate, expand_spatial_gate
from .dynamic import CUDA_PATHS, folded_regnety


def _prepare(block, x):
    cdt = compute_dtype(x)
    return cast_folded(folded_regnety(block), cdt), x.to(cdt)


def spatial(block, x, geom):
    """CUDA spatial path (see the module docstring)."""
    fb, xc = _prepare(block, x)
    with no_autocast(x):
        return _spatial(block, xc, fb, geom)


def _spatial(block, x, fb, geom):
    s = block.granularity
    gh, gw = geom.patch_grid
    ho, wo = geom.out_hw
    n = x.shape[0]
    w = fb.width
    masker = block.masker
    # keep - skip logit, pooled (linear); a forced gate replaces the
    # decision, not the cost
    diff = F.adaptive_avg_pool2d(
        F.conv2d(x, fb.wl, fb.bl), (gh, gw))[:, 0]
    gate = (diff >= 0).to(x.dtype) if masker.forced_gate is None \
        else forced_gate(masker, (n, gh, gw), x)
    idx_all, pmap, count = active_index(gate > 0.5)
    pending = HostRead(count)
    ident = fb.shortcut(x)
    h1 = F.conv2d(x, fb.w1, fb.b1)  # ReLU fused into the gather
    (p,) = pending.get()  # the block's host synchronisation
    total = gate.numel()
    if p == 0:
        return torch.relu(ident), gate
    if p >= policy.SPATIAL_DENSE_THRESHOLD_CUDA * total:
        h = fb.conv2(h1.relu_())
        if p < total:
            mask = expand_spatial_gate(gate, s, geom.out_hw)
            z = (h * mask).sum(dim=(2, 3)) / \
                mask.sum(dim=(2, 3)).clamp_min(1.)
        else:
            mask, z = None, h.mean(dim=(2, 3))
        h.mul_(fb.excite(z)[:, :, None, None])
        y = F.conv2d(h, fb.w3, fb.b3)
        if mask is not None:
            y.mul_(mask)
        return y.add_(ident).relu_(), gate
    idx = idx_all[:p]
    win = _gather(h1, idx, s, fb.stride, 1, w, True)
    h = fb.conv2(win, padding=0)  # (P, w, S, S)
    if fb.se1 is not None:
        sample = idx[:, 0]
        ar = torch.arange(s, device=x.device)
        rows = (idx[:, 1:2] * s + ar) < ho  # (P, S)
        cols = (idx[:, 2:3] * s + ar) < wo
        valid = (rows[:, :, None] & cols[:, None, :]).to(h.dtype)
        psum = torch.einsum('pchw,phw->pc', h, valid)
        z = h.new_zeros(n, w).index_add_(0, sample, psum)
        cnt = h.new_zeros(n).index_add_(0, sample, valid.sum(dim=(1, 2)))
        z = z / cnt.clamp_min(1.)[:, None]
        h.mul_(fb.excite(z).index_select(0, sample)[:, :, None, None])
    y = F.conv2d(h, fb.w3, fb.b3)
    return _scatter(ident, y, idx, (s, s), ident is not x, pmap=pmap), gate


def channel(block, x, geom):
    """CUDA channel path (see the module docstring)."""
    gate = sample_gate(block, x)
    fb, xc = _prepare(block, x)
    with no_autocast(x):
        return _channel(block, xc, fb, gate)


def _channel(block, x, fb, gate):
    n, c_in, h, w_ = x.shape
    gw, groups, width = fb.gw, fb.groups, fb.width
    keep = expand_channel_gate(gate, block.granularity)[:, :, 0, 0] > 0.5
    act = keep.view(n, groups, gw).any(dim=2)  # (N, groups)
    a_cnt = act.sum(1)
    k_cnt = keep.sum(1)
    pending = HostRead(a_cnt.max(), k_cnt.min())
    ident = fb.shortcut(x)
    a_max, k_min = pending.get()  # the block's host synchronisation
    if k_min == width:
        return fb.branch(x).add_(ident).relu_(), gate
    ho, wo = ident.shape[-2:]
    c_out = ident.shape[1]
    out = ident.clone(memory_format=torch.contiguous_format) \
        if ident is x else ident.contiguous()
    o = out.view(n, c_out, ho * wo)
    if a_max:
        # (N, A) active conv groups, padding: group 0 with a valid flag off
        agi = kept_index(act, a_max, 0)
        valid = torch.arange(a_max, device=x.device)[None] < a_cnt[:, None]
        ch = (agi[:, :, None] * gw +
              torch.arange(gw, device=x.device)).reshape(n, a_max * gw)
        m = (keep.gather(1, ch) & valid.repeat_interleave(gw, 1)
             ).to(x.dtype)[:, :, None]  # (N, A gw, 1): kept channel slots
        flat = ch.reshape(-1)
        h1 = torch.baddbmm(fb.b1.index_select(0, flat).view(n, -1, 1),
                           fb.w1m.index_select(0, flat).view(n, -1, c_in),
                           x.reshape(n, c_in, h * w_)).relu_().mul_(m)
        w2g = fb.w2.view(groups, gw, gw, 3, 3).index_select(
            0, agi.reshape(-1)).view(n * a_max * gw, gw, 3, 3)
        h2 = F.conv2d(h1.view(1, n * a_max * gw, h, w_), w2g,
                      fb.b2.index_select(0, flat), fb.stride, 1, 1,
                      n * a_max).relu_().view(n, a_max * gw, ho * wo).mul_(m)
        if fb.se1 is not None:
            # squeeze over every channel (dropped ones are zero; padded
            # slots add zeros), excitation of the slots' channels
            z = h2.new_zeros(n, width).scatter_add_(1, ch, h2.mean(dim=2))
            h2.mul_(fb.excite(z).gather(1, ch)[:, :, None])
        w3s = fb.w3m.t().index_select(0, flat).view(n, -1, c_out)
        o.baddbmm_(w3s.transpose(1, 2), h2)
    o.add_(fb.b3.view(1, -1, 1)).relu_()
    return out, gate


def layer(block, x, geom):
    """CUDA layer path (see the module docstring)."""
    gate = sample_gate(block, x)
    fb, xc = _prepare(block, x)
    with no_autocast(x):
        return _layer(xc, fb, gate)


def _layer(x, fb, gate):
    n = x.shape[0]
    idx_all, pos, count = active_index(gate > 0.5)
    pending = HostRead(count)
    ident = fb.shortcut(x)
    (n_on,) = pending.get()  # the block's host synchronisation
    if n_on == n:
        return fb.branch(x).add_(ident).relu_(), gate
    if n_on == 0:
        return torch.relu(ident), gate
    rows = idx_all[:n_on, 0]
    res = fb.branch(x.index_select(0, rows)).contiguous()
    idx = torch.zeros(n_on, 3, dtype=torch.int64, device=x.device)
    idx[:, 0] = rows
    out = _scatter(ident, res, idx, tuple(ident.shape[-2:]), ident is not x,
                   pmap=pos.view(n, 1, 1))
    return out, gate


CUDA_PATHS.update(dict(spatial=spatial, channel=channel, layer=layer))
