"""Kernels the convolutional latency blocks share: the dense downsample of
the shortcut, one fused kernel from several, the channel masker (global
pool + 2-layer MLP in one kernel), and the spatial paradigm's kernels in
the paper's fused scheduling (the active patches, the masker with conv1,
the gathered convolutions, the scatter-add).

Source: paper appendix A and sec. 3.4 (fused operators), appendix C.1
(the channel masker's 2-layer MLP).
"""
import math
from dataclasses import dataclass
from typing import Callable, List, Sequence

from ...structures.geometry import BlockGeometry, ceil_div
from ..expectation import expected_ops
from ..operators import (OpLatency, conv_op, elementwise_latency,
                         pool_latency, scatter_add_latency)


def downsample_ops(pred, g: BlockGeometry, batch: float) -> List[OpLatency]:
    """The shortcut's 1x1 (strided) conv + BN when the block has one.

    Args:
        pred: the :class:`~laud_mm.latency.LatencyPredictor` (``hw``).
        g: the block geometry.
        batch: samples.

    Returns:
        [downsample] or [] (identity shortcut).
    """
    if not g.has_downsample:
        return []
    return [conv_op(pred.hw, 'downsample', batch, g.in_channels,
                    g.out_channels, g.out_hw, g.in_hw, stride=g.stride)]


def fused_op(hw, name: str, parts: Sequence[OpLatency]) -> OpLatency:
    """Several kernels run as one: their times summed with a single launch
    (the largest of the parts': a parallel region if any part opens one,
    ``HardwareSpec.region_us``).

    Args:
        hw: the device.
        name: the fused operator's name.
        parts: the kernels fused.

    Returns:
        :class:`OpLatency` (milliseconds).
    """
    launch = max((o.launch_ms for o in parts), default=0.)
    return OpLatency(name, sum(o.ms - o.launch_ms for o in parts) + launch,
                     sum(o.compute_ms for o in parts),
                     sum(o.memory_ms for o in parts), launch,
                     sum(o.macs for o in parts))


def masker_input_pooled(pred, g: BlockGeometry) -> bool:
    """Whether a layer / channel block's masker finds its input's channel
    means already recorded (:mod:`laud_mm.models.layers.channel_mean`) and
    skips its global pool: the eager path of a ResNet bottleneck
    (``g.kind == 'bottleneck'``; the RegNetY blocks' model, the fused
    schedule, charges every masker its pool, although the RegNetY CPU
    path records the means too) on a CPU spec, for every block but the
    backbone's first (stage 0, block 0), whose input is the stem's
    output. Layer blocks record their output's means on any CPU spec
    (``vector_width`` set: the compiled epilogues);
    channel blocks where the fused kernel runs (``vector_width >= 16``,
    AVX-512) and with every group on, except masked-dense 7 x 7 blocks
    above ``policy.CHANNEL_DENSE_RATE`` (their successor's pool, 2048 x 49
    values per image, is left out). Source: paper sec. 3.2 (the masker
    pools its input), sec. 3.4 (operator fusion)."""
    lanes = 16 if g.paradigm == 'channel' else 1
    return bool(pred.eager and g.kind == 'bottleneck' and
                pred.hw.vector_width >= lanes and
                not (g.stage == 0 and g.index == 0))


def compiled_masker(pred) -> bool:
    """Whether an eager channel / layer masker decides in one compiled
    call (``laud_mm.ops.masker_gate``: the linear layers and the decision
    on the calling thread, no parallel region): on a CPU spec
    (``vector_width`` set; the float32 CPU path). Source: paper sec. 3.2
    (maskers), sec. 3.4 (operator fusion)."""
    return pred.hw.vector_width > 0


