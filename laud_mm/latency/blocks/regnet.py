"""Latency-predictor kernels of RegNetY blocks (``BlockGeometry.kind ==
'regnety'``) and of the RegNet stem.

Kernels per block (BN folded, ReLU fused, as for the ResNet bottleneck in
:mod:`laud_mm.latency.predictor`):

* static: conv1 (1x1), conv2 (3x3 grouped, ``g.groups`` groups, stride), SE
  (global pool - memory-bound, it reads the whole conv2 output -, the two
  FCs in one kernel, channel-wise scale), conv3 (1x1), [downsample], add;
* spatial (density d = fraction of output pixels kept): the masker with
  conv1 (fused, or on its own with conv1 on the covered pixels, whichever
  is faster), mask/index, [downsample], gather-conv2 (grouped) on the
  active patches, SE pool over the gathered patches, SE FCs (dense, per
  sample), SE scale of the patches, conv3 on the patches, scatter-add (the
  ResNet bottleneck's kernels, :mod:`laud_mm.latency.blocks.common`);
* channel (density d = fraction of channels kept): masker (pool + MLP),
  [downsample], conv1 to the d * w kept channels, conv2 on the active conv
  groups (a = 1 - (1 - d) ** (gw / G) of them for G < group width gw, a = d
  otherwise; whole groups), SE on the kept channels, conv3 from the kept
  channels, add;
* layer (density d = fraction of samples run): masker (pool + linear),
  [downsample], and conv1, conv2, SE, conv3, add on the d * N kept samples:
  **the SE is skipped with the layer** (paper sec. 4.3.2).

``implementation='eager'`` adds the separate ReLU kernels of the PyTorch
path; the dynamic kernels are otherwise the fused ones (the eager RegNetY
path has not been calibrated against measurements).

Source: paper appendix A, sec. 4.2 and 4.3.2, docs/method.md sec. 1 and 4.
"""
import math
from typing import List, Optional

from ...structures.geometry import (PARADIGMS, BlockGeometry,
                                    RegNetStemGeometry)
from ..expectation import expected_ops
from ..operators import (OpLatency, conv_op, elementwise_latency,
                         pool_latency, se_latency)
from . import register_block_latency, register_stem_latency
from .common import (active_patches, channel_masker_op, downsample_ops,
                     fused_op, gathered_conv_op, layer_skip_ops,
                     spatial_masker_ops, spatial_scatter_op)

__all__ = ['regnety_block_ops', 'regnet_stem_ops']

@register_stem_latency('regnet')
def regnet_stem_ops(pred, stem: RegNetStemGeometry,
                    batch: int) -> List[OpLatency]:
    """Kernels of the RegNet stem: one 3x3/2 conv (+BN+ReLU), no pool."""
    return [conv_op(pred.hw, 'stem_conv', batch, stem.in_channels,
                    stem.out_channels, stem.conv_hw, stem.in_hw, 3, 2)]


def _se(hw, batch, g: BlockGeometry, hw_size, prefix=''):
    if g.se_channels <= 0 or batch <= 0:
        return []
    return [OpLatency(prefix + o.name, o.ms, o.compute_ms, o.memory_ms,
                      o.launch_ms, o.macs, o.offchip_bytes, o.onchip_bytes)
            for o in se_latency(hw, float(batch), g.width, hw_size,
                                g.se_channels)]


def _se_fc(hw, batch: float, channels: float, se: int) -> OpLatency:
    """The SE's two FCs (channels -> se -> channels) as one kernel."""
    return fused_op(hw, 'se_fc', [
        conv_op(hw, 'se_fc', batch, channels, se, (1, 1), (1, 1)),
        conv_op(hw, 'se_fc2', batch, se, channels, (1, 1), (1, 1))])


def _static_ops(pred, g: BlockGeometry, batch: float) -> List[OpLatency]:
    """Dense RegNetY residual branch + add on ``batch`` samples (no
    downsample)."""
    hw = pred.hw
    if batch <= 0:
        return []
    ops = [conv_op(hw, 'conv1', batch, g.in_channels, g.width, g.in_hw,
                   g.in_hw),
           conv_op(hw, 'conv2', batch, g.width, g.width, g.out_hw, g.in_hw, 3,
                   g.stride, groups=g.groups)]
    ops += _se(hw, batch, g, g.out_hw)
    ops.append(conv_op(hw, 'conv3', batch, g.width, g.out_channels, g.out_hw,
                       g.out_hw))
    out_e = float(batch * g.out_channels * g.out_hw[0] * g.out_hw[1])
    ops.append(elementwise_latency(hw, 'add', out_e, 2, 1))
    if pred.eager:
        ops.append(elementwise_latency(hw, 'relu3', out_e, 1, 1))
    return ops


