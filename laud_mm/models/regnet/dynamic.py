"""Dynamic inference of LAUD RegNetY blocks: compute only what the gates keep.

:func:`dynamic_regnety_forward` returns the same function as the
masked-dense eval block (``LAUDRegNetYBlock._masked_dense``), up to float
rounding (max abs diff <= 1e-4 in fp32, tested), while skipping the masked
work. BN is folded into the convolutions (cached on the block, refreshed
when a parameter or BN statistic changes).

Every path runs in its input's memory format (NCHW or channels_last) and
returns the block output in it; :func:`dynamic_memory_format` says which to
feed (channels_last on the CPU: oneDNN's grouped 3 x 3 convolution is
several times faster there on large maps).

- spatial (patch side S): the masker's keep-minus-skip logit as one pass
  over x (:func:`laud_mm.ops.spatial_logit_pool`: a dot product per pixel
  with the difference of the masker's two rows, average-pooled to the patch
  grid - exact by linearity), or the logits the previous block recorded on
  x (below), conv1 densely (conv2's 3x3 halo needs it
  around every patch). On an NCHW input below
  :data:`laud_mm.ops.policy.REGNETY_SPATIAL_DENSE_THRESHOLD` active
  patches, the conv2 input windows of the active patches are gathered
  (:mod:`laud_mm.ops`, halo included, zero outside the image, conv1's ReLU
  fused) and conv2 (grouped, valid, stride) runs on them. **SE over the
  kept pixels**: the squeeze of sample n is the sum of its active patches'
  conv2 outputs over the pixels inside the map, divided by their count (the
  masked mean of :func:`laud_mm.models.layers.masks.masked_avg_pool`); the
  two SE FCs run once per sample, the excitation rescales the gathered
  patches, conv3 runs on them, and a fused scatter-add + ReLU writes them
  into the shortcut. Above the threshold, and on a channels_last input at
  any density (the gather / scatter kernels read and write NCHW), the block
  computes conv2 densely with the same masked SE squeeze (a batched GEMV
  over the kept pixels); on a float32 channels_last input below
  :data:`laud_mm.ops.policy.REGNETY_SPATIAL_NHWC_CONV3_THRESHOLD` active
  patches conv3 then runs on the active pixels only (their rows of C
  contiguous channels gathered and scaled by the excitation, one GEMM, the
  results added into the shortcut's rows and rectified, in place where
  the block owns the shortcut), otherwise densely, its output masked
  before the residual add. A block that computes conv3 densely hands the next
  spatial block its masker logits, computed in its residual add + ReLU
  pass (:func:`laud_mm.models.layers.spatial_logit_record.dense_epilogue`):
  that block then does not read its input for them.
- channel (G channels per gate; conv2 has conv groups of ``group_width``),
  batched over the samples (no loop over samples or gate patterns): each
  sample's kept channels, padded to the batch's largest count; conv1 of the
  kept channels as one batched GEMM reading x in place, its bias and ReLU
  applied on the way into their columns of a zeroed NHWC map, one pass
  (:func:`laud_mm.ops.scatter_kept_columns`; the dropped channels are
  exact zeros at conv2's input, as in the masked-dense block); conv2 as
  oneDNN's grouped convolution over every conv group in channels_last (a
  group without a kept channel reads zeros and its outputs are not read);
  the kept channels' conv2 outputs gathered with their ReLU and their
  sums over the pixels, one pass (:func:`laud_mm.ops.gather_kept_columns`);
  the SE squeeze of the kept channels from those sums and their
  excitation, folded into conv3's per-sample weights
  (or into the gathered rows, whichever is smaller); conv3 as one batched
  GEMM accumulated into the shortcut, in place where the block owns it
  (a downsample's output, or its input inside the backbone's forward:
  ``owned_block_inputs``), then bn3's shift and a ReLU pass that records
  the output's channel means for the next block's masker
  (:func:`laud_mm.models.layers.dynamic.relu_pooled_`). Any G dividing
  the width works. The
  FLOPs count and the latency predictor price conv2 at its active conv
  groups (``1 - (1 - d) ** (gw / G)`` of them for the paper's G = 2 and
  group width 8 / 16: :func:`laud_mm.structures.flops.
  expected_active_conv_groups`); this CPU path computes every group, which
  at G = 2 is a few per cent more (0.94 of the groups are active at
  d = 0.5). A sample with every channel off outputs
  ``relu(shortcut + bn3 shift)``.
- layer: the block (SE included) runs only on the samples whose gate is on
  (their rows of x gathered: a sample is one contiguous row of C x H x W
  values in NCHW and in channels_last alike); its output is added into
  their rows of the shortcut, rectified and pooled to the channel means
  the next block's masker takes, in one pass
  (:func:`laud_mm.ops.relu_mean_rows_` with an addend). The shortcut is
  the block's input itself where the block owns it (an identity block
  inside the backbone's forward: the skipped samples' rows, non-negative,
  stay as they are, with the means their masker recorded), else a copy of
  it or the downsample's output, whose skipped rows are rectified and
  pooled in one more pass: the others output ``relu(shortcut)``.
- layer and channel blocks in a planned forward call their masker through
  :func:`laud_mm.models.layers.maskers.planned_masker`: its checks (hooks,
  overridden methods, the compiled call's eligibility) made once per
  forward, before the first block's convolutions.

Source: paper sec. 3.4 (masker logit, gather + conv, scatter + add)
and sec. 4.3.2 (RegNetY: layer skipping also skips the memory-bound SE);
docs/method.md sec. 1 and 4.
"""
import functools
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...ops import policy
from ...ops.dispatch import is_autocast, is_channels_last, layout_of
from ...ops.epilogue import _relu_mean_rows_
from ...ops.indexing import channel_kept_lists
from ...ops.kept_columns import _gather_kept_columns, _scatter_kept_columns
from ...ops.patches import _gather, _scatter
from ...structures.geometry import BlockGeometry
from ..layers.channel_mean import (record_channel_mean,
                                   recorded_channel_mean)
