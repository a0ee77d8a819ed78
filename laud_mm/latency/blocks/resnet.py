"""Latency block of the ResNet bottleneck (``kind='bottleneck'``) and of
the ResNet stem: the kernels each paradigm runs, in the paper's fused
scheduling (``implementation='fused'``) and as this project's PyTorch / C++
dynamic path runs them on CPU (``'eager'``).

Kernels of each block (paper sec. 3.4 and Fig. 2, docs/method.md sec. 4),
BN folded into the convolutions, ReLU fused into their epilogues:

* static: conv1 (1x1), conv2 (3x3, stride), conv3 (1x1), [downsample (1x1,
  stride)], add+ReLU;
* spatial (S, density d = fraction of output pixels kept): the masker
  with conv1 (fused masker+conv1, a dense 1x1 conv Cin -> width + 1, or
  the masker alone and conv1 on the covered pixels, whichever is faster),
  mask (pool the logit to the patch grid, compare, build the patch index),
  gather-conv2 (3x3 on the active patches read from the conv1 output, halo
  re-read by every channel tile), conv3 on the gathered patches,
  [downsample], scatter-add+ReLU into the shortcut
  (:mod:`laud_mm.latency.blocks.common`);
* channel (G, density d = fraction of channel groups kept): masker (global
  pool + fused 2-layer MLP), conv1 to the active channels, conv2 and conv3
  on the active channels (weights gathered per sample), [downsample],
  add+ReLU;
* layer (density d = fraction of samples whose gate is on): masker (global
  pool + fused linear gate), [downsample], and conv1, conv2, conv3, add on
  the d * N kept samples (expectation, linear between the neighbouring
  integer batch sizes; at batch 1 the block runs with probability d).

The eager models follow :mod:`laud_mm.models.resnet.dynamic` kernel by
kernel; the thresholds that choose its paths are read from
:mod:`laud_mm.ops.policy`, the same module the dynamic path reads.

Source: paper appendix A, docs/method.md sec. 4.
"""
import math
from typing import List, Optional, Tuple

from ...ops import policy
from ...structures.geometry import (PARADIGMS, BlockGeometry,
                                    DeepStemGeometry, StemGeometry, ceil_div)
from ..expectation import expected_max_normal, expected_ops
from ..operators import (OpLatency, conv_op, elementwise_latency,
                         launch_latency, linear_latency, pool_latency,
                         region_ops)
from . import register_block_latency, register_stem_latency
from .common import (active_patches, channel_masker_op, compiled_masker,
                     downsample_ops, gathered_conv_op, layer_skip_ops,
                     masker_input_pooled, spatial_masker_ops,
                     spatial_scatter_op)

#: bookkeeping calls of a spatial block's forced gate
#: (``laud_mm.models.layers.dynamic.forced_gate`` without autograd: zeros,
#: copy) after its logit; the validation imposes the gates through
#: ``masker.forced_gate``
EAGER_FORCED_GATE_LAUNCHES = 2
#: host calls of a channel / layer masker's decision on its logits where
#: it is not the compiled call (``laud_mm.models.layers.gates.gumbel_gate``
#: in eval: select, select, compare, cast)
EAGER_GATE_DECISION_LAUNCHES = 4
#: ... and of a forced gate without autograd, which replaces it (one copy:
#: ``MaskerBase._gate``), as the validation imposes them
EAGER_FORCED_DECISION_LAUNCHES = 1


def _decision_launches(pred) -> int:
    """Host calls of a channel / layer block's gate decision: a forced
    gate's (the validation) or the masker's own (none apart from the
    compiled masker call,
    :func:`~laud_mm.latency.blocks.common.compiled_masker`)."""
    if pred.forced_gates:
        return EAGER_FORCED_DECISION_LAUNCHES
    return 0 if compiled_masker(pred) else EAGER_GATE_DECISION_LAUNCHES


