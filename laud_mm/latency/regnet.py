"""Latency-predictor kernels of RegNetY blocks (``BlockGeometry.kind ==
'regnety'``) and of the RegNet stem.

Kernels per block (BN folded, ReLU fused, as for the ResNet bottleneck in
:mod:`laud_mm.latency.predictor`):

* static: conv1 (1x1), conv2 (3x3 grouped, ``g.groups`` groups, stride), SE
  (global pool - memory-bound, it reads the whole conv2 output -, the two
  FCs in one kernel, channel-wise scale), conv3 (1x1), [downsample], add;
* spatial (density d = fraction of output pixels kept): fused masker+conv1
  (dense), mask/index, [downsample], gather-conv2 (grouped) on the active
  patches, SE pool over the gathered patches, SE FCs (dense, per sample),
  SE scale of the patches, conv3 on the patches, scatter-add;
* channel (density d = fraction of channels kept): masker (pool + MLP),
  [downsample], conv1 to the d * w kept channels, conv2 on the active conv
  groups (a = 1 - (1 - d) ** (gw / G) of them for G < group width gw, a = d
  otherwise; whole groups), SE on the kept channels, conv3 from the kept
  channels, add;
* layer (density d = fraction of samples run): masker (pool + linear),
  [downsample], and conv1, conv2, SE, conv3, add on the d * N kept samples:
  **the SE is skipped with the layer** (paper sec. 4.2).

``implementation='eager'`` adds the separate ReLU kernels of the PyTorch
path; the dynamic kernels are otherwise the fused ones (the eager RegNetY
path has not been calibrated against measurements).

Source: paper appendix A and sec. 4.2, METHOD_NOTES sections 1 and 4.
"""
import math
from typing import List, Optional, Sequence, Tuple

from ..models.geometry import (PARADIGMS, BlockGeometry, RegNetStemGeometry,
                               block_out_hw)
from .hardware import HardwareSpec
from .operators import (ConvOp, OpLatency, conv_latency, elementwise_latency,
                        pool_latency, se_latency)

__all__ = ['regnety_geometries', 'regnety_block_ops', 'regnet_stem_ops',
           'REGNETY_SETTINGS']

#: (widths, depths, group width) of torchvision's RegNetY-400MF / 800MF
REGNETY_SETTINGS = {
    'regnety_400mf': ((48, 104, 208, 440), (1, 3, 6, 6), 8),
    'regnety_800mf': ((64, 144, 320, 784), (1, 3, 8, 2), 16),
}