from ..layers.dynamic import (cast_folded, compute_dtype, next_block,
                              no_autocast, owns_input, promote_residual,
                              relu_pooled_, residual_add_relu_pooled_,
                              run_dynamic_path, sample_gate)
from ..layers.folding import LayoutWeight, cached_fold, fold_conv_bn
from ..layers.forward_plan import plannable
from ..layers.gates import KEEP, SKIP
from ..layers.maskers import planned_masker
from ..layers.masks import expand_spatial_gate, masked_avg_pool
from ..layers.spatial_logit_record import (HANDOFF_AT_USE, dense_epilogue,
                                           spatial_gate, spatial_handoff)

#: the CUDA variant of each paradigm's path (device-side indices, one
#: deferred host read per block): filled in by :mod:`.dynamic_cuda`, which
#: the package imports
CUDA_PATHS: dict = {}


class FoldedRegNetY:
    """BN-folded, detached weights of one :class:`LAUDRegNetYBlock`.

    Attributes:
        w1, b1: conv1 (w, C_in, 1, 1), (w,).
        w2, b2: conv2 (w, gw, 3, 3), (w,); ``groups``, ``gw``, ``stride``.
        w2_layout: ``w2`` for its input's memory format (a
            :class:`~laud_mm.models.layers.folding.LayoutWeight`: a
            channels_last copy made on the first channels_last conv2, so
            oneDNN's grouped convolution does not copy the NCHW weight on
            every call; :meth:`conv2` and the channel path's conv2).
        w3, b3: conv3 (C_out, w, 1, 1), (C_out,).
        se1, sb1, se2, sb2: SE FCs as matrices (se, w), (se,), (w, se), (w,)
            or None without SE.
        wd, bd: downsample (C_out, C_in, 1, 1), (C_out,) or None.
        w3te: (w + 1, C_out) conv3's columns as rows, a zero row last.
        wl, bl: spatial blocks: the masker's keep-minus-skip logit as a
            one-output 1x1 conv (1, C_in, 1, 1), (1,) (the CUDA path's).
        logit_w, logit_b: the same as (C_in,) weights and a float bias,
            for :func:`laud_mm.ops.spatial_logit_pool`.
    """

    def __init__(self, block: nn.Module):
        self.w1, self.b1 = fold_conv_bn(block.conv1, block.bn1)
        self.w2, self.b2 = fold_conv_bn(block.conv2, block.bn2)
        self.w3, self.b3 = fold_conv_bn(block.conv3, block.bn3)
        self.groups = block.conv2.groups
        self.gw = block.conv2.out_channels // self.groups
        self.stride = block.conv2.stride[0]
        self.width = block.conv2.out_channels
        self.w2_layout = LayoutWeight(self.w2)
        self.w1m = self.w1.flatten(1)
        self.w3m = self.w3.flatten(1)
        # the batched channel path's conv3 operand: its columns as rows,
        # with a zero row at index w for the padding slots
        self.w3te = torch.cat([self.w3m.t(),
                               self.w3m.new_zeros(1, self.w3m.shape[0])])
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
        self.wl = self.bl = self.logit_w = self.logit_b = None
        m = block.masker
        if m is not None and block.paradigm == 'spatial':
            wm = m.conv.weight.detach()[:, :, :1, :1]
            bm = m.conv.bias.detach()
            self.wl = (wm[KEEP] - wm[SKIP])[None].contiguous()
            self.bl = (bm[KEEP] - bm[SKIP]).view(1)
            self.logit_w = self.wl.flatten()
            self.logit_b = float(self.bl)

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
        """Grouped conv2 (folded) + ReLU, its weight in ``h``'s memory
        format (:attr:`w2_layout`): (N, w, H, W) -> (N, w, H', W'),
        H' = (H + 2 padding - 3) // stride + 1, in ``h``'s format."""
        return F.conv2d(h, self.w2_layout.like(h), self.b2, self.stride,
                        padding, 1, self.groups).relu_()

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
    paths = CUDA_PATHS if policy.device_path(x) else CPU_PATHS
    return run_dynamic_path(block, x, geom, paths)


