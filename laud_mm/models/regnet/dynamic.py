"""Dynamic inference of LAUD RegNetY blocks: compute only what the gates keep.

:func:`dynamic_regnety_forward` returns the same function as the
masked-dense eval block (``LAUDRegNetYBlock._masked_dense``), up to float
rounding (max abs diff <= 1e-4 in fp32, tested), while skipping the masked
work. BN is folded into the convolutions (cached on the block, refreshed
when a parameter or BN statistic changes).

- spatial (patch side S): the masker is fused into conv1 (one 1x1 conv with
  w + 1 outputs; the extra output is the keep-minus-skip logit, average-
  pooled to the patch grid - exact by linearity), conv1 runs densely (conv2's
  3x3 halo needs it around every patch), the conv2 input windows of the
  active patches are gathered (:mod:`laud_mm.ops`, halo included, zero
  outside the image, conv1's ReLU fused), conv2 (grouped, valid, stride) runs
  on the gathered windows. **SE over the kept pixels**: the squeeze of
  sample n is the sum of its active patches' conv2 outputs over the pixels
  inside the map, divided by their count (the masked mean of
  :func:`laud_mm.models.layers.masks.masked_avg_pool`); the two SE FCs run
  once per sample, the excitation rescales the gathered patches, conv3 runs
  on them, and a fused scatter-add + ReLU writes them into the shortcut.
  Above :data:`laud_mm.ops.policy.REGNETY_SPATIAL_DENSE_THRESHOLD` active patches the block computes
  conv2 / conv3 densely, with the same masked SE squeeze, and masks.
- channel (G channels per gate; conv2 has conv groups of ``group_width``):
  per distinct gate pattern (random patterns: per sample), conv1 computes the
  kept channels only; conv2 runs the conv groups that hold at least one kept
  channel (a grouped conv with the active groups' weights; dropped channels
  of an active group are exact zeros at its input, as in the masked-dense
  block), keeps the kept output channels; the SE FCs read / write the kept
  channels only; conv3 reads the kept channels. Any G dividing the width
  works; with G a multiple of the group width every active conv group is
  fully kept (conv2 density = channel density d); with the paper's G = 2 and
  group width 8 / 16 a conv group is active with probability
  ``1 - (1 - d) ** (gw / G)`` (:func:`laud_mm.structures.flops.
  expected_active_conv_groups`), which the FLOPs count and the latency
  predictor use. A sample with every channel off outputs
  ``relu(shortcut + bn3 shift)``.
- layer: the block (SE included) runs only on the samples whose gate is on;
  the others output ``relu(shortcut)``.

Source: paper sec. 3.4 (fused masker + conv1, gather + conv, scatter + add)
and sec. 4.3.2 (RegNetY: layer skipping also skips the memory-bound SE);
docs/method.md sec. 1 and 4.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...ops import policy
from ...ops.patches import _gather, _scatter
from ...structures.geometry import BlockGeometry
from ..layers.dynamic import (forced_gate, promote_residual,
                              residual_add_relu_, run_dynamic_path,
                              sample_gate)
from ..layers.folding import cached_fold, fold_conv_bn
from ..layers.gates import KEEP, SKIP
from ..layers.masks import (expand_channel_gate, expand_spatial_gate,
                            masked_avg_pool)

#: the CUDA variant of each paradigm's path (device-side indices, one
#: deferred host read per block): filled in by :mod:`.dynamic_cuda`, which
#: the package imports
CUDA_PATHS: dict = {}


class FoldedRegNetY:
    """BN-folded, detached weights of one :class:`LAUDRegNetYBlock`.

    Attributes:
        w1, b1: conv1 (w, C_in, 1, 1), (w,).
        w2, b2: conv2 (w, gw, 3, 3), (w,); ``groups``, ``gw``, ``stride``.
        w3, b3: conv3 (C_out, w, 1, 1), (C_out,).
        se1, sb1, se2, sb2: SE FCs as matrices (se, w), (se,), (w, se), (w,)
            or None without SE.
        wd, bd: downsample (C_out, C_in, 1, 1), (C_out,) or None.
        w1x, b1x: spatial blocks: conv1 with the masker's keep-minus-skip
            logit as an extra output (w + 1, C_in, 1, 1), (w + 1,).
    """

    def __init__(self, block: nn.Module):
        self.w1, self.b1 = fold_conv_bn(block.conv1, block.bn1)
        self.w2, self.b2 = fold_conv_bn(block.conv2, block.bn2)
        self.w3, self.b3 = fold_conv_bn(block.conv3, block.bn3)
        self.groups = block.conv2.groups
        self.gw = block.conv2.out_channels // self.groups
        self.stride = block.conv2.stride[0]
        self.width = block.conv2.out_channels
        self.w1m = self.w1.flatten(1)
        self.w3m = self.w3.flatten(1)
        se = block.se
        if se is not None:
            self.se1 = se.fc1.weight.detach().flatten(1)
            self.sb1 = se.fc1.bias.detach()
            self.se2 = se.fc2.weight.detach().flatten(1)
            self.sb2 = se.fc2.bias.detach()
        else:
            self.se1 = self.sb1 = self.se2 = self.sb2 = None
        self.wd = self.bd = None
        if block.downsample is not None:
            self.wd, self.bd = fold_conv_bn(block.downsample[0],
                                            block.downsample[1])
        self.w1x = self.b1x = None
        m = block.masker
        if m is not None and block.paradigm == 'spatial':
            wm = m.conv.weight.detach()[:, :, :1, :1]
            bm = m.conv.bias.detach()
            self.w1x = torch.cat([self.w1, (wm[KEEP] - wm[SKIP])[None]], 0)
            self.b1x = torch.cat([self.b1, (bm[KEEP] - bm[SKIP]).view(1)], 0)

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """Identity or folded downsample of x (N, C_in, H, W)."""
        if self.wd is None:
            return x
        return F.conv2d(x, self.wd, self.bd, self.stride)

    def excite(self, z: torch.Tensor, ch: Optional[torch.Tensor] = None
               ) -> torch.Tensor:
        """SE excitation of a squeeze z (N, k): sigmoid(fc2(relu(fc1(z)))),
        restricted to the channels ``ch`` (k,) when given (the other
        channels' squeeze is 0). Returns (N, k); ones without SE."""
        if self.se1 is None:
            return z.new_ones(z.shape)
        if ch is None:
            h = F.linear(z, self.se1, self.sb1).relu_()
            return torch.sigmoid(F.linear(h, self.se2, self.sb2))
        h = F.linear(z, self.se1.index_select(1, ch), self.sb1).relu_()
        return torch.sigmoid(F.linear(h, self.se2.index_select(0, ch),
                                      self.sb2.index_select(0, ch)))

    def conv2(self, h: torch.Tensor, padding: int = 1) -> torch.Tensor:
        """Grouped conv2 (folded) + ReLU."""
        return F.conv2d(h, self.w2, self.b2, self.stride, padding, 1,
                        self.groups).relu_()

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """Dense folded residual branch (N, C_in, H, W) -> (N, C_out, H_out,
        W_out), no final ReLU."""
        h = self.conv2(F.conv2d(x, self.w1, self.b1).relu_())
        if self.se1 is not None:
            h = h * self.excite(h.mean(dim=(2, 3)))[:, :, None, None]
        return F.conv2d(h, self.w3, self.b3)


def folded_regnety(block: nn.Module) -> FoldedRegNetY:
    """BN-folded weights of a RegNetY block, cached (:func:`~laud_mm.models.
    dynamic.cached_fold`)."""
    return cached_fold(block, FoldedRegNetY, '_laud_folded_regnety')


def static_regnety_forward(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The dense block with BN folded: ``relu(branch(x) + shortcut(x))``
    (every gate on; the benchmark's static reference).

    Args:
        block: a :class:`LAUDRegNetYBlock` in eval mode.
        x: (N, C_in, H, W).

    Returns:
        (N, C_out, H_out, W_out).
    """
    fb = folded_regnety(block)
    with torch.no_grad():
        return fb.branch(x).add_(fb.shortcut(x)).relu_()


def dynamic_regnety_forward(block: nn.Module, x: torch.Tensor,
                            geom: BlockGeometry
                            ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Dynamic (skip-the-work) forward of a :class:`LAUDRegNetYBlock`.

    Args:
        block: the block (eval mode, paradigm set).
        x: (N, C_in, H, W) block input.
        geom: ``block.geometry((H, W))``.

    Returns:
        (out, gate): out (N, C_out, H_out, W_out), equal up to float rounding
        to ``block._masked_dense(x, gate, geom)``; gate as the masker
        returns it in eval (spatial (N, gh, gw), channel (N, n_groups), layer
        (N,)), honouring ``masker.forced_gate``.

    Raises:
        ValueError: a block in training mode, a static block, or x not 4-D.
    """
    if policy.device_path(x):  # CUDA (or its logic on CPU, tests)
        paths = CUDA_PATHS
    else:
        paths = dict(spatial=_spatial, channel=_channel, layer=_layer)
    return run_dynamic_path(block, x, geom, paths)


# ---------------------------------------------------------------- spatial
def _spatial(block, x, geom):
    fb = folded_regnety(block)
    s = block.granularity
    gh, gw = geom.patch_grid
    ho, wo = geom.out_hw
    n = x.shape[0]
    w = fb.width
    masker = block.masker
    # masker fused into conv1 (a forced gate replaces its decision, not
    # its cost: the logit is computed either way)
    h1 = F.conv2d(x, fb.w1x, fb.b1x)
    diff = F.adaptive_avg_pool2d(h1[:, w:], (gh, gw))[:, 0]
    gate = (diff >= 0).to(x.dtype) if masker.forced_gate is None \
        else forced_gate(masker, (n, gh, gw), x)
    n_act = int((gate > 0.5).sum())
    ident = fb.shortcut(x)
    if n_act == 0:
        return torch.relu(ident), gate
    if n_act >= policy.REGNETY_SPATIAL_DENSE_THRESHOLD * gate.numel():
        h = fb.conv2(h1[:, :w].relu())
        if n_act < gate.numel():
            mask = expand_spatial_gate(gate, s, geom.out_hw)
            z = masked_avg_pool(h, mask)[:, :, 0, 0]
        else:
            mask, z = None, h.mean(dim=(2, 3))
        h.mul_(fb.excite(z)[:, :, None, None])
        y = F.conv2d(h, fb.w3, fb.b3)
        if mask is not None:
            y.mul_(mask)
        return residual_add_relu_(y, ident), gate

    idx = (gate > 0.5).nonzero()  # (P, 3) sample, patch row, patch column
    win = _gather(h1, idx, s, fb.stride, 1, w, True)
    h = fb.conv2(win, padding=0)  # (P, w, S, S)
    sample = idx[:, 0]
    if fb.se1 is not None:
        # the masked mean over the kept pixels inside the map, summed and
        # counted in float32 whatever the activation dtype (a bfloat16 sum
        # of ones stops at 256), as masked_avg_pool does
        ar = torch.arange(s, device=x.device)
        rows = (idx[:, 1:2] * s + ar) < ho  # (P, S)
        cols = (idx[:, 2:3] * s + ar) < wo
        valid = (rows[:, :, None] & cols[:, None, :]).float()  # (P, S, S)
        psum = torch.einsum('pchw,phw->pc', h.float(), valid)
        z = psum.new_zeros(n, w).index_add_(0, sample, psum)
        cnt = valid.new_zeros(n).index_add_(0, sample, valid.sum(dim=(1, 2)))
        z = (z / cnt.clamp_min(1.)[:, None]).to(h.dtype)
        h.mul_(fb.excite(z).index_select(0, sample)[:, :, None, None])
    res, y = promote_residual(ident, F.conv2d(h, fb.w3, fb.b3))
    out = _scatter(res, y, idx, (s, s), res is not x)
    return out, gate


# ---------------------------------------------------------------- channel
def _channel(block, x, geom):
    fb = folded_regnety(block)
    n = x.shape[0]
    gate = sample_gate(block, x)
    keep = expand_channel_gate(gate, block.granularity)[:, :, 0, 0] > 0.5
    ident = fb.shortcut(x)
    if bool(keep.all()):
        return residual_add_relu_(fb.branch(x), ident), gate
    parts = []  # (samples, their output) per gate pattern
    pats, inv = torch.unique(keep, dim=0, return_inverse=True)
    gw, groups = fb.gw, fb.groups
    for u in range(pats.shape[0]):
        samples = (inv == u).nonzero()[:, 0]
        pat = pats[u]
        xs = x.index_select(0, samples)
        ids = ident.index_select(0, samples)
        if not bool(pat.any()):
            parts.append((samples, ids.add_(fb.b3.view(1, -1, 1, 1)).relu_()))
            continue
        ch = pat.nonzero()[:, 0]  # kept channels (k,)
        act = pat.view(groups, gw).any(dim=1).nonzero()[:, 0]  # (A,)
        agc = (act[:, None] * gw + torch.arange(gw, device=x.device)
               ).reshape(-1)  # channels of the active conv groups (A * gw,)
        # position of each kept channel inside the active groups' channels
        pos = torch.searchsorted(agc, ch)
        h1k = F.conv2d(xs, fb.w1.index_select(0, ch),
                       fb.b1.index_select(0, ch)).relu_()
        h1 = h1k.new_zeros(xs.shape[0], agc.numel(), *h1k.shape[2:])
        h1.index_copy_(1, pos, h1k)
        h2 = F.conv2d(h1, fb.w2.index_select(0, agc),
                      fb.b2.index_select(0, agc), fb.stride, 1, 1,
                      act.numel()).index_select(1, pos).relu_()
        if fb.se1 is not None:
            h2.mul_(fb.excite(h2.mean(dim=(2, 3)), ch)[:, :, None, None])
        y = F.conv2d(h2, fb.w3.index_select(1, ch), fb.b3)
        parts.append((samples, residual_add_relu_(y, ids)))
    # under autocast a float32 shortcut promotes the output (see
    # residual_add_relu_), whatever each pattern's branch ran in
    dtype = ident.dtype
    for _, y in parts:
        dtype = torch.promote_types(dtype, y.dtype)
    out = ident.new_empty(ident.shape, dtype=dtype)
    for samples, y in parts:
        out.index_copy_(0, samples, y.to(dtype))
    return out, gate


# ------------------------------------------------------------------ layer
def _layer(block, x, geom):
    fb = folded_regnety(block)
    gate = sample_gate(block, x)
    on = gate > 0.5
    ident = fb.shortcut(x)
    n_on = int(on.sum())
    if n_on == x.shape[0]:
        return residual_add_relu_(fb.branch(x), ident), gate
    samples = on.nonzero()[:, 0]
    if n_on == 0:
        res = ident.new_zeros(0, *ident.shape[1:])
    else:
        res = fb.branch(x.index_select(0, samples))
    idx = torch.stack([samples, torch.zeros_like(samples),
                       torch.zeros_like(samples)], 1)
    ident, res = promote_residual(ident, res)
    out = _scatter(ident, res, idx, tuple(ident.shape[-2:]), ident is not x)
    return out, gate
