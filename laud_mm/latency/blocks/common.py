"""Kernels the convolutional latency blocks share: the dense downsample of
the shortcut, one fused kernel from several, and the channel masker (global
pool + 2-layer MLP in one kernel).

Source: paper appendix A and sec. 3.4 (fused operators), appendix C.1
(the channel masker's 2-layer MLP).
"""
from typing import Callable, List, Sequence

from ...structures.geometry import BlockGeometry
from ..expectation import expected_ops
from ..operators import OpLatency, conv_op, pool_latency


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
    """Several kernels run as one: their times summed with a single launch.

    Args:
        hw: the device (``launch_us``).
        name: the fused operator's name.
        parts: the kernels fused.

    Returns:
        :class:`OpLatency` (milliseconds).
    """
    launch = hw.launch_us * 1e-3
    return OpLatency(name, sum(o.ms for o in parts) - (len(parts) - 1) *
                     launch, sum(o.compute_ms for o in parts),
                     sum(o.memory_ms for o in parts), launch,
                     sum(o.macs for o in parts))


def channel_masker_op(pred, g: BlockGeometry, batch: float) -> OpLatency:
    """The channel masker as one kernel: global pool of x, Linear(C_in, h),
    ReLU, Linear(h, 2 n_groups) (h = ``g.channel_masker_hidden``).

    Returns:
        :class:`OpLatency` named ``'masker'``.
    """
    hw = pred.hw
    hid = g.channel_masker_hidden
    pool = pool_latency(hw, 'masker', batch, g.in_channels, g.in_hw, (1, 1),
                        g.in_hw[0] * g.in_hw[1])
    mlp1 = conv_op(hw, 'masker_mlp', batch, g.in_channels, hid, (1, 1),
                   (1, 1))
    mlp2 = conv_op(hw, 'masker_mlp2', batch, hid, 2 * g.num_groups, (1, 1),
                   (1, 1))
    return fused_op(hw, 'masker', [pool, mlp1, mlp2])


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