class RegNetYPlan:
    """How a RegNetY block's dynamic CPU path runs on inputs of one shape
    and dtype, decided once per backbone forward inside a planned block
    sequence (:mod:`laud_mm.models.layers.forward_plan`): the host-side
    work that does not depend on the gates, done in one loop before the
    first block's convolutions instead of between them, where it runs with
    its code and data evicted (docs/regnety.md, "Host time between the
    convolutions").

    Attributes:
        in_shape: (N, C_in, H, W) it was made for; dtype, device: the
            input's.
        geom: the block's :class:`BlockGeometry`; op_flops: its dense
            per-sample FLOPs per operator.
        fb: the BN-folded weights (:func:`folded_regnety`), validated when
            the plan was made.
        path: the paradigm's CPU path, ``path(block, x, geom, fb) -> (out,
            gate)`` (a spatial block's with its ``handoff`` bound).
        handoff: spatial: (the next block's fold, its patch grid) when the
            block's dense epilogue computes the next block's masker logits
            (``spatial_handoff`` of
            :mod:`~laud_mm.models.layers.spatial_logit_record`), else None.
        masker: layer / channel: the masker's call with its checks made
            (:func:`~laud_mm.models.layers.maskers.planned_masker`), or the
            masker module; spatial: None.

    Source: paper sec. 3.4 (the dynamic operators' scheduling).
    """
    __slots__ = ('in_shape', 'dtype', 'device', 'geom', 'op_flops', 'fb',
                 'path', 'handoff', 'masker')


