"""Dynamic inference of LAUD bottlenecks: compute only what the gates keep.

:func:`dynamic_bottleneck_forward` returns the same function as the
masked-dense eval block (``LAUDBottleneck._masked_dense``), up to float
rounding, while skipping the masked-out work:

- BN is folded into the convolutions (cached on the block, refreshed when a
  parameter or BN statistic changes: keyed by the tensors' ``_version``).
- The host-side choices (the fold checked, which kernels run, the logit
  hand-off) form the block's :class:`BottleneckPlan`, made at its call,
  or, inside a backbone, for every block at the first block's call
  (:func:`sequence_plan`, :mod:`laud_mm.models.layers.forward_plan`).
- spatial: the masker is fused into conv1 (one 1x1 conv with width + 1
  outputs; the extra output (w_keep - w_skip).x + (b_keep - b_skip) is
  average-pooled to the patch grid, exact by linearity of pool and 1x1 conv);
  the conv2 input windows (3x3 halo, zero outside the image) of the active
  S x S output patches are gathered from conv1's output for the whole batch
  (stride-2 blocks with few active patches: conv1 runs on the gathered
  input windows instead, :func:`window_conv1`, the masker on its own)
  (sample and location recorded per patch), conv2 (valid, stride) and conv3
  run on the gathered patches only, and a fused scatter-add + ReLU writes them
  into the shortcut. On CPUs with AVX-512 one compiled kernel does the
  whole branch instead (its pixels split over torch's threads) (:data:`SPATIAL_FUSED_CPU`,
  :func:`laud_mm.ops.spatial_branch_add_relu`): conv1 at the input pixels
  the active patches' conv2 windows need (the dilated mask), conv2 and
  conv3 at the active output pixels, read in place, conv3 added into the
  shortcut; the masker then runs on its own
  (:func:`~laud_mm.models.layers.spatial_logit_record.spatial_gate`).
  A block with every patch on computes densely; inside a backbone its
  epilogue (add, ReLU) also computes the next spatial block's masker
  logits, so that block does not read its input for them
  (:func:`~laud_mm.models.layers.spatial_logit_record.dense_epilogue`).
- channel: weights gathered per sample for its kept channels (counts padded
  with zero channels to a common multiple of 8), so the batch runs as one
  batched GEMM (conv1 to the kept channels), one grouped conv (conv2, a group
  per sample) and one batched GEMM (conv3 from the kept channels,
  accumulated into the shortcut), then bn3's shift and the ReLU (a sample
  with every group off outputs relu(shortcut + bn3 shift): the masked-dense
  block masks after bn1 / bn2, so bn3's shift remains).
- layer: the block runs only on the samples whose gate is on; the others
  output relu(shortcut). On CPUs with AVX-512 the fused spatial kernel
  runs the kept samples, each one active patch covering its map
  (:data:`LAYER_FUSED_CPU`: conv1 - conv2 - conv3 added into the shortcut
  rows in one call, the kept samples' pixels split over the threads);
  elsewhere conv1 runs as GEMMs on their rows of x and conv3 accumulates
  into the shortcut rows, the columns of all kept samples split over the
  threads (:func:`laud_mm.ops.sample_gemm`). Inside a backbone
  (:func:`owned_block_inputs`) identity blocks write into their input.

Source: paper sec. 3.4 ("Fusing the masker and the first convolution",
"Fusing gather and dynamic convolution", "Fusing scatter and add") and its
appendix on scheduling; docs/method.md sec. 1 and 4.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...ops import policy
from ...ops.channel_conv import _channel_branch, fast_channel_branch
from ...ops.channel_weights import _gather_kept
from ...ops.dispatch import layout_of
from ...ops.epilogue import _add_relu_mean_, _relu_mean_rows_
from ...ops.indexing import channel_kept_lists
from ...ops.panels import pack_panels
from ...ops.patches import _gather, _scatter, window_size
from ...ops.sample_gemm import _sample_gemm
from ...ops.spatial_conv import (_spatial_branch, fast_spatial_branch,
                                 spatial_packed_weights)
from ...structures.geometry import BlockGeometry
from ..layers.dynamic import (autocast_dtype, forced_gate, is_autocast,
                              next_block, owns_input,
                              promote_residual, residual_add_relu_,
                              residual_add_relu_pooled_,
                              run_dynamic_path)
from ..layers.channel_mean import (record_channel_mean,
                                   recorded_channel_mean)
from ..layers.folding import LayoutWeight, cached_fold, fold_conv_bn
from ..layers.forward_plan import plannable
from ..layers.gates import KEEP, SKIP
from ..layers.maskers import planned_masker
from ..layers.masks import expand_spatial_gate
from ..layers.spatial_logit_record import (HANDOFF_AT_USE, dense_epilogue,
                                           recorded_spatial_logit,
                                           spatial_gate, spatial_handoff)

#: the CUDA variant of each paradigm's path (device-side indices, one
#: deferred host read per block): filled in by :mod:`.dynamic_cuda`, which
#: the package imports
CUDA_PATHS: dict = {}


# ----------------------------------------------------------------- folding
class FoldedBottleneck:
    """BN-folded weights of one bottleneck (all tensors detached).

    Attributes:
        w1, b1: conv1 (width, C_in, 1, 1), (width,).
        w2, b2: conv2 (width, width, 3, 3), (width,); stride / dilation /
            padding in ``stride``, ``dilation``, ``padding``.
        w3, b3: conv3 (C_out, width, 1, 1), (C_out,).
        wd, bd: downsample conv (C_out, C_in, 1, 1), (C_out,) or None;
            ``ds_stride``; ``ds_module`` the unfoldable downsample (called
            as is) or None.
        w1x, b1x: spatial blocks: conv1 with the masker's logit difference
            as an extra output (width + 1, C_in, 1, 1), (width + 1,);
            ``logit_w`` (C_in,) and ``logit_b`` (a float) that difference
            alone (:func:`laud_mm.ops.spatial_logit_pool`).
        w1m, w3m: conv1 / conv3 weights as matrices (width, C_in),
            (C_out, width) (channel blocks gather rows / columns of these);
            w3m_t, w2m_t: (width, C_out) and (width * 9, width) transposed
            views (spatial patch GEMMs).
        w2_layout: ``w2`` for its input's memory format (a
            :class:`~laud_mm.models.layers.folding.LayoutWeight`: a
            channels_last copy made on the first channels_last conv2;
            :meth:`conv2`).
    """

    def __init__(self, block: nn.Module):
        self.w1, self.b1 = fold_conv_bn(block.conv1, block.norm1)
        self.w2, self.b2 = fold_conv_bn(block.conv2, block.norm2)
        self.w3, self.b3 = fold_conv_bn(block.conv3, block.norm3)
        c2 = block.conv2
        self.stride, self.dilation = c2.stride[0], c2.dilation[0]
        self.padding = c2.padding[0]
        self.w1m = self.w1.flatten(1)
        self.w3m = self.w3.flatten(1)
        self.w3m_t = self.w3m.t()
        self.w2m_t = self.w2.flatten(1).t()  # (width * 9, width)
        self.w2_layout = LayoutWeight(self.w2)
        self._padded = None
        self.wd = self.bd = self.ds_module = None
        self.ds_stride = 1
        ds = block.downsample
        if ds is not None:
            mods = list(ds) if isinstance(ds, nn.Sequential) else [ds]
            if len(mods) == 2 and isinstance(mods[0], nn.Conv2d) and \
                    isinstance(mods[1], nn.modules.batchnorm._BatchNorm) and \
                    mods[0].kernel_size == (1, 1) and mods[0].padding == (0, 0):
                self.wd, self.bd = fold_conv_bn(mods[0], mods[1])
                self.ds_stride = mods[0].stride[0]
            else:  # e.g. avg_down (AvgPool + conv + BN): run it as is
                self.ds_module = ds
        m = getattr(block, 'masker', None)
        self.w1x = self.b1x = None
        if m is not None and block.paradigm == 'spatial':
            wm = m.conv.weight.detach()[:, :, :1, :1]
            bm = m.conv.bias.detach()
            self.w1x = torch.cat([self.w1, (wm[KEEP] - wm[SKIP])[None]], 0)
            self.b1x = torch.cat([self.b1, (bm[KEEP] - bm[SKIP]).view(1)], 0)
            self.logit_w = self.w1x[-1].flatten().contiguous()
            self.logit_b = float(self.b1x[-1])

    def padded(self) -> Tuple[torch.Tensor, ...]:
        """Channel blocks: (w1 (width+1, C_in), b1 (width+1,), w2 (width+1,
        width+1, 3, 3), b2, w3 transposed (width+1, C_out)) with a zero
        padding channel at index ``width`` (computed once)."""
        if self._padded is None:
            w1 = F.pad(self.w1m, (0, 0, 0, 1))
            b1 = F.pad(self.b1, (0, 1))
            w2 = F.pad(self.w2, (0, 0, 0, 0, 0, 1, 0, 1))
            b2 = F.pad(self.b2, (0, 1))
            w3t = F.pad(self.w3m, (0, 1)).t().contiguous()
            self._padded = (w1, b1, w2, b2, w3t)
        return self._padded

    def channel_packed(self) -> Tuple[torch.Tensor, ...]:
        """Channel blocks, the fused CPU kernel's layouts
        (:func:`laud_mm.ops.channel_branch_add_relu`): (w1t (C_in, width+1),
        b1 (width+1,), w2t (9, width+1, width+1) as [tap, in, out], b2,
        w3p ((width+1) C_out,): w3t (width+1, C_out) in 64-column panels
        (:func:`laud_mm.ops.pack_panels`), b3 (C_out,)), padding channel
        ``width`` zero (computed once)."""
        if getattr(self, '_channel_packed', None) is None:
            w1, b1, w2, b2, w3t = self.padded()
            wp = w2.shape[0]
            self._channel_packed = (
                w1.t().contiguous(), b1,
                w2.permute(2, 3, 1, 0).reshape(9, wp, wp).contiguous(), b2,
                pack_panels(w3t), self.b3.contiguous())
        return self._channel_packed

    def spatial_packed(self) -> Tuple[torch.Tensor, ...]:
        """Spatial blocks, the fused CPU kernel's layouts
        (:func:`laud_mm.ops.spatial_branch_add_relu`): (w1p, b1, w2p, b2,
        w3p, b3), conv weights in 64-column panels
        (:func:`laud_mm.ops.spatial_packed_weights`; computed once)."""
        if getattr(self, '_spatial_packed', None) is None:
            w1p, w2p, w3p = spatial_packed_weights(self.w1, self.w2, self.w3)
            self._spatial_packed = (w1p, self.b1.contiguous(), w2p,
                                    self.b2.contiguous(), w3p,
                                    self.b3.contiguous())
        return self._spatial_packed

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """Identity or folded downsample of the block input x (N, C_in, H, W)."""
        if self.ds_module is not None:
            return self.ds_module(x)
        if self.wd is None:
            return x
        return F.conv2d(x, self.wd, self.bd, self.ds_stride)

    def conv2(self, h: torch.Tensor, padding: Optional[int] = None
              ) -> torch.Tensor:
        """The folded conv2 (no ReLU) of h (N, width, H, W) ->
        (N, width, H_out, W_out), in h's memory format, its weight in that
        format (:attr:`w2_layout`); ``padding`` defaults to the block's."""
        return F.conv2d(h, self.w2_layout.like(h), self.b2, self.stride,
                        self.padding if padding is None else padding,
                        self.dilation)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """conv1-relu-conv2-relu-conv3 (folded, no final ReLU):
        (N, C_in, H, W) -> (N, C_out, H_out, W_out)."""
        h = F.conv2d(x, self.w1, self.b1).relu_()
        h = self.conv2(h).relu_()
        return F.conv2d(h, self.w3, self.b3)