def channel_kept_padded(g: BlockGeometry, batch: int, d: float,
                        forced_gates: bool = True) -> int:
    """Kept channels k per sample of the eager channel path
    (``laud_mm.ops.channel_kept_lists``): the largest per-sample
    count of kept channels, padded up to a multiple of ``CHANNEL_PAD``, at
    most the width.

    Args:
        g: a channel block's geometry (G = ``g.granularity``).
        batch: samples.
        d: fraction of channel groups kept.
        forced_gates: every sample keeps ``round(d * groups)`` groups (the
            validation's exact-density gates); else the expected largest of
            ``batch`` binomial counts (normal approximation).

    Returns:
        k (0 when no sample keeps a group).
    """
    n_groups = g.num_groups
    if forced_gates:
        groups = int(round(d * n_groups))
    else:
        mean = d * n_groups
        std = math.sqrt(n_groups * d * (1. - d))
        groups = min(n_groups, int(math.ceil(
            mean + std * expected_max_normal(int(batch)) - 1e-9)))
    kmax = groups * int(g.granularity)
    return min(g.width, -(-kmax // policy.CHANNEL_PAD) * policy.CHANNEL_PAD)


# ------------------------------------------------------------ blocks
@register_stem_latency('resnet')
def stem_ops(pred, stem: StemGeometry, batch: int) -> List[OpLatency]:
    """Kernels of the ResNet stem: 7x7/2 conv (+BN+ReLU) and 3x3/2
    max-pool."""
    hw = pred.hw
    conv = conv_op(hw, 'stem_conv', batch, stem.in_channels,
                   stem.out_channels, stem.conv_hw, stem.in_hw, k=7,
                   stride=2)
    pool = pool_latency(hw, 'stem_pool', batch, stem.out_channels,
                        stem.conv_hw, stem.out_hw, 9)
    return [conv, pool]


@register_stem_latency('resnet_deep')
def deep_stem_ops(pred, stem: DeepStemGeometry,
                  batch: int) -> List[OpLatency]:
    """Kernels of the deep (ResNetV1c) stem: three 3x3 convs (+BN+ReLU),
    the first at stride 2, and the 3x3/2 max-pool."""
    hw = pred.hw
    m, c = stem.mid_channels, stem.out_channels
    return [
        conv_op(hw, 'stem_conv1', batch, stem.in_channels, m, stem.conv_hw,
                stem.in_hw, k=3, stride=2),
        conv_op(hw, 'stem_conv2', batch, m, m, stem.conv_hw, stem.conv_hw,
                k=3),
        conv_op(hw, 'stem_conv3', batch, m, c, stem.conv_hw, stem.conv_hw,
                k=3),
        pool_latency(hw, 'stem_pool', batch, c, stem.conv_hw, stem.out_hw, 9),
    ]


def static_block_ops(pred, g: BlockGeometry, batch: float,
                     prefix: str = '') -> List[OpLatency]:
    """Kernels of a dense bottleneck on ``batch`` samples."""
    hw = pred.hw
    if batch <= 0:
        return []
    ops = [
        conv_op(hw, prefix + 'conv1', batch, g.in_channels, g.width,
                g.in_hw, g.in_hw),
        conv_op(hw, prefix + 'conv2', batch, g.width, g.width, g.out_hw,
                g.in_hw, k=3, stride=g.stride, dilation=g.dilation),
        conv_op(hw, prefix + 'conv3', batch, g.width, g.out_channels,
                g.out_hw, g.out_hw),
    ]
    out_e = float(batch * g.out_channels * g.out_hw[0] * g.out_hw[1])
    ops.append(elementwise_latency(hw, prefix + 'add', out_e, 2, 1))
    if pred.eager:  # separate ReLU kernels (in place)
        ops.insert(1, elementwise_latency(
            hw, prefix + 'relu1', float(batch * g.width * g.in_hw[0] *
                                        g.in_hw[1]), 1, 1))
        ops.insert(3, elementwise_latency(
            hw, prefix + 'relu2', float(batch * g.width * g.out_hw[0] *
                                        g.out_hw[1]), 1, 1))
        ops.append(elementwise_latency(hw, prefix + 'relu3', out_e, 1, 1))
    return ops


def pooled_static_block_ops(pred, g: BlockGeometry,
                            batch: float) -> List[OpLatency]:
    """The static block as a layer / channel block with every gate on runs
    it in the eager path: on a CPU spec (``vector_width`` set: the compiled
    epilogue :func:`laud_mm.ops.add_relu_mean_`) the residual add, the ReLU
    and the channel means for the next block's masker are one pass
    (``add_relu3``: two reads, one write); elsewhere
    :func:`static_block_ops`."""
    ops = static_block_ops(pred, g, batch)
    if not (pred.eager and pred.hw.vector_width > 0) or batch <= 0:
        return ops
    out_e = float(batch * g.out_channels * g.out_hw[0] * g.out_hw[1])
    return [o for o in ops if o.name not in ('add', 'relu3')] + [
        elementwise_latency(pred.hw, 'add_relu3', out_e, 2, 1)]


def spatial_block_ops(pred, g: BlockGeometry, batch: int,
                      d: float) -> List[OpLatency]:
    """Kernels of a spatial block at density ``d`` (fraction of output
    pixels kept) with patch side S = ``g.granularity``: the masker with
    conv1 (:func:`~laud_mm.latency.blocks.common.spatial_masker_ops`),
    [downsample], gather-conv2 and conv3 on the active patches
    (:func:`~laud_mm.latency.blocks.common.gathered_conv_op`), the
    scatter-add; from ``pred.spatial_dense_threshold`` on, dense conv2 /
    conv3 and the output multiplied by the mask."""
    if pred.eager:
        return _spatial_eager(pred, g, batch, d)
    hw = pred.hw
    ho, wo = g.out_hw
    patches = active_patches(g, batch, d)
    thr = pred.spatial_dense_threshold
    if thr is not None and d >= thr:
        dense = static_block_ops(pred, g, batch)
        rest = [o for o in dense if o.name != 'conv1' and
                o.name != 'relu1']
        return spatial_masker_ops(pred, g, batch, 1., patches) + \
            downsample_ops(pred, g, batch) + rest + [
                elementwise_latency(hw, 'mask_mul', float(
                    batch * g.out_channels * ho * wo), 2, 1)]

    def patch_ops(n):
        if n <= 0:
            return []
        return [gathered_conv_op(pred, 'gather_conv2', n, g, g.width,
                                 g.width, patches, batch, k=3),
                gathered_conv_op(pred, 'conv3', n, g, g.width,
                                 g.out_channels, patches, batch),
                spatial_scatter_op(pred, g, n, batch, patches)]
    return spatial_masker_ops(pred, g, batch, d, patches) + \
        downsample_ops(pred, g, batch) + \
        expected_ops(patch_ops, patches.count)


def channel_block_ops(pred, g: BlockGeometry, batch: int,
                      d: float) -> List[OpLatency]:
    """Kernels of a channel block at density ``d`` (fraction of the
    ``width / G`` channel groups kept), per-sample channel sets."""
    hw = pred.hw
    G = int(g.granularity)
    n = g.num_groups
    act = d * g.width
    std = G * math.sqrt(n * d * (1. - d))
    # weights read off-chip: the union of the samples' channel sets
    union = 1. - (1. - d) ** batch
    ops = [channel_masker_op(pred, g, batch)]
    if pred.eager:
        return _channel_eager(pred, g, batch, d, ops[0])
    ops += downsample_ops(pred, g, batch)
    if act > 0:
        ops.append(conv_op(
            hw, 'conv1', batch, g.in_channels, act, g.in_hw, g.in_hw,
            per_sample_channels=True, cout_std=std, cout_max=g.width,
            weight_elems=union * g.width * g.in_channels))
        ops.append(conv_op(
            hw, 'conv2', batch, act, act, g.out_hw, g.in_hw, k=3,
            stride=g.stride, dilation=g.dilation,
            per_sample_channels=True, cout_std=std, cout_max=g.width,
            weight_elems=union ** 2 * g.width * g.width * 9))
        ops.append(conv_op(
            hw, 'conv3', batch, act, g.out_channels, g.out_hw, g.out_hw,
            per_sample_channels=True,
            weight_elems=union * g.width * g.out_channels))
    ops.append(elementwise_latency(
        hw, 'add', float(batch * g.out_channels * g.out_hw[0] *
                         g.out_hw[1]), 2, 1))
    return ops


def _channel_eager(pred, g: BlockGeometry, batch: int, d: float,
                   masker: OpLatency) -> List[OpLatency]:
    """Eager channel path (``_channel_forward`` of
    :mod:`laud_mm.models.resnet.dynamic`), whole batch at once: per-sample
    weights of the k kept channels (k = the largest per-sample count,
    padded to a multiple of ``CHANNEL_PAD`` with zero channels) gathered
    by indexing, conv1 as one batched GEMM (N x (k x C_in) @ (C_in x
    HW), bias broadcast first), ReLU, conv2 as one grouped conv (a group
    of k channels per sample), ReLU, conv3 as one batched GEMM
    accumulated into the shortcut (a copy of the input unless
    ``owned_block_inputs``), then bn3's shift and the ReLU. Maps under
    ``CHANNEL_SMALL_MAP_PIXELS`` above ``CHANNEL_DENSE_RATE`` kept groups:
    masked dense; every group on: the static block."""
    hw = pred.hw
    n = float(batch)
    c_in, c_out, width = g.in_channels, g.out_channels, g.width
    hi, wi = g.in_hw
    ho, wo = g.out_hw
    in_px, out_px = hi * wi, ho * wo
    out_e = n * c_out * out_px
    # pool + MLP (one op above); on a CPU spec the MLP and the decision
    # are that one compiled call (ops.masker_gate; a forced gate is then
    # copied into its gate tensor: the 'gate' call), elsewhere relu and
    # view follow, then the decision (a forced gate replaces it, the
    # masker still runs)
    steps = 0 if compiled_masker(pred) else 2
    ops = [masker, launch_latency(hw, 'masker_steps', steps),
           launch_latency(hw, 'gate', _decision_launches(pred))]
    ops += downsample_ops(pred, g, batch)
    # the kept-channel lists, their counts and the batch's kept groups:
    # one compiled pass (ops.channel_kept_lists); the static-block and
    # rate tests read its count
    ops.append(launch_latency(hw, 'kept_lists', 1))
    if d >= 1.:  # every group on: the static block, pooled epilogue
        return ops + pooled_static_block_ops(pred, g, batch)
    if in_px < policy.CHANNEL_SMALL_MAP_PIXELS:
        if d > policy.CHANNEL_DENSE_RATE:  # masked dense, folded BN
            mid_in = n * width * in_px
            mid_out = n * width * out_px
            return ops + [
                # gt, repeat_interleave, cast, two views
                launch_latency(hw, 'mask_prep', 5),
                conv_op(hw, 'conv1', batch, c_in, width, g.in_hw, g.in_hw),
                elementwise_latency(hw, 'relu1', mid_in, 1, 1),
                elementwise_latency(hw, 'mask1', mid_in, 1, 1),
                conv_op(hw, 'conv2', batch, width, width, g.out_hw,
                        g.in_hw, k=3, stride=g.stride,
                        dilation=g.dilation),
                elementwise_latency(hw, 'relu2', mid_out, 1, 1),
                elementwise_latency(hw, 'mask2', mid_out, 1, 1),
                conv_op(hw, 'conv3', batch, width, c_out, g.out_hw,
                        g.out_hw),
                elementwise_latency(hw, 'add', out_e, 2, 1),
                elementwise_latency(hw, 'relu3', out_e, 1, 1)]
    k = channel_kept_padded(g, batch, d, pred.forced_gates)
    # conv3 is accumulated into the shortcut: the input itself when the
    # backbone owns it, else a copy of it (or the downsample's output),
    # then bn3's shift and the ReLU (a pass each)
    out = [] if (pred.owned_block_inputs or g.has_downsample) else [
        elementwise_latency(hw, 'clone', out_e, 1, 1)]
    tail = [elementwise_latency(hw, 'bias3', out_e, 1, 1),
            elementwise_latency(hw, 'relu3', out_e, 1, 1)]
    if k <= 0:  # every sample off: relu(shortcut + bn3 shift)
        return ops + [launch_latency(hw, 'bookkeeping', 14)] + out + tail
    nk = n * k
    if policy.CHANNEL_FUSED_CPU and hw.vector_width >= 16 and \
            c_out % 16 == 0:
        # the fused AVX-512 kernel (laud_mm.ops.channel_branch_add_relu;
        # a CPU spec with 16-lane vectors stands for AVX-512; any batch:
        # its pixels, or with fewer samples than PEs on small maps its
        # columns, are split over the N_PE threads, a GEMM's tiles over
        # the PEs here): conv1 and conv2 panels gathered once per call,
        # then per sample three GEMMs over the pixels as rows (output
        # channels on the lanes: no pixel-vector rounding), conv3 into a
        # per-panel buffer added into the shortcut (one pass with bn3's
        # shift and the ReLU)
        kq = -(-k // 16) * 16
        rows_in, rows_out = (in_px, 1), (out_px, 1)
        # the panel gathers read whole weight rows once per call (all of
        # w1, the kept rows of w2: what dominates at small batches) and
        # write each sample's panels: up front for the whole batch
        # ('_panels', a phase of their own), or block by block in the
        # phases the kernel runs row-blocked ('_blocks': the same writes,
        # into L2): on small maps when the batch has a sample per thread
        # or more, and, with fewer samples than threads on 7 x 7 outputs,
        # every phase (the column split)
        small_in = in_px <= policy.CHANNEL_BLOCKED_MAX_IN_PIXELS
        small_out = out_px <= policy.CHANNEL_BLOCKED_MAX_OUT_PIXELS
        blocked = batch >= hw.num_pe
        # the kernel counts each sample's units of 16 kept columns: a
        # typical sample's count (exact with forced gates, where every
        # sample keeps the same; else the mean)
        k1 = channel_kept_padded(g, 1, d, pred.forced_gates)
        columns = not blocked and small_in and \
            out_px <= policy.CHANNEL_COLUMN_MAX_OUT_PIXELS and \
            batch * -(-k1 // 16) >= policy.CHANNEL_COLUMN_UNITS * hw.num_pe
        row_blocked = (columns or (blocked and small_in),
                       columns or (blocked and small_out))
        panels = [
            elementwise_latency(hw, ('w1', 'w2')[i] + (
                '_blocks' if row_blocked[i] else '_panels'), elems, 0, 1,
                parallel=False)
            for i, elems in enumerate((n * kq * c_in, n * kq * k * 9))]
        # each sample's gathers read the span of its source rows (about
        # every column of a kept row) from on-chip copies
        panels += [
            elementwise_latency(hw, name, elems, 1, 0, parallel=False)
            for name, elems in (('w1_src', n * c_in * (width + 1)),
                                ('w2_src', n * 9 * k * (width + 1)))]
        # the kernel's parallel phases: the up-front gathers (when there
        # are panels to write up front), conv1, conv2 - conv3 with the
        # epilogue; with the column split conv1, conv2, conv3 with the
        # epilogue
        phases = 3 if columns else 2 + (0 if all(row_blocked) else 1)
        return ops + [
            launch_latency(hw, 'bookkeeping', 6),
            *region_ops(hw, 'phases', phases),
            elementwise_latency(hw, 'w1_rows', c_in * (width + 1), 1, 0,
                                parallel=False, cold=True),
            elementwise_latency(hw, 'w2_rows', 9 * k * (width + 1), 1, 0,
                                parallel=False, cold=True),
            *panels,
            conv_op(hw, 'conv1', batch, c_in, kq, rows_in, rows_in,
                    per_sample_channels=True, fused_gemm=True,
                    weight_elems=n * kq * c_in),
            conv_op(hw, 'conv2', batch, 9 * k, kq, rows_out, rows_out,
                    per_sample_channels=True, fused_gemm=True,
                    weight_elems=n * kq * k * 9),
            conv_op(hw, 'conv3', batch, k, c_out, rows_out, rows_out,
                    per_sample_channels=True, fused_gemm=True,
                    weight_elems=nk * c_out)
        ] + out + [elementwise_latency(hw, 'add_relu3', out_e, 2, 1,
                                       parallel=False)]
    # per-sample weights (index_select row copies; conv2's from the
    # gather kernel, runs of 9): one GEMM per sample, tiles never span
    # samples; conv2 one grouped conv (a group of k channels per sample)
    return ops + [
        launch_latency(hw, 'bookkeeping', 24),
        elementwise_latency(hw, 'w1_gather', nk * c_in, 1, 1),
        elementwise_latency(hw, 'bias1', nk * in_px, 0, 1),
        conv_op(hw, 'conv1', batch, c_in, k, g.in_hw, g.in_hw,
                per_sample_channels=True, weight_elems=nk * c_in),
        elementwise_latency(hw, 'relu1', nk * in_px, 1, 1),
        elementwise_latency(hw, 'w2_gather', nk * k * 9, 1, 1,
                            run_elems=9., contiguous_reads=1),
        conv_op(hw, 'conv2', 1, nk, nk, g.out_hw, g.in_hw, k=3,
                stride=g.stride, dilation=g.dilation, groups=batch),
        elementwise_latency(hw, 'relu2', nk * out_px, 1, 1),
        elementwise_latency(hw, 'w3_gather', nk * c_out, 1, 1)] + out + [
        conv_op(hw, 'conv3', batch, k, c_out, g.out_hw, g.out_hw,
                per_sample_channels=True, weight_elems=nk * c_out),
        # the GEMM reads the shortcut it accumulates into
        elementwise_latency(hw, 'conv3_acc', out_e, 1, 0)] + tail


def _spatial_kernel_fits(pred, g: BlockGeometry) -> bool:
    """Whether the fused spatial kernel can run block ``g`` on the spec
    (16-lane vectors stand for AVX-512; widths multiples of 16)."""
    return pred.hw.vector_width >= 16 and g.width % 16 == 0 and \
        g.out_channels % 16 == 0


def _spatial_fused_path(pred, g: BlockGeometry) -> bool:
    """Whether the eager spatial path of block ``g`` takes the fused CPU
    kernel (``SPATIAL_FUSED_CPU`` and :func:`_spatial_kernel_fits`)."""
    return policy.SPATIAL_FUSED_CPU and _spatial_kernel_fits(pred, g)


def _layer_fused_path(pred, g: BlockGeometry) -> bool:
    """Whether the eager layer path of block ``g`` runs its kept samples
    on the fused spatial kernel (``LAYER_FUSED_CPU`` and
    :func:`_spatial_kernel_fits`; the dynamic path reads that flag, not
    ``SPATIAL_FUSED_CPU``)."""
    return policy.LAYER_FUSED_CPU and _spatial_kernel_fits(pred, g)


def _spatial_dense(pred, g: BlockGeometry, d: float) -> bool:
    """Whether the eager spatial block ``g`` at density ``d`` computes
    densely (``_spatial_forward``'s dense branch: from
    ``SPATIAL_FUSED_DENSE_THRESHOLD`` on the fused path, else from
    ``pred.spatial_dense_threshold``, and with every patch on)."""
    thr = policy.SPATIAL_FUSED_DENSE_THRESHOLD \
        if _spatial_fused_path(pred, g) else pred.spatial_dense_threshold
    return d > 0. and (d >= 1. or (thr is not None and d >= thr))


def _hands_logits_to(pred, g: BlockGeometry,
                     nxt: Optional[Tuple[BlockGeometry, float]]) -> bool:
    """Whether eager block ``g`` computed densely hands its successor
    ``nxt`` = (geometry, density) the masker logits in its epilogue
    (``dense_epilogue`` of
    :mod:`laud_mm.models.layers.spatial_logit_record`): both
    spatial bottlenecks, on a CPU spec (``vector_width`` set: the compiled
    :func:`laud_mm.ops.add_relu_logit_pool_`), inside a backbone
    (``pred.owned_block_inputs``: the blocks know their successor), with
    ``policy.SPATIAL_LOGIT_HANDOFF``; the model assumes ``torch.no_grad``
    (under ``torch.inference_mode`` nothing is handed on)."""
    return bool(policy.SPATIAL_LOGIT_HANDOFF and pred.eager and
                pred.owned_block_inputs and
                nxt is not None and pred.hw.vector_width > 0
                and g.kind == 'bottleneck' and g.paradigm == 'spatial'
                and nxt[0].kind == 'bottleneck'
                and nxt[0].paradigm == 'spatial')


def _logits_recorded(pred, g: BlockGeometry) -> bool:
    """Whether eager spatial block ``g`` finds its masker logits recorded
    on its input: the block before it (:meth:`LatencyPredictor.neighbour`)
    computes densely and hands them on (:func:`_hands_logits_to`)."""
    prev = pred.neighbour(-1)
    return prev is not None and \
        _hands_logits_to(pred, prev[0], (g, 0.)) and \
        _spatial_dense(pred, prev[0], prev[1])


def _spatial_eager(pred, g: BlockGeometry, batch: int,
                   d: float) -> List[OpLatency]:
    """Eager spatial path (``_spatial_forward`` of
    :mod:`laud_mm.models.resnet.dynamic`): the fused CPU kernel where the
    path takes it (:func:`_spatial_fused`), else :func:`_spatial_gather`:
    conv1 dense (with the masker's
    logit as an extra output, forced gates included; stride-2
    blocks: the masker on its own, and conv1 on the gathered input
    windows when they cover under ``SPATIAL_WINDOW_CONV1_MAX_FRACTION``
    of the map, ``window_conv1``; a block whose logits the block before
    recorded, :func:`_logits_recorded`: the masker's decision only, conv1
    without the extra output), then either
    the gather path - gather kernel (K x K windows of the active patches,
    conv1's ReLU fused), conv2 (valid) on the windows, ReLU, conv3 on the
    patches (``spatial_patch_convs``: GEMMs for S = 1, conv3 as one GEMM
    under ``SPATIAL_CONV3_GEMM_MAX_PATCHES`` patches), fused scatter-add
    + ReLU over the whole output - or, from ``spatial_dense_threshold``
    of the patches on, the dense block times the mask. The patches are counted on the patch grid (partial edge
    patches are computed whole); a random patch set keeps on average
    the same fraction of pixels as of patches, so ``d`` is both."""
    if _spatial_fused_path(pred, g):
        return _spatial_fused(pred, g, batch, d)
    return _spatial_gather(pred, g, batch, d)


def _spatial_gather(pred, g: BlockGeometry, batch: int, d: float,
                    gate_ops: Optional[List[OpLatency]] = None
                    ) -> List[OpLatency]:
    """:func:`_spatial_eager` on the gather / scatter path, or, where the
    block computes densely (:func:`_spatial_dense`: from the fused or the
    gather path's threshold on), the dense block times the mask; ``gate_ops``: the fused
    path's masker ops, kept when it falls back to the dense block (its
    conv1 then has no logit output)."""
    hw = pred.hw
    S = int(g.granularity)
    ho, wo = g.out_hw
    gh, gw = ceil_div(ho, S), ceil_div(wo, S)
    n = float(batch)
    width, c_out = g.width, g.out_channels
    out_e = n * c_out * ho * wo
    in_px = n * g.in_hw[0] * g.in_hw[1]
    if gate_ops is not None:  # the fused path's masker
        ops, c1 = list(gate_ops), width
    elif g.stride > 1 or _logits_recorded(pred, g):
        # the masker on its own (spatial_gate)
        ops = _spatial_gate_ops(pred, g, batch)
        c1 = width
    else:  # masker fused into conv1: pool its logit, compare
        ops = [elementwise_latency(hw, 'mask_pool', in_px, 1, 0),
               launch_latency(hw, 'mask_steps', 4)]
        if pred.forced_gates:  # the logit is computed, then replaced
            ops.append(launch_latency(hw, 'gate', EAGER_FORCED_GATE_LAUNCHES))
        c1 = width + 1
    conv1 = conv_op(hw, 'conv1', batch, g.in_channels, c1, g.in_hw,
                    g.in_hw)
    # count_nonzero, item
    ops.append(launch_latency(hw, 'gate_count', 2))
    if d <= 0.:  # relu(shortcut)
        return ops + downsample_ops(pred, g, batch) + [
            elementwise_latency(hw, 'relu', out_e, 1, 1)]
    if _spatial_dense(pred, g, d):
        dense = static_block_ops(pred, g, batch)
        ops += [conv1 if o.name == 'conv1' else o for o in dense
                if o.name not in ('add', 'relu3')]
        if c1 > width:  # conv1's output without the masker's channel
            ops.append(launch_latency(hw, 'slice', 1))
        if d < 1.:  # expand_spatial_gate, y *= mask
            ops += [launch_latency(hw, 'expand_mask', 3),
                    elementwise_latency(hw, 'mask_mul', out_e, 1, 1)]
        ops += downsample_ops(pred, g, batch)
        if _hands_logits_to(pred, g, pred.neighbour(1)):
            # add, ReLU and the next masker's logits: one pass
            return ops + [
                elementwise_latency(hw, 'add_relu_logit', out_e, 2, 1)]
        return ops + [elementwise_latency(hw, 'add', out_e, 2, 1),
                      elementwise_latency(hw, 'relu3', out_e, 1, 1)]
    sh, sw = min(S, ho), min(S, wo)
    k = (S - 1) * g.stride + 2 * g.dilation + 1  # window side
    ops += ([conv1] if g.stride == 1 else []) + [
        launch_latency(hw, 'bookkeeping', 10)]

    def gemm(name, rows, cin, cout):  # one GEMM over all the rows
        return conv_op(hw, name, 1, cin, cout, (rows, 1), (rows, 1))

    def patch_ops(p):
        if p <= 0:
            return []
        if policy.uses_window_conv1(S, g.stride, g.dilation, p, in_px):
            # window_conv1: gather the input windows, conv1 on them,
            # ReLU, re-zero the outside pixels
            ops = [elementwise_latency(
                       hw, 'gather_x', p * g.in_channels * k * k, 1, 1,
                       run_elems=float(k), contiguous_reads=1),
                   conv_op(hw, 'conv1', p, g.in_channels, width, (k, k),
                           (k, k)),
                   elementwise_latency(hw, 'relu1', p * width * k * k,
                                       1, 1),
                   launch_latency(hw, 'outside', 8)]
        else:
            # dense conv1 (stride 2: after the masker), then one K x K
            # window per patch and channel; ReLU fused
            ops = ([conv1] if g.stride > 1 else []) + [
                elementwise_latency(hw, 'gather', p * width * k * k, 1,
                                    1, run_elems=float(k),
                                    contiguous_reads=1)]
        if S == 1:
            # spatial_patch_convs: two GEMMs, bias written first (at
            # dilation d the 3 x 3 taps of the gathered window)
            return ops + [
                elementwise_latency(hw, 'bias2', p * width, 0, 1),
                gemm('conv2', p, width * 9, width),
                elementwise_latency(hw, 'relu2', p * width, 1, 1),
                elementwise_latency(hw, 'bias3', p * c_out, 0, 1),
                gemm('conv3', p, width, c_out)]
        px = p * sh * sw
        ops += [conv_op(hw, 'conv2', p, width, width, (sh, sw), (k, k), k=3,
                        stride=g.stride, dilation=g.dilation),
                elementwise_latency(hw, 'relu2', px * width, 1, 1)]
        if p >= policy.SPATIAL_CONV3_GEMM_MAX_PATCHES:
            return ops + [conv_op(hw, 'conv3', p, width, c_out, (sh, sw),
                                  (sh, sw))]
        return ops + [  # transpose in, bias, GEMM, transpose out
            elementwise_latency(hw, 'h_transpose', px * width, 1, 1),
            elementwise_latency(hw, 'bias3', px * c_out, 0, 1),
            gemm('conv3', px, width, c_out),
            elementwise_latency(hw, 'y_transpose', px * c_out, 1, 1)]
    ops += expected_ops(patch_ops, d * n * gh * gw)
    ops += downsample_ops(pred, g, batch)
    # one pass over the output: identity and out streamed, the active
    # patches read (a fraction d of the output)
    return ops + [elementwise_latency(hw, 'scatter_add_relu', out_e,
                                      1 + d, 1)]


def _spatial_gate_ops(pred, g: BlockGeometry,
                      batch: int) -> List[OpLatency]:
    """The masker on its own (``spatial_gate`` of
    :mod:`laud_mm.models.layers.spatial_logit_record`): its logit
    difference as a one-channel 1x1 conv of x (a read of x), pooled to
    the patch grid, compared; forced gates compute it too, then replace
    it. Logits the block before recorded (:func:`_logits_recorded`) leave
    the decision only."""
    hw = pred.hw
    in_px = float(batch) * g.in_hw[0] * g.in_hw[1]
    ops = [] if _logits_recorded(pred, g) else [
        elementwise_latency(hw, 'mask_conv', in_px * g.in_channels, 1, 0),
        elementwise_latency(hw, 'mask_pool', in_px, 1, 0, parallel=False)]
    # the logit call's bookkeeping, then the decision written into its
    # logits in place, or a forced gate copied into them
    ops.append(launch_latency(hw, 'mask_steps', 3))
    return ops


def _spatial_fused(pred, g: BlockGeometry, batch: int,
                   d: float) -> List[OpLatency]:
    """Fused CPU spatial path (``laud_mm.ops.spatial_branch_add_relu``,
    used by ``_spatial_forward`` on AVX-512 CPUs at any batch; a CPU spec
    with 16-lane vectors stands for AVX-512 and N_PE for the threads, over
    which the kernel splits the batch's pixels: a GEMM's tiles spread over
    the PEs here): the masker's logit difference as a one-channel 1x1 conv
    of x, pooled (also with forced gates); then three GEMMs with the
    pixels as rows (output channels on the lanes): conv1 at the input
    pixels the active patches' conv2 windows
    cover (expected fraction 1 - (1 - d)^cells, ``cells`` = patch cells
    whose windows contain a pixel), conv2 (K = 9 width) and conv3 at
    the active output pixels; conv3's output is added into the shortcut
    at those pixels (runs of S; neighbouring patches share cache lines,
    :func:`~laud_mm.latency.operators.elementwise_latency`'s
    ``density``). Outside a backbone's owned identity
    blocks the shortcut's other pixels get a ReLU pass. The kernel runs
    below ``SPATIAL_FUSED_DENSE_THRESHOLD`` active patches (from there on
    the dense block times the mask; ``spatial_dense_threshold`` is the
    gather path's)."""
    hw = pred.hw
    S = int(g.granularity)
    ho, wo = g.out_hw
    hi, wi = g.in_hw
    n = float(batch)
    width, c_out, c_in = g.width, g.out_channels, g.in_channels
    out_e = n * c_out * ho * wo
    gate = _spatial_gate_ops(pred, g, batch)
    if _spatial_dense(pred, g, d):  # the dense block
        return _spatial_gather(pred, g, batch, d, gate_ops=gate)
    ops = gate + [launch_latency(hw, 'gate_count', 2)]  # count_nonzero, item
    if d <= 0.:  # the owned input itself, else relu(shortcut)
        inplace = pred.owned_block_inputs and not g.has_downsample
        return ops + downsample_ops(pred, g, batch) + (
            [] if inplace else
            [elementwise_latency(hw, 'relu', out_e, 1, 1)])
    sh, sw = min(S, ho), min(S, wo)
    win = ((sh - 1) * g.stride + 2 * g.dilation + 1) * \
        ((sw - 1) * g.stride + 2 * g.dilation + 1)
    cells = win / float(sh * sw * g.stride * g.stride)
    cover = 1. - (1. - d) ** cells  # input pixels conv1 computes
    ops.append(launch_latency(hw, 'bookkeeping', 4))  # nonzero, contiguous
    # the kernel's parallel regions: its plan (the dilated mask's input
    # rows, 16 a thread at least), conv1 (with relu(shortcut) out of
    # place), conv2 - conv3 with the add, and a last ReLU pass written
    # into a downsample's output
    regions = 2 + (1 if batch * hi > 16 else 0) + \
        (1 if g.has_downsample else 0)
    ops += region_ops(hw, 'phases', regions)

    def gemm(name, k, cout):  # r rows (pixels) per sample
        return lambda r: [] if r <= 0 else [conv_op(
            hw, name, batch, k, cout, (r, 1), (r, 1),
            per_sample_channels=True, fused_gemm=True,
            weight_elems=n * k * cout)]
    ops += expected_ops(gemm('conv1', c_in, width), cover * hi * wi)
    ops += expected_ops(gemm('conv2', 9 * width, width), d * ho * wo)
    ops += expected_ops(gemm('conv3', width, c_out), d * ho * wo)
    ops += downsample_ops(pred, g, batch)
    # the active patches' rows (runs of sw pixels per channel) of the
    # output: neighbouring patches share cache lines
    ops.append(elementwise_latency(hw, 'add_relu3', d * out_e, 2, 1,
                                   run_elems=float(sw), density=min(d, 1.),
                                   parallel=False))
    if g.has_downsample or not pred.owned_block_inputs:
        ops.append(elementwise_latency(hw, 'relu', out_e, 1, 1,
                                       parallel=False))
    return ops


def _layer_eager(pred, g: BlockGeometry, batch: int,
                 d: float) -> List[OpLatency]:
    """Eager layer path (``_layer_forward`` of
    :mod:`laud_mm.models.resnet.dynamic`): where the fused spatial kernel
    runs (``policy.LAYER_FUSED_CPU``; a CPU spec with 16-lane vectors
    stands for AVX-512, as :func:`_spatial_fused_path`), the kept samples
    as one call of it, a patch per sample: its parallel regions, three
    GEMMs with the kept samples' pixels as rows, conv3's output added
    into the shortcut rows (its epilogue summing the kept rows' channels);
    elsewhere conv1 as GEMMs on the kept
    samples' rows of x (no row copy, ``laud_mm.ops.sample_gemm``: the
    kept samples' columns split over the PEs, ReLU fused), conv2, ReLU,
    then conv3 accumulated into the kept shortcut rows in place (the same
    kernel: the GEMM, then one pass for the bias, the ReLU and the rows'
    channel sums); on maps under
    ``policy.LAYER_GATHER_MAX_PIXELS`` with more than one PE, the kept
    rows gathered, the static branch on them, added into the shortcut rows
    and copied back (``policy.layer_sample_gemm``). The output is the
    shortcut itself:
    for an identity block inside a backbone
    (``owned_block_inputs``, ``pred.owned_block_inputs``) the input, so
    skipped samples cost nothing; otherwise a copy of the input (identity
    block called alone) or the downsample's output, and the skipped rows
    get a ReLU pass. Every sample on: the static block. On a CPU spec
    the masker takes its input's recorded channel means
    (:func:`~laud_mm.latency.blocks.common.masker_input_pooled`) and the
    passes that write the output record its means (the fused kernel's and
    the GEMM kernel's epilogues, the gathered path's add: no extra
    pass)."""
    hw = pred.hw
    out_e = float(g.out_channels * g.out_hw[0] * g.out_hw[1])
    in_e = float(g.in_channels * g.in_hw[0] * g.in_hw[1])
    # CPU (vector_width set), small maps, several threads: the kept rows
    # gathered into oneDNN
    gathered = hw.vector_width > 0 and not policy.layer_sample_gemm(
        g.in_hw[0] * g.in_hw[1], hw.num_pe)
    fused = _layer_fused_path(pred, g)
    # mean (unless recorded by the previous block), linear; the decision
    # (one compiled call with the linear layer on a CPU spec; a forced
    # gate replaces it, the masker still runs)
    ops = [] if masker_input_pooled(pred, g) else [
        pool_latency(hw, 'masker', batch, g.in_channels, g.in_hw, (1, 1),
                     g.in_hw[0] * g.in_hw[1])]
    ops += [linear_latency(hw, 'masker_fc', batch, g.in_channels, 2,
                           parallel=False if compiled_masker(pred)
                           else None),
            launch_latency(hw, 'gate', _decision_launches(pred))]
    ops += downsample_ops(pred, g, batch)
    ops.append(launch_latency(hw, 'gate_count', 1))  # tolist
    inplace = pred.owned_block_inputs and not g.has_downsample

    def eager(n):
        if n >= batch:  # the static block, pooled epilogue
            return pooled_static_block_ops(pred, g, batch)
        # gt, nonzero, tolist, new_empty, arange, the two kernel calls, ...
        res = [launch_latency(hw, 'bookkeeping', 10)]
        if not g.has_downsample and not inplace:
            res.append(elementwise_latency(hw, 'clone', out_e * batch,
                                           1, 1))
        if n > 0 and fused:
            hi, wi = g.in_hw
            ho, wo = g.out_hw
            # the kernel's regions: its plan over the batch's input rows,
            # conv1, conv2 - conv3 with the add (no ReLU pass: the skipped
            # rows are the pass below)
            res += region_ops(hw, 'phases',
                              2 + (1 if batch * hi > 16 else 0))
            for name, k, cout, px in (
                    ('conv1', g.in_channels, g.width, hi * wi),
                    ('conv2', 9 * g.width, g.width, ho * wo),
                    ('conv3', g.width, g.out_channels, ho * wo)):
                res.append(conv_op(hw, name, n, k, cout, (px, 1), (px, 1),
                                   per_sample_channels=True, fused_gemm=True,
                                   weight_elems=float(n * k * cout)))
            # conv3's output added into the kept rows (whole rows of the
            # map), their channel sums taken by the same epilogue
            res.append(elementwise_latency(hw, 'add_relu3', out_e * n, 2, 1,
                                           parallel=False))
        elif n > 0 and gathered:
            # index_select of the kept rows, the branch, the shortcut rows
            # (gathered apart unless the shortcut is the input) added
            # (ReLU) and copied back
            branch = {o.name: o for o in static_block_ops(pred, g, n)}
            res += [elementwise_latency(hw, 'gather_rows', in_e * n, 1, 1),
                    *(branch[k] for k in ('conv1', 'relu1', 'conv2',
                                          'relu2', 'conv3'))]
            if not inplace:
                res.append(elementwise_latency(hw, 'shortcut_rows',
                                               out_e * n, 1, 1))
            res += [elementwise_latency(hw, 'add_relu', out_e * n, 2, 1),
                    elementwise_latency(hw, 'copy_rows', out_e * n, 1, 1)]
        elif n > 0:
            branch = {o.name: o for o in static_block_ops(pred, g, n)}
            # on a CPU spec (laud_mm.ops.sample_gemm) conv1's ReLU runs in
            # its kernel, on each piece of the output while it is cached
            cpu = hw.vector_width > 0
            res += [branch[k] for k in (('conv1', 'conv2', 'relu2') if cpu
                                        else ('conv1', 'relu1', 'conv2',
                                              'relu2'))]
            # conv3 accumulated into the rows (no bias pass before it),
            # then one pass: bias, ReLU and the rows' sums (in conv3's
            # parallel region on a CPU spec)
            res += [branch['conv3'],
                    elementwise_latency(hw, 'relu3', out_e * n, 1, 1,
                                        parallel=False if cpu else None)]
        if not inplace and n < batch:  # relu of the skipped rows: one
            # compiled pass with their means on a CPU spec; elsewhere
            # counted as a call per row
            if hw.vector_width == 0:
                res.append(launch_latency(hw, 'skipped_relu', batch - n))
            res.append(elementwise_latency(hw, 'relu_skipped',
                                           out_e * (batch - n), 1, 1))
        return res
    return ops + expected_ops(eager, d * batch, with_zero=True)


def layer_block_ops(pred, g: BlockGeometry, batch: int,
                    d: float) -> List[OpLatency]:
    """Kernels of a layer-skipping block: ``d`` = fraction of samples
    that run the residual branch."""
    if pred.eager:
        return _layer_eager(pred, g, batch, d)
    return layer_skip_ops(pred, g, batch, d,
                          lambda n: static_block_ops(pred, g, n))


@register_block_latency('bottleneck')
def block_ops(pred, g: BlockGeometry, batch: int,
              density: Optional[float]) -> List[OpLatency]:
    """Kernels of one ResNet bottleneck (dispatch on ``g.paradigm``).

    Args:
        pred: the :class:`~laud_mm.latency.LatencyPredictor`.
        g: the block geometry (``kind='bottleneck'``).
        batch: samples in the batch.
        density: mask density in [0, 1] (ignored for static blocks).

    Returns:
        list of :class:`OpLatency` (whole batch).

    Raises:
        ValueError: for an unknown paradigm.
    """
    if g.paradigm is None:
        return downsample_ops(pred, g, batch) + \
            static_block_ops(pred, g, batch)
    if g.paradigm == 'spatial':
        return spatial_block_ops(pred, g, batch, density)
    if g.paradigm == 'channel':
        return channel_block_ops(pred, g, batch, density)
    if g.paradigm == 'layer':
        return layer_block_ops(pred, g, batch, density)
    raise ValueError(f'block s{g.stage}.b{g.index}: paradigm='
                     f'{g.paradigm!r} is not one of {PARADIGMS} or None')