def sequence_plan(block: nn.Module, in_shape: Tuple[int, ...],
                  like: torch.Tensor, nxt: Optional[nn.Module] = None,
                  nxt_plan: Optional[RegNetYPlan] = None
                  ) -> Optional[RegNetYPlan]:
    """The :class:`RegNetYPlan` of a block inside a planned block sequence,
    where its forward takes a CPU dynamic path that needs no per-call
    checks (eval, dynamic inference on, paradigm set, not static,
    gradients off, not ``policy.device_path``, a 4-D input).

    Args:
        block: a :class:`LAUDRegNetYBlock`.
        in_shape: (N, C_in, H, W) of its input.
        like: a tensor with the input's dtype and device.
        nxt, nxt_plan: the next block and its plan, or None: a spatial
            block's dense epilogue may compute the next spatial block's
            masker logits (:func:`_handoff`).

    Returns:
        the plan (its fold made if the cached one is stale), or None: the
        block's forward then runs :func:`dynamic_regnety_forward` with its
        checks.

    Source: paper sec. 3.4.
    """
    if not plannable(block, in_shape, like, CPU_PATHS):
        return None
    plan = RegNetYPlan()
    plan.in_shape, plan.dtype = torch.Size(in_shape), like.dtype
    plan.device = like.device
    plan.geom = block.geometry(tuple(in_shape[2:]))
    plan.op_flops = block.op_flops(plan.geom.in_hw)
    plan.fb = folded_regnety(block)
    plan.handoff = plan.masker = None
    if block.paradigm == 'spatial':
        plan.handoff = _handoff(block, nxt, nxt_plan, like,
                                plan.fb.w3.shape[0], plan.geom.out_hw)
        plan.path = functools.partial(_spatial, handoff=plan.handoff)
        return plan
    plan.masker = planned_masker(block.masker, like)
    plan.path = CPU_PATHS[block.paradigm]
    if plan.masker is not block.masker and plan.fb.w1.dtype == like.dtype:
        # the compiled masker call was planned: float32 CPU, autocast
        # off, the folded weights in the input's dtype
        plan.path = functools.partial(
            _layer if block.paradigm == 'layer' else _channel_planned,
            masker=plan.masker)
    return plan


def _handoff(block, nxt, nxt_plan, like: torch.Tensor, c_out: int,
             out_hw: Tuple[int, int]):
    """:func:`~laud_mm.models.layers.spatial_logit_record.spatial_handoff`
    with a RegNetY block's fold: ``nxt_plan``'s (validated) when given,
    else ``nxt``'s own."""
    def fold_of(nxt):
        return folded_regnety(nxt) if nxt_plan is None else nxt_plan.fb
    return spatial_handoff(block, nxt, fold_of, like, c_out, out_hw)


def dynamic_memory_format(paradigm: Optional[str], x: torch.Tensor
                          ) -> torch.memory_format:
    """The memory format in which a LAUD-RegNetY's dynamic forward is
    fastest for input ``x``: channels_last on a 4-D CPU input
    (:data:`laud_mm.ops.policy.CHANNELS_LAST_CPU`), where the layer and
    channel paths are oneDNN convolutions and batched GEMMs that read and
    write NHWC in place, spatial blocks compute conv2 densely (their
    gather / scatter kernels read NCHW) and conv3 on the active pixels
    below half the patches active, densely and masked above, and
    oneDNN's convolutions, above
    all the grouped 3 x 3 one (RegNetY's conv2), run faster than in NCHW
    (docs/benchmarks.md, "LAUD-RegNetY": channels_last is the better
    format for every paradigm at r >= 0.5; NCHW only pays for spatial
    skipping at low rates); else NCHW (``torch.contiguous_format``): the
    CUDA paths and static backbones.

    Args:
        paradigm: the backbone's paradigm (None: static).
        x: the backbone input (N, 3, H, W).

    Source: paper sec. 3.4 (operators scheduled for the hardware).
    """
    if paradigm is not None and policy.CHANNELS_LAST_CPU and \
            x.dim() == 4 and not policy.device_path(x):
        return torch.channels_last
    return torch.contiguous_format