#: the attribute the folded weights are cached in on a block
FOLD_ATTR = '_laud_folded'


def folded(block: nn.Module) -> FoldedBottleneck:
    """BN-folded weights of a bottleneck, cached (:func:`cached_fold`)."""
    return cached_fold(block, FoldedBottleneck, FOLD_ATTR)


def static_bottleneck_forward(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The dense (static) block with BN folded: relu(branch(x) + shortcut(x)).

    Args:
        block: a ResNet ``Bottleneck`` (pytorch style) in eval mode.
        x: (N, C_in, H, W).

    Returns:
        (N, C_out, H_out, W_out), equal to ``block(x)`` with every gate on.
    """
    fb = folded(block)
    out = fb.branch(x)
    return out.add_(fb.shortcut(x)).relu_()


def dynamic_memory_format(paradigm: Optional[str], x: torch.Tensor,
                          blocks: Sequence[nn.Module] = ()
                          ) -> torch.memory_format:
    """The memory format a LAUD-ResNet's dynamic forward runs in for input
    ``x``: channels_last where its blocks run the fused kernels, which read
    and write NHWC (:data:`laud_mm.ops.policy.CHANNELS_LAST_CPU`; the
    paradigm's ``*_FUSED_CPU`` switch; a 4-D float32 CPU input outside
    autocast, the AVX-512 kernels, a thread count they split over; every
    one of ``blocks`` BN-foldable (:func:`unfoldable_reason`: no DCN,
    plugins, GN, ...) with widths and output channels in multiples of 16),
    else NCHW (``torch.contiguous_format``).

    Args:
        paradigm: the backbone's paradigm (None: static).
        x: the backbone input (N, 3, H, W).
        blocks: the backbone's bottlenecks.

    Source: paper sec. 3.4 (operators scheduled for the hardware).
    """
    fused = dict(channel=policy.CHANNEL_FUSED_CPU,
                 spatial=policy.SPATIAL_FUSED_CPU,
                 layer=policy.LAYER_FUSED_CPU).get(paradigm, False)
    if fused and policy.CHANNELS_LAST_CPU and x.dim() == 4 and \
            not policy.device_path(x) and not is_autocast(x) and \
            policy.fused_cpu_threads() and fast_channel_branch(x) and \
            fast_spatial_branch(x, 16, 16) and \
            all(unfoldable_reason(b) is None and
                b.conv1.out_channels % 16 == 0 and
                b.conv3.out_channels % 16 == 0 for b in blocks):
        return torch.channels_last
    return torch.contiguous_format


def unfoldable_reason(block: nn.Module) -> Optional[str]:
    """Why a bottleneck's branch cannot run on BN-folded plain
    convolutions, or None: mmdet's DCN as conv2 (``dcn``), ``plugins``, a
    convolution that is not a plain ``nn.Conv2d`` (``conv_cfg``, e.g.
    weight standardisation) or a normalisation that is not a BatchNorm with
    running statistics (``norm_cfg``, e.g. GN).

    Returns:
        the offending option as ``key=value`` text, or None.
    """
    if getattr(block, 'with_dcn', False):
        return f'dcn={block.dcn!r}'
    if getattr(block, 'with_plugins', False):
        return f'plugins={block.plugins!r}'
    for conv in (block.conv1, block.conv2, block.conv3):
        if type(conv) is not nn.Conv2d:
            return f'conv_cfg={block.conv_cfg!r}'
    for norm in (block.norm1, block.norm2, block.norm3):
        if not isinstance(norm, nn.modules.batchnorm._BatchNorm) or \
                not norm.track_running_stats:
            return f'norm_cfg={block.norm_cfg!r}'
    return None


# ------------------------------------------------------------------- plan
class BottleneckPlan:
    """How a bottleneck's dynamic CPU path runs on inputs of one shape and
    dtype: every decision that depends on the block, the input's metadata,
    the thread count, the policy (:mod:`laud_mm.ops.policy`) and the next
    block, but not on the gates (:func:`plan_bottleneck`).

    Attributes:
        in_shape: (N, C_in, H, W) of the input it was made for; dtype and
            device its dtype and device.
        geom: the block's :class:`BlockGeometry`; op_flops its dense
            per-sample FLOPs per operator.
        fb: the BN-folded weights, validated when the plan was made (None
            for a layer block that cannot be folded, which runs its own
            modules).
        path: the paradigm's function ``path(block, x, plan) -> (out,
            gate)``.
        fused: spatial / channel: the compiled AVX-512 branch kernel runs
            (channel: when the shortcut also has ``dtype``); layer: the
            kept samples run on the fused spatial kernel, a patch per
            sample (``policy.LAYER_FUSED_CPU``; when the output also has
            ``dtype``).
        dense_from: spatial: the fraction of active patches from which the
            block computes densely.
        handoff: spatial: (the next block's fold, its patch grid) when a
            dense epilogue computes the next block's masker logits
            (``dense_epilogue`` of
            :mod:`~laud_mm.models.layers.spatial_logit_record`), else
            None; :data:`HANDOFF_AT_USE` in a plan for one call, which
            decides it only if the block computes densely.
        small_map: channel: H x W below
            ``policy.CHANNEL_SMALL_MAP_PIXELS``.
        sample_gemm: layer, not ``fused``: the kept samples run on the
            per-sample GEMM kernel (when the output also has ``dtype``).
        masker: layer / channel: the masker's call with its checks made
            (:func:`~laud_mm.models.layers.maskers.planned_masker`), or the
            masker module; spatial: None.

    Source: paper sec. 3.4 (scheduling; the host side of operator fusion).
    """
    __slots__ = ('in_shape', 'dtype', 'device', 'geom', 'op_flops', 'fb',
                 'path', 'fused', 'dense_from', 'handoff', 'small_map',
                 'sample_gemm', 'masker')


def plan_bottleneck(block: nn.Module, in_shape: Tuple[int, ...],
                    like: torch.Tensor, geom: BlockGeometry,
                    nxt: Optional[nn.Module],
                    nxt_plan: Optional[BottleneckPlan] = None,
                    handoff_at_use: bool = False) -> BottleneckPlan:
    """The :class:`BottleneckPlan` of a bottleneck whose dynamic forward
    takes the CPU paths (not ``policy.device_path``; a spatial / channel
    block foldable), for inputs of ``in_shape`` with ``like``'s dtype and
    device under the current autocast state, thread count and policy.

    Args:
        block: the LAUD bottleneck (eval mode, paradigm set).
        in_shape: (N, C_in, H, W) of its input.
        like: a tensor with the input's dtype and device (e.g. the input
            of the first block of the forward).
        geom: ``block.geometry((H, W))``.
        nxt: the block that runs next on this block's output
            (:func:`next_block`), or None.
        nxt_plan: ``nxt``'s plan for this pass when it has one (its fold
            is then taken as validated), else None.
        handoff_at_use: leave a spatial block's hand-off to its dense
            epilogue (:data:`HANDOFF_AT_USE`; a plan for one call, where
            a sparse block never needs it).

    Returns:
        the plan; it folds the block's weights (and a spatial successor's
        without a plan) if their cached folds are stale (:func:`folded`).

    Raises:
        KeyError: ``block.paradigm`` has no CPU path (callers check the
            paradigm first: :func:`dynamic_bottleneck_forward` through
            :func:`run_dynamic_path`, :func:`sequence_plan`).

    Source: paper sec. 3.4 (the dynamic operators' scheduling).
    """
    plan = BottleneckPlan()
    plan.in_shape, plan.dtype = torch.Size(in_shape), like.dtype
    plan.device = like.device
    plan.geom = geom
    plan.op_flops = block.op_flops(geom.in_hw)
    plan.path = CPU_PATHS[block.paradigm]
    plan.fused = False
    plan.dense_from = 1.0
    plan.handoff = None
    plan.small_map = plan.sample_gemm = False
    plan.masker = None if block.paradigm == 'spatial' else \
        planned_masker(block.masker, like)
    foldable = unfoldable_reason(block) is None
    fb = plan.fb = folded(block) if foldable else None
    if fb is None:  # a layer block running its own modules (spatial /
        # channel: refused by the callers)
        return plan
    width, c_out = fb.w1.shape[0], fb.w3.shape[0]
    h, w = in_shape[2:]
    direct = not is_autocast(like) and like.dtype == fb.w1.dtype
    # the fused spatial kernel can run this block (spatial blocks; layer
    # blocks with a patch per kept sample)
    spatial_kernel = block.paradigm != 'channel' and direct and \
        policy.fused_cpu_threads() and \
        fast_spatial_branch(like, width, c_out) and \
        fb.w2.shape[1:] == (width, 3, 3) and fb.padding == fb.dilation
    if block.paradigm == 'spatial':
        plan.fused = policy.SPATIAL_FUSED_CPU and spatial_kernel
        plan.dense_from = policy.SPATIAL_FUSED_DENSE_THRESHOLD \
            if plan.fused else policy.SPATIAL_DENSE_THRESHOLD
        plan.handoff = HANDOFF_AT_USE if handoff_at_use else _handoff(
            block, nxt, nxt_plan, like, c_out, geom.out_hw)
    elif block.paradigm == 'channel':
        plan.small_map = h * w < policy.CHANNEL_SMALL_MAP_PIXELS
        plan.fused = policy.CHANNEL_FUSED_CPU and direct and \
            policy.fused_cpu_threads() and fast_channel_branch(like) and \
            c_out % 16 == 0 and fb.w2.shape[1:] == (width, 3, 3)
    else:
        plan.fused = policy.LAYER_FUSED_CPU and spatial_kernel
        plan.sample_gemm = direct and policy.layer_sample_gemm(
            h * w, torch.get_num_threads())
    return plan


def _handoff(block, nxt, nxt_plan, like: torch.Tensor, c_out: int,
             out_hw: Tuple[int, int]):
    """:func:`~laud_mm.models.layers.spatial_logit_record.spatial_handoff`
    with a bottleneck's fold: ``nxt_plan``'s (validated) when given, else
    ``nxt``'s own where it can be folded."""
    def fold_of(nxt):
        if nxt_plan is not None:
            return nxt_plan.fb
        return folded(nxt) if unfoldable_reason(nxt) is None else None
    return spatial_handoff(block, nxt, fold_of, like, c_out, out_hw)


def sequence_plan(block: nn.Module, in_shape: Tuple[int, ...],
                  like: torch.Tensor, nxt: Optional[nn.Module],
                  nxt_plan: Optional[BottleneckPlan] = None
                  ) -> Optional[BottleneckPlan]:
    """The plan of a bottleneck inside a planned block sequence
    (:mod:`laud_mm.models.layers.forward_plan`): :func:`plan_bottleneck`
    where the block's forward takes a CPU dynamic path that needs no
    per-call checks (eval, dynamic inference on, paradigm set, not static,
    gradients off, not ``policy.device_path``, a spatial / channel block
    foldable, a 4-D input).

    Args:
        block, in_shape, like, nxt, nxt_plan: as :func:`plan_bottleneck`.

    Returns:
        the plan, or None (the block's forward then plans its own call,
        with that path's checks and errors).

    Source: paper sec. 3.4.
    """
    if not plannable(block, in_shape, like, CPU_PATHS):
        return None
    plan = plan_bottleneck(block, in_shape, like,
                           block.geometry(in_shape[2:]), nxt, nxt_plan)
    # an unfoldable spatial / channel block refuses dynamic inference at
    # its own call
    return None if plan.fb is None and block.paradigm != 'layer' else plan


def dynamic_bottleneck_forward(block: nn.Module, x: torch.Tensor,
                               geom: BlockGeometry
                               ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Dynamic (skip-the-work) forward of a :class:`LAUDBottleneck` in eval.

    Args:
        block: the LAUD bottleneck (eval mode, paradigm set).
        x: (N, C_in, H, W) block input.
        geom: ``block.geometry((H, W))``.

    Returns:
        (out, gate): out (N, C_out, H_out, W_out) equal (fp32 max abs diff
        ~1e-6 relative, from BN folding) to ``block._masked_dense(x, gate,
        geom)``; gate as the masker returns it in eval: spatial (N, gh, gw),
        channel (N, n_groups), layer (N,), honouring ``masker.forced_gate``.

    Raises:
        ValueError: unknown paradigm, a block in training mode, a forced
            gate of the wrong shape, or a spatial / channel block that
            cannot be BN-folded (:func:`unfoldable_reason`; a layer block
            then runs its own modules on the kept samples).
    """
    reason = unfoldable_reason(block) if block.paradigm != 'layer' else None
    if reason is not None:
        raise ValueError(
            f'{reason} with paradigm={block.paradigm!r} supports '
            f'masked-dense evaluation only: dynamic inference runs BN '
            f'folded into plain convolutions on the kept pixels / channels; '
            f"set dynamic_inference=False, or use paradigm='layer'")
    # CUDA (or its logic on CPU, tests); a layer block that cannot be
    # BN-folded runs its own modules on the kept samples on any device
    if policy.device_path(x) and (block.paradigm != 'layer'
                                  or unfoldable_reason(block) is None):
        return run_dynamic_path(block, x, geom, CUDA_PATHS)
    return run_dynamic_path(block, x, geom, _PLAN_AND_RUN)


def _plan_and_run(block, x, geom):
    """A call outside a planned sequence: the block's plan for this call
    (a spatial hand-off decided only if the block computes densely), then
    its path."""
    plan = plan_bottleneck(block, x.shape, x, geom, next_block(block),
                           handoff_at_use=True)
    return plan.path(block, x, plan)


_PLAN_AND_RUN = dict.fromkeys(('spatial', 'channel', 'layer'), _plan_and_run)


# ---------------------------------------------------------------- spatial
def _spatial_forward(block, x, plan):
    fb, geom, fused = plan.fb, plan.geom, plan.fused
    s = block.granularity
    gh, gw = geom.patch_grid
    n = x.shape[0]
    width = fb.w1.shape[0]
    masker = block.masker
    if fused or fb.stride > 1 or \
            recorded_spatial_logit(x, fb.logit_w, fb.logit_b,
                                   (gh, gw)) is not None:
        # the masker on its own: the fused kernel computes conv1 on the
        # dilated mask only; stride 2: conv1 may run on the windows only;
        # the previous block may have handed the logits on
        gate = spatial_gate(fb, masker, x, (n, gh, gw))
        t = None
    else:  # masker fused into conv1: one read of x for both
        t = F.conv2d(x, fb.w1x, fb.b1x)
        diff = F.adaptive_avg_pool2d(t[:, width:], (gh, gw))[:, 0]
        gate = (diff >= 0).to(x.dtype) if masker.forced_gate is None \
            else forced_gate(masker, (n, gh, gw), x)
    # gates are exactly 0 or 1 (the decision, or a forced gate the masker
    # validated): one counting operator instead of a compare and a sum
    n_act = int(gate.count_nonzero())
    total = gate.numel()
    # an owned non-negative input (owned_block_inputs) is its own relu, and
    # the fused kernel may write into it (in x's layout: it runs NCHW or
    # channels_last; the gather / scatter ops below take NCHW only)
    owned = owns_input(block, x, layout_of(x) if fused else
                       torch.contiguous_format)
    if n_act == 0:
        return (x if owned else torch.relu(fb.shortcut(x))), gate

    def conv1():
        return F.conv2d(x, fb.w1, fb.b1) if t is None else t

    if n_act >= plan.dense_from * total:
        # t is ours: ReLU in place (conv1 alone has width channels)
        h = (conv1() if t is None else t[:, :width]).relu_()
        h = fb.conv2(h).relu_()
        y = F.conv2d(h, fb.w3, fb.b3)
        if n_act < total:
            y.mul_(expand_spatial_gate(gate, s, geom.out_hw))
        handoff = plan.handoff
        if handoff is HANDOFF_AT_USE:
            handoff = _handoff(block, next_block(block), None, x,
                               fb.w3.shape[0], geom.out_hw)
        return dense_epilogue(y, fb.shortcut(x), handoff), gate

    idx = (gate > 0.5).nonzero()
    if fused:
        ident = fb.shortcut(x)
        # into the downsample output, or into the input when the backbone
        # owns it (its inactive pixels are already their own ReLU)
        target = ident if ident is not x or owned else torch.empty_like(x)
        _spatial_branch(target, x, ident, idx, fb.spatial_packed(), s,
                        fb.stride, fb.dilation,
                        identity_nonneg=owned and ident is x)
        return target, gate
    if policy.uses_window_conv1(s, fb.stride, fb.dilation, n_act,
                         n * x.shape[2] * x.shape[3]):
        win = window_conv1(fb, x, idx, s)
    else:
        win = _gather(conv1(), idx, s, fb.stride, fb.dilation, width, True)
    ident, y = promote_residual(fb.shortcut(x),
                                spatial_patch_convs(fb, win, s))
    # an owned input is the previous block's ReLU output: the scatter then
    # touches the active patches only
    out = _scatter(ident, y, idx, (s, s), ident is not x or owned,
                   identity_nonneg=owned and ident is x)
    return out, gate


def window_conv1(fb: 'FoldedBottleneck', x: torch.Tensor, idx: torch.Tensor,
                 s: int) -> torch.Tensor:
    """conv1 (+ReLU) of a stride-2 spatial block on the conv2 input windows
    of the active patches only, instead of the whole map.

    In a stride-2 block conv1 runs at the input resolution, and the K x K
    window of an S x S output patch (K = 2S + 1 at dilation 1) overlaps its
    neighbours' by one pixel, so the windows of a fraction d of the patches
    cover ~d (K / 2S)^2 of the map: 1.27 d for S = 4, 1.56 d for S = 2,
    2.25 d for S = 1. Gathering the input windows (C_in channels) and
    running conv1 on them is 1.3 - 1.8x faster than the dense conv1 +
    window gather at the 0.24 - 0.29 patch densities of r_i = 0.5 in R50
    (``tools/analysis_tools/benchmark_kernels.py``, 'window_conv1' rows; a
    stride-1 block at r_i = 0.25 gains nothing there). Window pixels outside the image are
    zero, as conv2's padding of the dense conv1 output.

    Args:
        fb: the block's folded weights (``fb.stride`` > 1).
        x: (N, C_in, H, W) block input.
        idx: (P, 3) active patches (sample, patch row, patch column).
        s: granularity S.

    Returns:
        (P, width, K, K) ReLU'd conv1 windows, equal to gathering them from
        the dense conv1 output (``_gather(..., relu=True)``).
    """
    h, w = x.shape[-2:]
    k = window_size(s, fb.stride, fb.dilation)
    win = F.conv2d(_gather(x, idx, s, fb.stride, fb.dilation, x.shape[1],
                           False), fb.w1, fb.b1).relu_()
    # conv1's bias made the zero-filled outside pixels non-zero: re-zero
    step = s * fb.stride
    off = torch.arange(k, device=x.device) - fb.dilation
    ys = idx[:, 1:2] * step + off  # (P, K) input rows of the windows
    xs = idx[:, 2:3] * step + off
    if bool((ys[:, 0] < 0).any() | (ys[:, -1] >= h).any()
            | (xs[:, 0] < 0).any() | (xs[:, -1] >= w).any()):
        inside = ((ys >= 0) & (ys < h))[:, :, None] & \
            ((xs >= 0) & (xs < w))[:, None, :]
        win.mul_(inside[:, None].to(win.dtype))
    return win


def spatial_patch_convs(fb: 'FoldedBottleneck', win: torch.Tensor,
                        s: int) -> torch.Tensor:
    """conv2 (+ReLU) and conv3 of the gathered windows as GEMMs where the
    convolution primitives are slow on such small maps (measured on CPU).

    - S = 1: conv2's receptive field is the window's 3 x 3 taps (rows and
      columns 0, d, 2d of the (2d + 1)-pixel window at dilation d), so conv2
      is one GEMM (P, width * 9) x (width * 9, width) and conv3 one GEMM
      (P, width) x (width, C_out): 2.4x faster than oneDNN's 3x3 / 1x1
      convolutions on 1 x 1 outputs
      (``tools/analysis_tools/benchmark_kernels.py``).
    - S > 1: conv2 is the 3x3 convolution; conv3 the 1x1 convolution, or,
      below :data:`SPATIAL_CONV3_GEMM_MAX_PATCHES` patches, one GEMM
      (C_out, width) x (width, P * S * S) over all patches (oneDNN runs a
      1x1 convolution of a batch under 16 as per-image GEMMs only S * S
      wide: conv2 + conv3 3.3x slower for 14 patches of 512 x 2 x 2; from 16
      patches on it is as fast as the GEMM and needs no transposes).

    Args:
        fb: the block's folded weights.
        win: (P, width, K, K) gathered, ReLU'd conv1 windows.
        s: granularity S.

    Returns:
        (P, C_out, S, S) conv3 output (bias included, no ReLU), contiguous.
    """
    p = win.shape[0]
    c_out = fb.w3m.shape[0]
    if s == 1:
        if fb.dilation > 1:  # the taps of a dilated 3x3 kernel
            win = win[:, :, ::fb.dilation, ::fb.dilation]
        h = torch.addmm(fb.b2, win.reshape(p, -1), fb.w2m_t).relu_()
        return torch.addmm(fb.b3, h, fb.w3m_t).view(p, c_out, 1, 1)
    h = fb.conv2(win, padding=0).relu_()
    if p >= policy.SPATIAL_CONV3_GEMM_MAX_PATCHES:
        return F.conv2d(h, fb.w3, fb.b3)
    width = h.shape[1]
    cols = h.transpose(0, 1).reshape(width, p * s * s)
    y = torch.addmm(fb.b3[:, None], fb.w3m, cols)  # (C_out, P * S * S)
    return y.view(c_out, p, s, s).transpose(0, 1).contiguous()


# ---------------------------------------------------------------- channel
def _residual_target(block, x: torch.Tensor, ident: torch.Tensor,
                     fmt: torch.memory_format = torch.contiguous_format
                     ) -> torch.Tensor:
    """The tensor, contiguous in memory format ``fmt``, a channel block
    accumulates its conv3 into: the downsample's output, else the input
    itself when the backbone owns it (``owned_block_inputs``) and is in
    ``fmt``, else a copy of the input."""
    if ident is not x:
        return ident.contiguous(memory_format=fmt)
    if owns_input(block, x, fmt):
        return x
    return x.clone(memory_format=fmt)


def _channel_forward(block, x, plan):
    fb = plan.fb
    n, c_in, h, w = x.shape
    gate = plan.masker(x)
    # (N, k) each sample's kept channels, ascending, padded with the zero
    # channel `width` to a multiple of CHANNEL_PAD; (N,) their counts; the
    # batch's kept groups (one compiled pass on CPU)
    chs, counts, kept = channel_kept_lists(gate, block.granularity,
                                           policy.CHANNEL_PAD)
    ident = fb.shortcut(x)
    if kept == gate.numel():  # the static block; its output pooled for
        # the next block's masker in the epilogue
        return residual_add_relu_pooled_(fb.branch(x), ident), gate
    ho, wo = ident.shape[-2:]
    c_out = ident.shape[1]
    if plan.small_map and kept > policy.CHANNEL_DENSE_RATE * gate.numel():
        # small maps at high rates: masked dense compute with folded BN
        keep_ch = (gate > 0.5).repeat_interleave(block.granularity, dim=1)
        m = keep_ch.to(x.dtype)[:, :, None, None]
        h1 = F.conv2d(x, fb.w1, fb.b1).relu_().mul_(m)
        h2 = fb.conv2(h1).relu_().mul_(m)
        return residual_add_relu_(F.conv2d(h2, fb.w3, fb.b3), ident), gate
    if plan.fused and ident.dtype == x.dtype:
        # the fused kernel: conv1 -> conv2 -> conv3 per sample, accumulated
        # into the shortcut with bn3's shift and the ReLU
        # (and the output's channel sums from its output pass, recorded
        # for the next block's masker)
        # in x's layout: the kernel runs NCHW or channels_last
        out = _residual_target(block, x, ident, layout_of(x))
        sums = out.new_empty(n, c_out)
        _channel_branch(out, x, chs, counts, fb.channel_packed(),
                        fb.stride, fb.padding, fb.dilation, sums=sums)
        record_channel_mean(out, sums.div_(ho * wo))
        return out, gate
    k = chs.shape[1]
    if k:
        w1p, b1p, w2p, b2p, w3tp = fb.padded()
        flat = chs.reshape(-1)  # index_select: row copies (5x aten::index)
        # conv1 for the kept channels only: per-sample weights, one bmm
        h1 = torch.baddbmm(b1p.index_select(0, flat).view(n, k, 1),
                           w1p.index_select(0, flat).view(n, k, c_in),
                           x.reshape(n, c_in, h * w)).relu_()
        # conv2 on kept -> kept channels: one grouped conv (a group per
        # sample), weights from the compiled gather kernel
        w2s = _gather_kept(w2p, chs)  # (N, k, k, 3, 3)
        h2 = F.conv2d(h1.reshape(1, n * k, h, w), w2s.view(n * k, k, 3, 3),
                      b2p.index_select(0, flat), fb.stride, fb.padding,
                      fb.dilation, groups=n).relu_().view(n, k, ho * wo)
        w3s = w3tp.index_select(0, flat).view(n, k, c_out).transpose(1, 2)
    b3 = fb.b3.view(1, -1, 1)
    if not is_autocast(x) and x.dtype == ident.dtype == fb.w1.dtype:
        # conv3 from the kept channels accumulated into the shortcut, then
        # bn3's shift (every sample) and the ReLU: no conv3 output buffer,
        # no separate scatter pass over the output (docs/benchmark_history.md,
        # "Channel: conv3 accumulated into the shortcut", measured with
        # tools/analysis_tools/benchmark_latency.py --quick)
        out = _residual_target(block, x, ident)
        o = out.view(n, c_out, ho * wo)
        if k:
            o.baddbmm_(w3s, h2)
        o.add_(b3).relu_()
        return out, gate
    # mixed precision: conv3 as autocast runs it (bn3's shift alone, in the
    # autocast dtype as the masked-dense bn3 output, when no channel is
    # kept), then the fused add + ReLU
    if k == 0:
        y = b3.expand(n, -1, ho * wo)
        y = y.to(autocast_dtype(x)) if is_autocast(x) else y
    else:
        y = torch.baddbmm(b3, w3s, h2)
    idx = torch.zeros(n, 3, dtype=torch.int64, device=x.device)
    idx[:, 0] = torch.arange(n, device=x.device)
    res, y = promote_residual(ident, y.reshape(n, c_out, ho, wo).contiguous())
    out = _scatter(res, y, idx, (ho, wo), res is not x)
    return out, gate


# ------------------------------------------------------------------ layer
def _layer_unfolded(block, x, gate):
    """A layer block that cannot be BN-folded (:func:`unfoldable_reason`:
    DCN, plugins, GN, ...): its own modules (``block._branch``) on the kept
    samples, added to their shortcut; the skipped samples output
    relu(shortcut)."""
    ident = x if block.downsample is None else block.downsample(x)
    kept = (gate > 0.5).nonzero()[:, 0]
    if kept.numel() == 0:
        return torch.relu(ident)
    if kept.numel() == x.shape[0]:
        return residual_add_relu_(block._branch(x, None), ident)
    res = block._branch(x.index_select(0, kept), None)
    ident, res = promote_residual(ident, res)
    out = ident.clone() if ident is x else ident
    out.index_copy_(0, kept, out.index_select(0, kept) + res)
    return out.relu_()


def _layer_forward(block, x, plan):
    n = x.shape[0]
    gate = plan.masker(x)  # (N,)
    fb = plan.fb
    if fb is None:
        return _layer_unfolded(block, x, gate), gate
    # gates are exactly 0 or 1 (the decision, or a forced gate the masker
    # validated): the kept count read in one host copy, not a compare, a
    # sum and a read (host time per block at batch 1)
    n_on = int(sum(gate.tolist()))
    ident = fb.shortcut(x)
    if n_on == n:  # the static block, output pooled (as channel blocks)
        return residual_add_relu_pooled_(fb.branch(x), ident), gate
    on = gate > 0.5
    # the output is written into the shortcut: the input itself when the
    # caller owns it (non-negative: the skipped samples stay as they are),
    # else a copy of it, or the downsample's output
    # in x's layout on the fused kernel (NCHW or channels_last), else NCHW
    fused = plan.fused and ident.dtype == x.dtype
    fmt = layout_of(x) if fused else torch.contiguous_format
    nonneg_inplace = ident is x and owns_input(block, x, fmt)
    if ident is x and not nonneg_inplace:
        out = x.clone(memory_format=fmt)
    else:
        out = ident.contiguous(memory_format=fmt)
    idx = on.nonzero()[:, 0]
    kept = idx.tolist()
    # the output's channel means for the next block's masker
    # (layers.channel_mean), from the passes that write the output: the
    # kept rows' epilogue (on the fused kernel the sums its epilogue
    # adds as it writes them),
    # the skipped rows' ReLU (a copy or downsample output) or, written into
    # the input, the input's record (the masker made it) for the untouched
    # skipped samples. float32 CPU outside
    # autocast, where those passes are the compiled kernels.
    pooled = out.device.type == 'cpu' and not is_autocast(x) and \
        x.dtype == out.dtype == fb.w1.dtype == torch.float32
    means = None
    if pooled:
        means = recorded_channel_mean(x) if nonneg_inplace else \
            out.new_empty(n, out.shape[1])
    kept_means = None
    if kept and fused:
        # the kept samples as a spatially masked block whose active patches
        # (S = the map's side) are those samples' whole maps: the fused
        # kernel writes relu(shortcut + branch) into their rows of out; the
        # other rows, which may be negative (a copy or a downsample output),
        # stay for the pass below (leave_inactive); its epilogue sums the
        # kept rows' channels as it writes them
        ho, wo = out.shape[2:]
        patches = idx.new_zeros(len(kept), 3)
        patches[:, 0] = idx
        sums = out.new_empty(n, out.shape[1]) if means is not None \
            else None
        _spatial_branch(out, x, out, patches, fb.spatial_packed(),
                        max(ho, wo), fb.stride, fb.dilation,
                        leave_inactive=True, sums=sums)
        if sums is not None:
            kept_means = sums.index_select(0, idx).div_(ho * wo)
    elif kept and not (plan.sample_gemm and out.dtype == x.dtype):
        # the branch on a gathered copy of the kept rows (mixed precision:
        # as autocast runs it; small maps with threads: oneDNN's
        # convolutions), added into the shortcut rows in their dtype
        xs = x.index_select(0, idx)
        # (written into its input, the shortcut rows are those rows)
        rows = xs if out is x else out.index_select(0, idx)
        res = fb.branch(xs)
        if pooled:  # add, ReLU and means in one pass
            kept_means = _add_relu_mean_(res, rows)
            new_rows = res
        else:
            new_rows = torch.relu(rows + res).to(out.dtype)
        out.index_copy_(0, idx, new_rows)
    elif kept:
        c_in, h, w = x.shape[1:]
        c_out, ho, wo = out.shape[1:]
        width = fb.w1.shape[0]
        xr = x.reshape(n, c_in, h * w)
        # conv1 of the kept images straight from their rows of x (no
        # x[samples] copy), GEMMs whose columns are split over the threads
        # (laud_mm.ops.sample_gemm), ReLU fused
        h1 = x.new_empty(len(kept), width, h * w)
        seq = torch.arange(len(kept))
        _sample_gemm(h1, fb.w1m, xr, idx, seq, fb.b1, relu=True)
        h2 = fb.conv2(h1.view(-1, width, h, w)).relu_()
        # conv3 accumulated into the shortcut rows: relu(ident + b3 + W3 h),
        # the rows' channel sums taken in the same pass
        sums = out.new_empty(len(kept), c_out) if means is not None \
            else None
        _sample_gemm(out.view(n, c_out, ho * wo), fb.w3m,
                     h2.view(len(kept), width, ho * wo), seq, idx, fb.b3,
                     accumulate=True, relu=True, sums=sums)
        if sums is not None:
            kept_means = sums.div_(ho * wo)
    if not nonneg_inplace:  # skipped samples: relu(shortcut)
        skipped = (~on).nonzero()[:, 0]
        if means is not None:  # in place, their means in the same pass
            means.index_copy_(0, skipped, _relu_mean_rows_(out, skipped))
        elif out.device.type == 'cpu':  # in place, row by row
            for s in skipped.tolist():
                out[s].relu_()
        elif skipped.numel():  # one operation for the batch on a GPU
            out.index_copy_(0, skipped, out.index_select(0, skipped).relu_())
    if means is not None and kept:  # (no sample kept, written into the
        # input: its record stands, the tensor is unchanged)
        record_channel_mean(out, means.index_copy(0, idx, kept_means))
    elif means is not None and not nonneg_inplace:
        record_channel_mean(out, means)
    return out, gate


#: each paradigm's CPU path, ``path(block, x, plan) -> (out, gate)``
CPU_PATHS = dict(spatial=_spatial_forward, channel=_channel_forward,
                 layer=_layer_forward)