def channel_masker_op(pred, g: BlockGeometry, batch: float) -> OpLatency:
    """The channel masker as one kernel: global pool of x (unless its means
    are recorded, :func:`masker_input_pooled`), Linear(C_in, h), ReLU,
    Linear(h, 2 n_groups) (h = ``g.channel_masker_hidden``).

    Returns:
        :class:`OpLatency` named ``'masker'``.
    """
    hw = pred.hw
    hid = g.channel_masker_hidden
    parts = [] if masker_input_pooled(pred, g) else [
        pool_latency(hw, 'masker', batch, g.in_channels, g.in_hw, (1, 1),
                     g.in_hw[0] * g.in_hw[1])]
    # the compiled call runs the MLP on the calling thread
    on_caller = False if compiled_masker(pred) else None
    parts += [conv_op(hw, 'masker_mlp', batch, g.in_channels, hid, (1, 1),
                      (1, 1), parallel=on_caller),
              conv_op(hw, 'masker_mlp2', batch, hid, 2 * g.num_groups,
                      (1, 1), (1, 1), parallel=on_caller)]
    return fused_op(hw, 'masker', parts)


def layer_skip_ops(pred, g: BlockGeometry, batch: int, d: float,
                   branch_ops: Callable[[int], List[OpLatency]]
                   ) -> List[OpLatency]:
    """A layer-skipping CNN block in the fused scheduling: the masker
    (global pool + linear gate, one kernel), the dense shortcut, and the
    residual branch on the ``d * batch`` kept samples (expected, blended
    between integer counts).

    Args:
        pred: the :class:`~laud_mm.latency.LatencyPredictor`.
        g: the block geometry.
        batch: samples.
        d: fraction of samples that run the branch.
        branch_ops: ``n -> kernels`` of the dense branch on ``n`` samples.

    Returns:
        list of :class:`OpLatency` (whole batch).
    """
    ops = [pool_latency(pred.hw, 'masker', batch, g.in_channels, g.in_hw,
                        (1, 1), g.in_hw[0] * g.in_hw[1])]
    return ops + downsample_ops(pred, g, batch) + \
        expected_ops(branch_ops, d * batch)


# ------------------------------------------------------ spatial, fused
@dataclass(frozen=True)
class ActivePatches:
    """The active patches of a spatial block at density d (fraction of the
    output pixels kept, and of the patches: a random patch set keeps both
    in the same proportion).

    Attributes:
        grid: (gh, gw) patch grid, ceil(H_out / S) x ceil(W_out / S).
        patch: (sh, sw) computed patch, min(S, H_out) x min(S, W_out)
            output pixels (partial edge patches are computed whole).
        window: (kh, kw) conv2 input window of a patch, (s - 1) * stride +
            2 * dilation + 1 input pixels per side (the k - 1 halo).
        coverage: expected fraction of the input map the active patches'
            windows cover, 1 - (1 - d) ** cells with ``cells`` the patch
            cells whose windows contain a pixel, on average: the pixels
            conv1 must compute (the dilated mask of docs/method.md sec. 1).
        count: expected active patches of the whole batch, d * N * gh * gw.
    """
    grid: tuple
    patch: tuple
    window: tuple
    coverage: float
    count: float


def active_patches(g: BlockGeometry, batch: int,
                   d: float) -> ActivePatches:
    """:class:`ActivePatches` of a spatial block ``g`` for ``batch``
    samples at density ``d`` in [0, 1]."""
    S = int(g.granularity)
    ho, wo = g.out_hw
    sh, sw = min(S, ho), min(S, wo)
    kh = (sh - 1) * g.stride + 2 * g.dilation + 1
    kw = (sw - 1) * g.stride + 2 * g.dilation + 1
    cells = kh * kw / float(sh * sw * g.stride * g.stride)
    grid = (ceil_div(ho, S), ceil_div(wo, S))
    return ActivePatches(grid, (sh, sw), (kh, kw),
                         min(1., 1. - (1. - d) ** cells),
                         d * batch * grid[0] * grid[1])