# ---------------------------------------------------------------- spatial
def _spatial(block, x, geom, fb=None, handoff=HANDOFF_AT_USE):
    """The spatial path; ``handoff`` as :attr:`RegNetYPlan.handoff`, or
    :data:`~laud_mm.models.layers.spatial_logit_record.HANDOFF_AT_USE`
    (a call outside a plan: decided if the dense epilogue runs)."""
    fb = folded_regnety(block) if fb is None else fb
    s = block.granularity
    gh, gw = geom.patch_grid
    ho, wo = geom.out_hw
    n = x.shape[0]
    w = fb.width
    # the masker's logit difference pooled to the patch grid in one pass
    # over x (NCHW or channels_last), or the logits the previous block's
    # epilogue recorded on x; conv1 on its own: as an extra output
    # channel of conv1 the logit gives oneDNN a width off its vector
    # blocks and conv2 a strided input (a forced gate replaces the
    # masker's decision, not its cost: the logit is computed either way)
    gate = spatial_gate(fb, block.masker, x, (n, gh, gw))
    h1 = F.conv2d(x, fb.w1, fb.b1)
    # gates are exactly 0 or 1 (the decision, or a forced gate the masker
    # validated)
    n_act = int(gate.count_nonzero())
    ident = fb.shortcut(x)
    if n_act == 0:
        return torch.relu(ident), gate
    # a channels_last input computes conv2 densely at any density: the
    # gather / scatter kernels read and write NCHW, and converting their
    # operands costs more than the patches save (docs/benchmarks.md,
    # "LAUD-RegNetY"); conv3 runs on the active pixels below
    # REGNETY_SPATIAL_NHWC_CONV3_THRESHOLD
    if n_act >= policy.REGNETY_SPATIAL_DENSE_THRESHOLD * gate.numel() or \
            is_channels_last(x):
        h = fb.conv2(h1.relu_())
        if n_act < gate.numel():
            mask = expand_spatial_gate(gate, s, geom.out_hw)
            z = _masked_mean(h, mask)
        else:
            mask, z = None, h.mean(dim=(2, 3))
        e = fb.excite(z)
        if mask is not None and is_channels_last(h) and \
                n_act < policy.REGNETY_SPATIAL_NHWC_CONV3_THRESHOLD * \
                gate.numel() and not is_autocast(x) and \
                h.dtype == ident.dtype == torch.float32:
            return _conv3_active_pixels(block, x, fb, h, e, mask,
                                        ident), gate
        h.mul_(e[:, :, None, None])
        y = F.conv2d(h, fb.w3, fb.b3)
        if mask is not None:  # exact: y or 0
            y.mul_(mask)
        if handoff is HANDOFF_AT_USE:
            handoff = _handoff(block, next_block(block), None, x,
                               fb.w3.shape[0], geom.out_hw)
        return dense_epilogue(y, ident, handoff), gate

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


def _conv3_active_pixels(block, x: torch.Tensor, fb: FoldedRegNetY,
                         h: torch.Tensor, e: torch.Tensor,
                         mask: torch.Tensor, ident: torch.Tensor
                         ) -> torch.Tensor:
    """A channels_last spatial block's conv3 on its active pixels only:
    ``relu(ident + mask * conv3(h * e))`` with the active pixels' rows of
    h (N, C, Ho, Wo, channels_last: a pixel is C contiguous floats)
    gathered, scaled by their sample's excitation e (N, C), one GEMM with
    conv3's folded weights and bias, added to the shortcut's rows and
    rectified; the other pixels output ``relu(ident)``. Written into the
    shortcut when the block owns it (the downsample's output, or its input
    inside the backbone's forward, non-negative: its inactive pixels are
    then left as they are). float32, outside autocast."""
    n, c, ho, wo = h.shape
    c_out = ident.shape[1]
    pix = mask.reshape(-1).nonzero()[:, 0]  # (P,) rows (n, y, x)
    g = h.permute(0, 2, 3, 1).reshape(-1, c).index_select(0, pix)
    g.mul_(e.index_select(0, pix.div(ho * wo, rounding_mode='floor')))
    y = torch.addmm(fb.b3, g, fb.w3m.t())  # (P, C_out)
    fmt = torch.channels_last
    # the shortcut's rows of the active pixels, then relu(shortcut) (the
    # inactive pixels' output) as the output: an owned identity input is
    # non-negative already (left as it is), the downsample's output is
    # rectified in place, another input into a new tensor
    rows_in = ident.permute(0, 2, 3, 1).reshape(-1, c_out)
    y.add_(rows_in.index_select(0, pix)).relu_()
    if ident is not x:
        out = ident.contiguous(memory_format=fmt).relu_()
    elif owns_input(block, x, fmt):
        out = x
    else:
        out = torch.relu(x).contiguous(memory_format=fmt)
    out.permute(0, 2, 3, 1).reshape(-1, c_out).index_copy_(0, pix, y)
    return out