def regnety_geometries(arch: str, in_hw: Tuple[int, int],
                       paradigm: Optional[str] = None,
                       granularity: Optional[Sequence[int]] = None,
                       ) -> Tuple[List[BlockGeometry], RegNetStemGeometry]:
    """Block and stem geometry of RegNetY-400MF / 800MF without building it
    (the same numbers as ``LAUDRegNetY.block_geometries``).

    Args:
        arch: 'regnety_400mf' or 'regnety_800mf'.
        in_hw: image size (H, W), pixels.
        paradigm: 'spatial', 'channel', 'layer' or None.
        granularity: S or G per stage (4 values) for spatial / channel.

    Returns:
        (list of :class:`BlockGeometry` with ``kind='regnety'``,
        :class:`RegNetStemGeometry`).

    Raises:
        ValueError: naming ``arch``, ``paradigm`` or ``granularity``.
    """
    if arch not in REGNETY_SETTINGS:
        raise ValueError(f'arch={arch!r} is not one of '
                         f'{sorted(REGNETY_SETTINGS)}')
    if paradigm is not None and paradigm not in PARADIGMS:
        raise ValueError(f'paradigm={paradigm!r} is not one of {PARADIGMS} '
                         f'or None')
    if paradigm in ('spatial', 'channel'):
        if granularity is None or len(tuple(granularity)) != 4 or any(
                int(g) != g or g < 1 for g in granularity):
            raise ValueError(f'granularity={granularity!r} must hold 4 '
                             f'positive integers for paradigm={paradigm!r}')
    widths, depths, gw = REGNETY_SETTINGS[arch]
    stem = RegNetStemGeometry(3, 32, tuple(in_hw))
    hw, cin, out = stem.out_hw, 32, []
    for s, (w, n) in enumerate(zip(widths, depths)):
        for i in range(n):
            stride = 2 if i == 0 else 1
            ohw = block_out_hw(hw, stride)
            gran = int(granularity[s]) if paradigm in ('spatial', 'channel') \
                else None
            out.append(BlockGeometry(
                s, i, cin, w, w, stride, tuple(hw), ohw,
                stride != 1 or cin != w, paradigm, gran, kind='regnety',
                groups=w // gw, se_channels=int(round(0.25 * cin))))
            cin, hw = w, ohw
    return out, stem


def regnet_stem_ops(hw: HardwareSpec, stem: RegNetStemGeometry,
                    batch: int) -> List[OpLatency]:
    """Kernels of the RegNet stem: one 3x3/2 conv (+BN+ReLU), no pool."""
    return [conv_latency(hw, ConvOp(
        float(batch), stem.in_channels, stem.out_channels, stem.conv_hw[0],
        stem.conv_hw[1], stem.in_hw[0], stem.in_hw[1], 3, 2,
        name='stem_conv'))]


def _conv(hw, name, batch, cin, cout, out_hw, in_hw, k=1, stride=1, **kw):
    return conv_latency(hw, ConvOp(
        float(batch), cin, cout, int(out_hw[0]), int(out_hw[1]),
        int(in_hw[0]), int(in_hw[1]), k, stride, name=name, **kw))


def _se(hw, batch, g: BlockGeometry, hw_size, prefix=''):
    if g.se_channels <= 0 or batch <= 0:
        return []
    return [OpLatency(prefix + o.name, o.ms, o.compute_ms, o.memory_ms,
                      o.launch_ms, o.macs, o.offchip_bytes, o.onchip_bytes)
            for o in se_latency(hw, float(batch), g.width, hw_size,
                                g.se_channels)]


def _static_ops(pred, g: BlockGeometry, batch: float) -> List[OpLatency]:
    """Dense RegNetY residual branch + add on ``batch`` samples (no
    downsample)."""
    hw = pred.hw
    if batch <= 0:
        return []
    ops = [_conv(hw, 'conv1', batch, g.in_channels, g.width, g.in_hw,
                 g.in_hw),
           _conv(hw, 'conv2', batch, g.width, g.width, g.out_hw, g.in_hw, 3,
                 g.stride, groups=g.groups)]
    ops += _se(hw, batch, g, g.out_hw)
    ops.append(_conv(hw, 'conv3', batch, g.width, g.out_channels, g.out_hw,
                     g.out_hw))
    out_e = float(batch * g.out_channels * g.out_hw[0] * g.out_hw[1])
    ops.append(elementwise_latency(hw, 'add', out_e, 2, 1))
    if pred.eager:
        ops.append(elementwise_latency(hw, 'relu3', out_e, 1, 1))
    return ops


def _downsample(pred, g, batch):
    if not g.has_downsample:
        return []
    return [_conv(pred.hw, 'downsample', batch, g.in_channels,
                  g.out_channels, g.out_hw, g.in_hw, stride=g.stride)]


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
    hw = pred.hw
    if g.paradigm is None:
        return _downsample(pred, g, batch) + _static_ops(pred, g, batch)
    d = float(density)
    if g.paradigm == 'layer':
        ops = [pool_latency(hw, 'masker', batch, g.in_channels, g.in_hw,
                            (1, 1), g.in_hw[0] * g.in_hw[1])]
        ops += _downsample(pred, g, batch)
        from .predictor import _expected_ops
        return ops + _expected_ops(lambda n: _static_ops(pred, g, n),
                                   d * batch)
    if g.paradigm == 'channel':
        return _channel_ops(pred, g, batch, d)
    if g.paradigm == 'spatial':
        return _spatial_ops(pred, g, batch, d)
    raise ValueError(f'block s{g.stage}.b{g.index}: paradigm={g.paradigm!r} '
                     f'is not one of {PARADIGMS} or None')


def _channel_ops(pred, g, batch, d):
    hw = pred.hw
    n = g.num_groups
    hid = g.channel_masker_hidden
    pool = pool_latency(hw, 'masker', batch, g.in_channels, g.in_hw, (1, 1),
                        g.in_hw[0] * g.in_hw[1])
    mlp1 = _conv(hw, 'masker_mlp', batch, g.in_channels, hid, (1, 1), (1, 1))
    mlp2 = _conv(hw, 'masker_mlp2', batch, hid, 2 * n, (1, 1), (1, 1))
    launch = hw.launch_us * 1e-3
    ops = [OpLatency('masker', pool.ms + mlp1.ms + mlp2.ms - 2 * launch,
                     pool.compute_ms + mlp1.compute_ms + mlp2.compute_ms,
                     pool.memory_ms + mlp1.memory_ms + mlp2.memory_ms,
                     launch, pool.macs + mlp1.macs + mlp2.macs)]
    ops += _downsample(pred, g, batch)
    act = d * g.width
    std = g.granularity * math.sqrt(n * d * (1. - d))
    if act > 0:
        q = g.group_width / float(g.granularity)
        a = 1 - (1 - d) ** q if q > 1 else d
        n_act = max(1, int(round(a * g.groups)))
        c2 = n_act * g.group_width
        ops.append(_conv(hw, 'conv1', batch, g.in_channels, act, g.in_hw,
                         g.in_hw, per_sample_channels=True, cout_std=std))
        ops.append(_conv(hw, 'conv2', batch, c2, c2, g.out_hw, g.in_hw, 3,
                         g.stride, groups=n_act, per_sample_channels=True))
        if g.se_channels > 0:
            ops.append(pool_latency(hw, 'se_pool', batch, act, g.out_hw,
                                    (1, 1), g.out_hw[0] * g.out_hw[1]))
            fc1 = _conv(hw, 'se_fc', batch, act, g.se_channels, (1, 1),
                        (1, 1))
            fc2 = _conv(hw, 'se_fc2', batch, g.se_channels, act, (1, 1),
                        (1, 1))
            ops.append(OpLatency('se_fc', fc1.ms + fc2.ms - launch,
                                 fc1.compute_ms + fc2.compute_ms,
                                 fc1.memory_ms + fc2.memory_ms, launch,
                                 fc1.macs + fc2.macs))
            ops.append(elementwise_latency(
                hw, 'se_scale', float(batch * act * g.out_hw[0] *
                                      g.out_hw[1]), 1, 1))
        ops.append(_conv(hw, 'conv3', batch, act, g.out_channels, g.out_hw,
                         g.out_hw, per_sample_channels=True))
    ops.append(elementwise_latency(
        hw, 'add', float(batch * g.out_channels * g.out_hw[0] *
                         g.out_hw[1]), 2, 1))
    return ops


def _spatial_ops(pred, g, batch, d):
    hw = pred.hw
    S = int(g.granularity)
    ho, wo = g.out_hw
    hi, wi = g.in_hw
    ops = [_conv(hw, 'masker_conv1', batch, g.in_channels, g.width + 2,
                 g.in_hw, g.in_hw),
           elementwise_latency(hw, 'mask_index', float(batch * 2 * hi * wi),
                               1, 0, ops_per_elem=2.)]
    ops += _downsample(pred, g, batch)
    thr = pred.spatial_dense_threshold
    if thr is not None and d >= thr:
        dense = _static_ops(pred, g, batch)
        return ops + [o for o in dense if o.name != 'conv1'] + [
            elementwise_latency(hw, 'mask_mul', float(
                batch * g.out_channels * ho * wo), 2, 1)]
    sh, sw = min(S, ho), min(S, wo)
    patches = d * batch * ho * wo / float(sh * sw)
    win = ((sh - 1) * g.stride + 3) * ((sw - 1) * g.stride + 3)
    cells = win / float(sh * sw * g.stride * g.stride)
    coverage = 1. - (1. - d) ** cells
    launch = hw.launch_us * 1e-3

    def patch_ops(n):
        if n <= 0:
            return []
        res = [_conv(hw, 'gather_conv2', n, g.width, g.width, (sh, sw),
                     g.in_hw, 3, g.stride, groups=g.groups, gathered=True,
                     in_coverage=coverage, source_batch=float(batch))]
        if g.se_channels > 0:
            res.append(pool_latency(hw, 'se_pool', n, g.width, (sh, sw),
                                    (1, 1), sh * sw))
            fc1 = _conv(hw, 'se_fc', batch, g.width, g.se_channels, (1, 1),
                        (1, 1))
            fc2 = _conv(hw, 'se_fc2', batch, g.se_channels, g.width, (1, 1),
                        (1, 1))
            res.append(OpLatency('se_fc', fc1.ms + fc2.ms - launch,
                                 fc1.compute_ms + fc2.compute_ms,
                                 fc1.memory_ms + fc2.memory_ms, launch,
                                 fc1.macs + fc2.macs))
            res.append(elementwise_latency(
                hw, 'se_scale', float(n * g.width * sh * sw), 1, 1))
        return res + [
            _conv(hw, 'conv3', n, g.width, g.out_channels, (sh, sw),
                  (sh, sw)),
            elementwise_latency(
                hw, 'scatter_add', float(n * sh * sw * g.out_channels), 2, 1,
                run_elems=float(sw), contiguous_reads=1)]

    from .predictor import _expected_ops
    return ops + _expected_ops(patch_ops, patches)