def spatial_masker_ops(pred, g: BlockGeometry, batch: int, d: float,
                       patches: ActivePatches) -> List[OpLatency]:
    """The spatial masker and conv1, whichever of the two schedules is
    faster (paper sec. 3.4: fusing the masker into conv1 avoids reading x
    twice but makes conv1 spatially static; "operator fusion improves
    efficiency in most scenarios", not all, and the schedule is chosen by
    the predicted latency):

    * fused Masker-Conv1x1: one dense 1x1 conv C_in -> width + 1 (the keep
      - skip logit difference as the extra output, appendix B.1), then the
      mask index (pool the logit to the patch grid, compare, list the
      active patches);
    * the masker on its own (pool x to the patch grid, 1x1 conv C_in -> 2),
      the mask index, and conv1 at the input pixels the active windows
      cover (``patches.coverage``), priced as the dense conv1 on that
      fraction of the rows.

    Returns:
        the kernels of the faster schedule.
    """
    hw = pred.hw
    hi, wi = g.in_hw
    gh, gw = patches.grid
    index = elementwise_latency(hw, 'mask_index', float(batch * hi * wi),
                                1, 0, ops_per_elem=2.)
    fused = [conv_op(hw, 'masker_conv1', batch, g.in_channels, g.width + 1,
                     g.in_hw, g.in_hw), index]
    unfused = [pool_latency(hw, 'masker', batch, g.in_channels, g.in_hw,
                            patches.grid, max(1, (hi * wi) // (gh * gw))),
               conv_op(hw, 'masker_fc', batch, g.in_channels, 2,
                       patches.grid, patches.grid), index]
    if d > 0:
        rows = max(1, int(math.ceil(patches.coverage * hi - 1e-9)))
        unfused.append(conv_op(hw, 'conv1', batch, g.in_channels, g.width,
                               (rows, wi), (rows, wi)))
    if sum(o.ms for o in fused) <= sum(o.ms for o in unfused):
        return fused
    return unfused


def gathered_conv_op(pred, name: str, n: int, g: BlockGeometry, cin: int,
                     cout: int, patches: ActivePatches, batch: int,
                     k: int = 1, groups: int = 1) -> OpLatency:
    """A convolution on the ``n`` active patches of the batch, computing
    each patch's (sh, sw) output pixels (paper sec. 3.4, appendix B.1:
    gather-conv2, k = 3, reads every patch's conv2 window with its halo
    straight from the dense conv1 output through the patch index; conv3,
    k = 1, reads the gathered patch buffer).

    A PE computes a tile of the output channels and of a patch's pixels
    for every active patch in turn (``ConvOp.patch_loop``: the tiling is
    fixed, the patch count data-dependent), so only channel and pixel tiles
    run in parallel, and every channel tile re-reads every active patch's
    input window, halo included. Accesses move a pixel's contiguous
    channels (the fused kernels' channels-last layout): full access
    efficiency.

    Returns:
        :class:`OpLatency` (zero for ``n <= 0``).
    """
    if k == 1:
        return conv_op(pred.hw, name, n, cin, cout, patches.patch,
                       patches.patch, groups=groups, patch_loop=True)
    return conv_op(pred.hw, name, n, cin, cout, patches.patch, g.in_hw, k=k,
                   stride=g.stride, dilation=g.dilation, groups=groups,
                   gathered=True, in_coverage=patches.coverage,
                   source_batch=float(batch), patch_loop=True)


def spatial_scatter_op(pred, g: BlockGeometry, n: int, batch: int,
                       patches: ActivePatches) -> OpLatency:
    """The fused scatter-add + ReLU of ``n`` active patches into the
    residual map (:func:`~laud_mm.latency.operators.scatter_add_latency`:
    the map read and written whole, the patches added at their
    positions)."""
    ho, wo = g.out_hw
    sh, sw = patches.patch
    return scatter_add_latency(pred.hw, 'scatter_add', float(
        batch * g.out_channels * ho * wo), float(
            n * sh * sw * g.out_channels))