def _masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N, C) mean of h (N, C, H, W) over the pixels where ``mask``
    (N, 1, H, W) is 1, as :func:`~laud_mm.models.layers.masks.
    masked_avg_pool` (0 for a sample without kept pixels), as one batched
    GEMV over h read in place (NCHW or channels_last) when h is float32,
    else that function (summed and counted in float32). The GEMV sums in
    another order, so it stays here, on the dynamic path (1e-4 of
    masked-dense): masked_avg_pool itself keeps ``h * mask`` summed, which
    with every gate on equals torchvision's SE bit for bit (the family
    contract's gates-on clause)."""
    n, c = h.shape[:2]
    if h.dtype != torch.float32 or is_autocast(h) or \
            not (h.is_contiguous() or is_channels_last(h)):
        return masked_avg_pool(h, mask)[:, :, 0, 0]
    m = mask.reshape(n, -1, 1).to(h.dtype)  # (N, HW, 1)
    cnt = m.sum(dim=1).clamp_min_(1.)  # (N, 1)
    if is_channels_last(h):
        s = torch.bmm(m.transpose(1, 2),
                      h.permute(0, 2, 3, 1).reshape(n, -1, c))[:, 0]
    else:
        s = torch.bmm(h.reshape(n, c, -1), m)[:, :, 0]
    return s.div_(cnt)


# ---------------------------------------------------------------- channel
def _channel(block, x, geom, fb=None):
    gate = sample_gate(block, x)
    fb = cast_folded(folded_regnety(block) if fb is None else fb,
                     compute_dtype(x))
    with no_autocast(x):
        return _channel_batched(block, x, fb, gate), gate


def _channel_planned(block, x, geom, fb, masker):
    """The channel path in a plan whose masker call was planned
    (:class:`RegNetYPlan`): autocast off and ``fb`` in x's dtype, so
    neither a cast of the folded weights nor an autocast context."""
    gate = masker(x)
    return _channel_batched(block, x, fb, gate), gate


def _channel_batched(block, x, fb, gate):
    """The channel path batched over the samples, in x's layout (NCHW or
    channels_last), in the folded weights' dtype (autocast's when on): see
    the module docstring. Returns the block output."""
    x = _contiguous(x, layout_of(x))
    n, c_in, h, w_ = x.shape
    groups, width = fb.groups, fb.width
    # each sample's kept channels (N, K), padded with index `width` (the
    # zero row of the extended conv3 weights) to the longest list; the
    # batch's kept groups
    kept, k_cnt, n_kept = channel_kept_lists(gate, block.granularity, 1)
    k_max = kept.shape[1]
    xc = x if x.dtype == fb.w1.dtype else x.to(fb.w1.dtype)
    ident = x if fb.wd is None else fb.shortcut(xc)
    if n_kept == gate.numel():
        return residual_add_relu_pooled_(fb.branch(xc), ident)
    # the output is the shortcut plus conv3, in the masked-dense block's
    # dtype (under autocast a float32 identity promotes the branch)
    dtype = torch.promote_types(ident.dtype, xc.dtype)
    b3 = fb.b3.to(dtype).view(1, -1, 1, 1)
    if k_max == 0:
        return torch.add(ident.to(dtype), b3).relu_()
    ho, wo = ident.shape[-2:]
    c_out = ident.shape[1]
    # conv1 computes a padding slot as a copy of the sample's first kept
    # channel (channel 0 for a sample keeping none; the slot is not
    # written below)
    k1 = torch.where(kept < width, kept, kept[:, :1] % width)
    f1 = k1.reshape(-1)
    # conv1 of the kept channels as one batched GEMM on x read in place,
    # then their bias and ReLU on the way into their columns of conv2's
    # NHWC input (dropped channels: zero; laud_mm.ops.kept_columns)
    xr = xc.permute(0, 2, 3, 1).reshape(n, h * w_, c_in) \
        if is_channels_last(xc) else \
        xc.reshape(n, c_in, h * w_).transpose(1, 2)
    h1k = torch.bmm(xr, fb.w1m.index_select(0, f1).view(n, k_max, c_in)
                    .transpose(1, 2))
    h1 = _scatter_kept_columns(h1k, kept, width, fb.b1, relu=True)
    # conv2 over every conv group in channels_last (oneDNN's fast format;
    # a conv group without a kept channel reads zeros and its outputs are
    # not read)
    h1 = h1.view(n, h, w_, width).permute(0, 3, 1, 2)
    h2 = F.conv2d(h1, fb.w2_layout.like(h1), fb.b2, fb.stride, 1, 1, groups)
    # the kept channels' conv2 outputs, their ReLU and their sums over the
    # pixels (the SE squeeze) in one pass: (N, HW', K), (N, K)
    # (the sums in float32: a half-precision sum over a large map would
    # overflow or round twice)
    sums = h2.new_empty(n, k_max, dtype=torch.float32) \
        if fb.se1 is not None else None
    h2k = _gather_kept_columns(
        h2.permute(0, 2, 3, 1).reshape(n, ho * wo, width), kept, True, sums)
    w3k = fb.w3te.index_select(0, kept.reshape(-1)).view(n, k_max, c_out)
    if fb.se1 is not None:
        # squeeze of the kept channels (the dropped ones are zero), their
        # excitation folded into the smaller of conv3's operands
        z = h2k.new_zeros(n, width + 1).scatter_(
            1, kept, sums.div_(ho * wo).to(h2k.dtype))
        e = fb.excite(z[:, :width])
        e = torch.cat([e, e.new_zeros(n, 1)], 1).gather(1, kept)
        if c_out <= ho * wo:
            w3k.mul_(e[:, :, None])
        else:
            h2k.mul_(e[:, None, :])
    w3k, h2k = w3k.to(dtype), h2k.to(dtype)
    # conv3 added to the shortcut by the GEMM, in the shortcut's layout:
    # in place where the block owns it (the downsample's output, or the
    # input inside a backbone forward), else into a new tensor
    ident = ident.to(dtype)
    fmt = layout_of(ident)
    inplace = ident.is_contiguous(memory_format=fmt) and (
        ident is not x or owns_input(block, x, fmt))
    if fmt == torch.channels_last:
        rows = ident.permute(0, 2, 3, 1).reshape(n, ho * wo, c_out)
        a, b = h2k, w3k
    else:
        rows = ident.reshape(n, c_out, ho * wo)
        a, b = w3k.transpose(1, 2), h2k.transpose(1, 2)
    if inplace:
        rows.baddbmm_(a, b)
        out = ident
    else:
        out = torch.baddbmm(rows, a, b)
        out = out.view(n, ho, wo, c_out).permute(0, 3, 1, 2) \
            if fmt == torch.channels_last else out.view(n, c_out, ho, wo)
    out.add_(b3)
    return relu_pooled_(out)