@register_block_latency('regnety')
def regnety_block_ops(pred, g: BlockGeometry, batch: int,
                      density: Optional[float]) -> List[OpLatency]:
    """Kernels of one RegNetY block (see the module docstring).

    Args:
        pred: the :class:`~laud_mm.latency.LatencyPredictor` (hardware,
            implementation).
        g: block geometry, ``g.kind == 'regnety'``.
        batch: samples in the batch.
        density: mask density in [0, 1] (ignored for static blocks).

    Returns:
        list of :class:`OpLatency` (whole batch).

    Raises:
        ValueError: for an unknown paradigm or a geometry of another kind.
    """
    if g.kind != 'regnety':
        raise ValueError(f'regnety_block_ops: kind={g.kind!r} is not '
                         f"'regnety'")
    if g.paradigm is None:
        return downsample_ops(pred, g, batch) + _static_ops(pred, g, batch)
    d = float(density)
    if g.paradigm == 'layer':
        return layer_skip_ops(pred, g, batch, d,
                              lambda n: _static_ops(pred, g, n))
    if g.paradigm == 'channel':
        return _channel_ops(pred, g, batch, d)
    if g.paradigm == 'spatial':
        return _spatial_ops(pred, g, batch, d)
    raise ValueError(f'block s{g.stage}.b{g.index}: paradigm={g.paradigm!r} '
                     f'is not one of {PARADIGMS} or None')


def _channel_ops(pred, g, batch, d):
    hw = pred.hw
    n = g.num_groups
    ops = [channel_masker_op(pred, g, batch)]
    ops += downsample_ops(pred, g, batch)
    act = d * g.width
    std = g.granularity * math.sqrt(n * d * (1. - d))
    if act > 0:
        q = g.group_width / float(g.granularity)
        a = 1 - (1 - d) ** q if q > 1 else d
        n_act = max(1, int(round(a * g.groups)))
        c2 = n_act * g.group_width
        ops.append(conv_op(hw, 'conv1', batch, g.in_channels, act, g.in_hw,
                           g.in_hw, per_sample_channels=True, cout_std=std,
                           cout_max=g.width))
        ops.append(conv_op(hw, 'conv2', batch, c2, c2, g.out_hw, g.in_hw, 3,
                           g.stride, groups=n_act, per_sample_channels=True))
        if g.se_channels > 0:
            ops.append(pool_latency(hw, 'se_pool', batch, act, g.out_hw,
                                    (1, 1), g.out_hw[0] * g.out_hw[1]))
            ops.append(_se_fc(hw, batch, act, g.se_channels))
            ops.append(elementwise_latency(
                hw, 'se_scale', float(batch * act * g.out_hw[0] *
                                      g.out_hw[1]), 1, 1))
        ops.append(conv_op(hw, 'conv3', batch, act, g.out_channels, g.out_hw,
                           g.out_hw, per_sample_channels=True))
    ops.append(elementwise_latency(
        hw, 'add', float(batch * g.out_channels * g.out_hw[0] *
                         g.out_hw[1]), 2, 1))
    return ops


def _spatial_ops(pred, g, batch, d):
    hw = pred.hw
    ho, wo = g.out_hw
    patches = active_patches(g, batch, d)
    thr = pred.spatial_dense_threshold
    if thr is not None and d >= thr:
        dense = _static_ops(pred, g, batch)
        return spatial_masker_ops(pred, g, batch, 1., patches) + \
            downsample_ops(pred, g, batch) + \
            [o for o in dense if o.name != 'conv1'] + [
                elementwise_latency(hw, 'mask_mul', float(
                    batch * g.out_channels * ho * wo), 2, 1)]
    sh, sw = patches.patch

    def patch_ops(n):
        if n <= 0:
            return []
        res = [gathered_conv_op(pred, 'gather_conv2', n, g, g.width,
                                g.width, patches, batch, k=3,
                                groups=g.groups)]
        if g.se_channels > 0:
            res.append(pool_latency(hw, 'se_pool', n, g.width, (sh, sw),
                                    (1, 1), sh * sw))
            res.append(_se_fc(hw, batch, g.width, g.se_channels))
            res.append(elementwise_latency(
                hw, 'se_scale', float(n * g.width * sh * sw), 1, 1))
        return res + [gathered_conv_op(pred, 'conv3', n, g, g.width,
                                       g.out_channels, patches, batch),
                      spatial_scatter_op(pred, g, n, batch, patches)]

    return spatial_masker_ops(pred, g, batch, d, patches) + \
        downsample_ops(pred, g, batch) + \
        expected_ops(patch_ops, patches.count)