# ------------------------------------------------------------------ layer
def _contiguous(t: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    """t, or a copy contiguous in ``fmt`` (``Tensor.contiguous``
    dispatches an operator even when t already is: host time per block)."""
    return t if t.is_contiguous(memory_format=fmt) else \
        t.contiguous(memory_format=fmt)


def _sample_rows(t: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    """(N, C, H, W) ``t``, contiguous in ``fmt``, viewed as (N, L) in its
    memory order (each sample one contiguous row of L = C x H x W values,
    in NCHW and in channels_last alike): ``index_select`` / ``index_copy_``
    of whole samples then copy rows, where advanced indexing of the 4-D
    tensor computes an offset per element."""
    if fmt == torch.channels_last:
        t = t.permute(0, 2, 3, 1)
    return t.view(t.shape[0], -1)


def _gather_rows(rows: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``rows.index_select(0, idx)``: (K, L) for (N, L) ``rows`` and (K,)
    int64 ``idx``, the same values. Rows longer than
    :data:`~laud_mm.ops.policy.ATEN_GRAIN_SIZE` elements with more than
    one intra-op thread as one ``torch.gather`` (its index the expanded
    ``idx``, no index memory): ``index_select`` copies each such row in a
    parallel region of its own, ``gather`` all in one, 1.6 - 3.0x faster
    at two threads under ``OMP_WAIT_POLICY=PASSIVE``, where each region
    wakes the sleeping worker. Shorter rows (one region either way) and
    one thread (``index_select``, a copy a row, is the faster there) keep
    ``index_select`` (``tools/analysis_tools/benchmark_kernels.py --only
    row_gather``; docs/benchmarks.md, "LAUD-RegNetY").

    Raises:
        RuntimeError: an index outside [0, N) (torch's).
    """
    if torch.get_num_threads() == 1 or \
            rows.shape[1] <= policy.ATEN_GRAIN_SIZE:
        return rows.index_select(0, idx)
    return torch.gather(rows, 0, idx[:, None].expand(idx.shape[0],
                                                     rows.shape[1]))


def _from_rows(r: torch.Tensor, like: torch.Tensor,
               fmt: torch.memory_format) -> torch.Tensor:
    """(K, L) rows back as a (K, C, H, W) tensor with ``like``'s C, H, W,
    contiguous in ``fmt`` (a view)."""
    c, h, w = like.shape[1:]
    if fmt == torch.channels_last:
        return r.view(-1, h, w, c).permute(0, 3, 1, 2)
    return r.view(-1, c, h, w)


def _layer(block, x, geom, fb=None, masker=None):
    """The layer path; ``masker`` the planned masker call
    (:attr:`RegNetYPlan.masker`) or None (the block's masker)."""
    fb = folded_regnety(block) if fb is None else fb
    gate = sample_gate(block, x) if masker is None else masker(x)
    fmt = layout_of(x)
    x = _contiguous(x, fmt)
    n = x.shape[0]
    ident = _contiguous(fb.shortcut(x), fmt)
    # gates are exactly 0 or 1 (the decision, or a forced gate the masker
    # validated): the kept count read in one host copy
    n_on = int(sum(gate.tolist()))
    if n_on == n:  # the static block, its output pooled for the next
        # block's masker
        return residual_add_relu_pooled_(fb.branch(x), ident), gate
    on = gate > 0.5
    idx = on.nonzero()[:, 0]
    # the kept samples' branch on a gathered copy of their rows, in x's
    # memory format
    res = fb.branch(_from_rows(_gather_rows(_sample_rows(x, fmt), idx),
                               x, fmt)) if n_on else None
    # the output is written into the shortcut: the input itself where the
    # block owns it (non-negative, so the skipped samples stay as they
    # are), else a copy of it, or the downsample's output; in the dtype of
    # the masked-dense block's relu(identity + out)
    dtype = ident.dtype if res is None else \
        torch.promote_types(ident.dtype, res.dtype)
    nonneg_inplace = ident is x and dtype == x.dtype and \
        owns_input(block, x, fmt)
    if ident is x and not nonneg_inplace or ident.dtype != dtype:
        out = ident.to(dtype, memory_format=fmt, copy=True)
    else:
        out = ident
    # the output's channel means for the next block's masker
    # (layers.channel_mean), from the passes that write the output: the
    # kept rows' epilogue, the skipped rows' ReLU or, written into the
    # input, the input's record (its masker made it) for the untouched
    # skipped rows; float32 CPU outside autocast
    pooled = out.device.type == 'cpu' and not is_autocast(x) and \
        x.dtype == out.dtype == torch.float32
    means = None
    if pooled:
        means = recorded_channel_mean(x) if nonneg_inplace else \
            out.new_empty(n, out.shape[1])
    if n_on:
        res = _contiguous(res.to(dtype), fmt)
        if pooled:  # added into their rows of out, ReLU and means: a pass
            kept_means = _relu_mean_rows_(out, idx, res)
        else:  # (written into its input, the shortcut rows are those rows)
            out_rows = _sample_rows(out, fmt)
            res.add_(_from_rows(_gather_rows(out_rows, idx), out,
                                fmt)).relu_()
            out_rows.index_copy_(0, idx, _sample_rows(res, fmt))
    if not nonneg_inplace:  # skipped samples: relu(shortcut)
        skipped = (~on).nonzero()[:, 0]
        if means is not None:  # in place, their means in the same pass
            means.index_copy_(0, skipped, _relu_mean_rows_(out, skipped))
        else:  # in place, row by row
            for s in skipped.tolist():
                out[s].relu_()
    if means is not None and n_on:
        record_channel_mean(out, means.index_copy(0, idx, kept_means))
    elif means is not None and not nonneg_inplace:
        record_channel_mean(out, means)
    return out, gate


#: the CPU path of each paradigm, ``fn(block, x, geom, fb=None)``
CPU_PATHS = dict(spatial=_spatial, channel=_channel, layer=_layer)
