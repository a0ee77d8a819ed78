"""Backbone latency: block geometry + activation rates -> operator list ->
latency per operator, block, stage and network.

Kernels of each block (paper sec. 3.4 and Fig. 2, METHOD_NOTES section 4),
BN folded into the convolutions, ReLU fused into their epilogues:

* static: conv1 (1x1), conv2 (3x3, stride), conv3 (1x1), [downsample (1x1,
  stride)], add+ReLU;
* spatial (S, density d = fraction of output pixels kept): fused
  masker+conv1 (dense 1x1 conv Cin -> width + 2 logits), mask (pool the
  logits to the patch grid, compare, build the patch index), gather-conv2
  (3x3 on the active patches read from the dense conv1 output, halo
  re-read), conv3 on the gathered patches, [downsample], scatter-add+ReLU
  into the shortcut at the active positions;
* channel (G, density d = fraction of channel groups kept): masker (global
  pool + fused 2-layer MLP), conv1 to the active channels, conv2 and conv3
  on the active channels (weights gathered per sample), [downsample],
  add+ReLU;
* layer (density d = fraction of samples whose gate is on): masker (global
  pool + fused linear gate), [downsample], and conv1, conv2, conv3, add on
  the d * N kept samples (expectation, linear between the neighbouring
  integer batch sizes; at batch 1 the block runs with probability d).

``implementation='eager'`` instead lists the kernels that
:mod:`laud_mm.models.dynamic` runs on CPU/GPU with PyTorch (see
:class:`LatencyPredictor` and ``docs/latency_predictor.md``).

Source: paper appendix A, METHOD_NOTES section 4.
"""
import dataclasses
import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

from ..models.geometry import (PARADIGMS, BlockGeometry, StemGeometry,
                               TokenLayerGeometry, block_out_hw, ceil_div)
from .hardware import HardwareSpec, get_hardware
from .operators import (ConvOp, OpLatency, conv_latency, elementwise_latency,
                        linear_latency, pool_latency)

__all__ = ['LatencyPredictor', 'BackboneLatency', 'resnet_geometries',
           'RESNET_DEPTHS']

#: blocks per stage of the bottleneck ResNets
RESNET_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def resnet_geometries(depth: int, in_hw: Tuple[int, int],
                      paradigm: Optional[str] = None,
                      granularity: Optional[Sequence[int]] = None,
                      ) -> Tuple[List[BlockGeometry], StemGeometry]:
    """Block and stem geometry of a bottleneck ResNet without building it
    (same numbers as ``LAUDResNet.block_geometries``; torchvision/mmdet
    ``style='pytorch'``: the stride sits on conv2).

    Args:
        depth: 50, 101 or 152.
        in_hw: image size (H, W), pixels.
        paradigm: 'spatial', 'channel', 'layer' or None.
        granularity: S or G per stage (4 values) for spatial / channel.

    Returns:
        (list of :class:`BlockGeometry`, :class:`StemGeometry`).

    Raises:
        ValueError: naming ``depth``, ``paradigm`` or ``granularity``.
    """
    if depth not in RESNET_DEPTHS:
        raise ValueError(f'depth={depth!r} is not one of '
                         f'{sorted(RESNET_DEPTHS)}')
    if paradigm is not None and paradigm not in PARADIGMS:
        raise ValueError(f'paradigm={paradigm!r} is not one of {PARADIGMS} '
                         f'or None')
    if paradigm in ('spatial', 'channel'):
        if granularity is None or len(tuple(granularity)) != 4 or any(
                int(g) != g or g < 1 for g in granularity):
            raise ValueError(f'granularity={granularity!r} must hold 4 '
                             f'positive integers for paradigm={paradigm!r}')
    stem = StemGeometry(3, 64, tuple(in_hw))
    hw = stem.out_hw
    cin = 64
    out = []
    for s, n in enumerate(RESNET_DEPTHS[depth]):
        width = 64 * 2 ** s
        for i in range(n):
            stride = 2 if (i == 0 and s > 0) else 1
            ohw = block_out_hw(hw, stride)
            gran = None
            if paradigm in ('spatial', 'channel'):
                gran = int(granularity[s])
            out.append(BlockGeometry(
                s, i, cin, width, width * 4, stride, tuple(hw), ohw,
                i == 0, paradigm, gran))
            cin, hw = width * 4, ohw
    return out, stem


@dataclass
class BackboneLatency:
    """Predicted latency of a backbone for one batch.

    Attributes:
        total_ms: whole batch, milliseconds (stem + blocks).
        per_image_ms: ``total_ms / batch_size``.
        per_block_ms: one entry per block, milliseconds (whole batch).
        per_stage_ms: one entry per stage, milliseconds (whole batch).
        stem_ms: stem latency (0 when no stem was given).
        batch_size: the batch.
        hardware: device name.
        block_ops: per block, the list of :class:`OpLatency` of its kernels.
        block_names: per block, ``'s{stage}.b{index}'`` (transformer
            layers: ``'layer{index}'``).
        stem_ops: the stem's kernels.
        densities: the densities used (None entries for static blocks).
        paradigms: per block paradigm (None = static).
    """
    total_ms: float
    per_image_ms: float
    per_block_ms: List[float]
    per_stage_ms: List[float]
    stem_ms: float = 0.
    batch_size: int = 1
    hardware: str = ''
    block_ops: List[List[OpLatency]] = field(default_factory=list)
    block_names: List[str] = field(default_factory=list)
    stem_ops: List[OpLatency] = field(default_factory=list)
    densities: List[Optional[float]] = field(default_factory=list)
    paradigms: List[Optional[str]] = field(default_factory=list)

    def table(self, ops: bool = False) -> str:
        """Plain-text table: one row per block (and per kernel when
        ``ops``), then the per-stage sums and the total."""
        rows = [('block', 'paradigm', 'density', 'ms', 'share')]
        tot = self.total_ms or 1.
        if self.stem_ops:
            rows.append(('stem', '-', '-', f'{self.stem_ms:.3f}',
                         f'{100 * self.stem_ms / tot:.1f}%'))
        for j, name in enumerate(self.block_names):
            d = self.densities[j] if j < len(self.densities) else None
            p = self.paradigms[j] if j < len(self.paradigms) else None
            rows.append((name, p or 'static', '-' if d is None else
                         f'{d:.3f}', f'{self.per_block_ms[j]:.3f}',
                         f'{100 * self.per_block_ms[j] / tot:.1f}%'))
            if ops:
                for o in self.block_ops[j]:
                    rows.append(('  ' + o.name, '', '', f'{o.ms:.3f}',
                                 '' if o.tile is None else 'tile=%s' %
                                 'x'.join(map(str, o.tile))))
        for s, v in enumerate(self.per_stage_ms):
            rows.append((f'stage {s}', '', '', f'{v:.3f}',
                         f'{100 * v / tot:.1f}%'))
        rows.append(('total', self.hardware, f'batch {self.batch_size}',
                     f'{self.total_ms:.3f}',
                     f'{self.per_image_ms:.4f}/img'))
        widths = [max(len(str(r[i])) for r in rows) for i in range(5)]
        lines = ['  '.join(str(c).ljust(w) for c, w in zip(r, widths))
                 for r in rows]
        lines.insert(1, '-' * len(lines[0]))
        return '\n'.join(lines)


#: bookkeeping calls of ``_forced_gate`` (zeros, cast, select, mul, add);
#: the validation imposes the gates through ``masker.forced_gate``
EAGER_FORCED_GATE_LAUNCHES = 5

# expected maximum of n standard normal variables (n = 1 .. 8)
_MAX_NORMAL = (0., 0., 0.5642, 0.8463, 1.0294, 1.1630, 1.2672, 1.3522, 1.4236)


def _expected_max_normal(n: int) -> float:
    if n < len(_MAX_NORMAL):
        return _MAX_NORMAL[n]
    a = math.sqrt(2. * math.log(n))
    return a - (math.log(math.log(n)) + math.log(4 * math.pi)) / (2. * a)


def channel_kept_padded(g: BlockGeometry, batch: int, d: float,
                        forced_gates: bool = True) -> int:
    """Kept channels k per sample of the eager channel path
    (``laud_mm.models.dynamic._kept_channels``): the largest per-sample
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
    from ..models.dynamic import CHANNEL_PAD
    n_groups = g.num_groups
    if forced_gates:
        groups = int(round(d * n_groups))
    else:
        mean = d * n_groups
        std = math.sqrt(n_groups * d * (1. - d))
        groups = min(n_groups, int(math.ceil(
            mean + std * _expected_max_normal(int(batch)) - 1e-9)))
    kmax = groups * int(g.granularity)
    return min(g.width, -(-kmax // CHANNEL_PAD) * CHANNEL_PAD)


def _conv(hw, name, batch, cin, cout, out_hw, in_hw, k=1, stride=1, **kw):
    return conv_latency(hw, ConvOp(
        float(batch), cin, cout, int(out_hw[0]), int(out_hw[1]),
        int(in_hw[0]), int(in_hw[1]), k, stride, name=name, **kw))


def _launches(hw: HardwareSpec, name: str, n: float) -> OpLatency:
    """``n`` tiny kernels whose cost is their launch (eager bookkeeping:
    index building, small gathers, masker MLP steps)."""
    t = n * hw.launch_us * 1e-3
    return OpLatency(name, t, launch_ms=t)


def _expected_ops(make, count: float, with_zero: bool = False
                  ) -> List[OpLatency]:
    """Kernels for a fractional expected ``count`` of work items (kept
    samples, active patches): ``make(n)`` at the neighbouring integers,
    blended linearly (``make(0)`` is no kernel at all unless
    ``with_zero``)."""
    lo = int(math.floor(count + 1e-9))
    frac = count - lo
    if frac < 1e-9:
        return make(lo) if (lo > 0 or with_zero) else []
    hi_ops = make(lo + 1)
    if lo == 0 and not with_zero:
        return [o.scaled(frac) for o in hi_ops]
    lo_ops = make(lo)
    if len(lo_ops) != len(hi_ops):
        return [o.scaled(1 - frac) for o in lo_ops] + \
            [o.scaled(frac) for o in hi_ops]
    return [OpLatency(a.name, (1 - frac) * a.ms + frac * b.ms,
                      (1 - frac) * a.compute_ms + frac * b.compute_ms,
                      (1 - frac) * a.memory_ms + frac * b.memory_ms,
                      (1 - frac) * a.launch_ms + frac * b.launch_ms,
                      (1 - frac) * a.macs + frac * b.macs,
                      (1 - frac) * a.offchip_bytes + frac * b.offchip_bytes,
                      (1 - frac) * a.onchip_bytes + frac * b.onchip_bytes,
                      b.tile, b.n_tiles, b.utilisation)
            for a, b in zip(lo_ops, hi_ops)]


class LatencyPredictor:
    """Analytic latency of LAUD backbones on a device (paper appendix A).

    Args:
        hardware: a :class:`HardwareSpec`, a known device name
            (``'v100'``, ``'tx2'``, ...), a path to a ``.yaml``/``.json``
            spec, or a dict of spec fields.

        implementation: ``'fused'`` (default): the paper's scheduling - BN
            and ReLU fused into the convolutions, gather fused into conv2,
            scatter fused with the add, one kernel per operator for the whole
            batch. ``'eager'``: this project's PyTorch dynamic path
            (:mod:`laud_mm.models.dynamic`), kernel by kernel: separate
            ReLU kernels; spatial: dense conv1, gather kernel (K x K windows,
            conv1's ReLU fused), conv2 on the windows, conv3 on the patches,
            one fused scatter-add + ReLU pass (dense fallbacks as in
            ``_spatial_forward``); channel: per-sample weights gathered,
            conv1 / conv3 one batched GEMM each and conv2 one grouped conv
            over the kept channels padded to ``CHANNEL_PAD`` (masked-dense
            on small maps at high rates), fused scatter-add + ReLU;
            layer: the branch on the kept samples (per-image GEMMs), conv3
            accumulated into the shortcut rows; plus the Python bookkeeping
            calls of each path
            (counted as launches). Used to validate the model against
            measured CPU latency (``tools/validate_predictor.py``).
        spatial_dense_threshold: spatial blocks whose fraction of active
            patches reaches this value run densely and multiply by the mask
            (the eager path does so at
            ``laud_mm.models.dynamic.SPATIAL_DENSE_THRESHOLD``); None: always
            gather.
        forced_gates: eager only: the gates are imposed
            (``masker.forced_gate``, as the validation does), so no masker
            runs and every channel-block sample keeps the same count;
            else the maskers' kernels are counted.
        owned_block_inputs: eager only: identity blocks run as inside a
            backbone (``laud_mm.models.dynamic.owned_block_inputs``: a layer
            block writes into its input, default); False: as blocks called
            alone (the input is copied first; the validation's block cases).

    Raises:
        ValueError: for an unknown device (see :func:`get_hardware`),
            implementation or threshold.

    Example::

        pred = LatencyPredictor('v100')
        rep = pred.predict_backbone(geoms, [0.5] * len(geoms), 128, stem)
        rep.total_ms, rep.per_image_ms, print(rep.table())
    """

    IMPLEMENTATIONS = ('fused', 'eager')

    def __init__(self, hardware: Union[str, HardwareSpec] = 'v100',
                 implementation: str = 'fused',
                 spatial_dense_threshold: Optional[float] = None,
                 forced_gates: bool = False,
                 owned_block_inputs: bool = True):
        self.hw = get_hardware(hardware)
        self.forced_gates = bool(forced_gates)
        self.owned_block_inputs = bool(owned_block_inputs)
        if implementation not in self.IMPLEMENTATIONS:
            raise ValueError(f'implementation={implementation!r} is not one '
                             f'of {self.IMPLEMENTATIONS}')
        if spatial_dense_threshold is not None and not \
                0 < spatial_dense_threshold <= 1:
            raise ValueError(f'spatial_dense_threshold='
                             f'{spatial_dense_threshold!r} must be in (0, 1]')
        self.implementation = implementation
        self.eager = implementation == 'eager'
        self.spatial_dense_threshold = spatial_dense_threshold

    # ------------------------------------------------------------ blocks
    def stem_ops(self, stem: StemGeometry, batch: int) -> List[OpLatency]:
        """Kernels of the ResNet stem: 7x7/2 conv (+BN+ReLU) and 3x3/2
        max-pool. A :class:`~laud_mm.models.geometry.RegNetStemGeometry`
        gets the RegNet stem (one 3x3/2 conv, :mod:`laud_mm.latency.regnet`),
        a :class:`~laud_mm.models.geometry.T2TStemGeometry` the T2T-ViT
        Tokens-to-Token module (:mod:`laud_mm.latency.vit`).
        """
        if getattr(stem, 'kind', 'resnet') == 't2t':
            from .vit import t2t_stem_ops
            return t2t_stem_ops(self.hw, stem, batch, self.eager)
        if getattr(stem, 'kind', 'resnet') == 'regnet':
            from .regnet import regnet_stem_ops
            return regnet_stem_ops(self.hw, stem, batch)
        hw = self.hw
        conv = _conv(hw, 'stem_conv', batch, stem.in_channels,
                     stem.out_channels, stem.conv_hw, stem.in_hw, k=7,
                     stride=2)
        pool = pool_latency(hw, 'stem_pool', batch, stem.out_channels,
                            stem.conv_hw, stem.out_hw, 9)
        return [conv, pool]

    def static_block_ops(self, g: BlockGeometry, batch: float,
                         prefix: str = '') -> List[OpLatency]:
        """Kernels of a dense bottleneck on ``batch`` samples."""
        hw = self.hw
        if batch <= 0:
            return []
        ops = [
            _conv(hw, prefix + 'conv1', batch, g.in_channels, g.width,
                  g.in_hw, g.in_hw),
            _conv(hw, prefix + 'conv2', batch, g.width, g.width, g.out_hw,
                  g.in_hw, k=3, stride=g.stride, dilation=g.dilation),
            _conv(hw, prefix + 'conv3', batch, g.width, g.out_channels,
                  g.out_hw, g.out_hw),
        ]
        out_e = float(batch * g.out_channels * g.out_hw[0] * g.out_hw[1])
        ops.append(elementwise_latency(hw, prefix + 'add', out_e, 2, 1))
        if self.eager:  # separate ReLU kernels (in place)
            ops.insert(1, elementwise_latency(
                hw, prefix + 'relu1', float(batch * g.width * g.in_hw[0] *
                                            g.in_hw[1]), 1, 1))
            ops.insert(3, elementwise_latency(
                hw, prefix + 'relu2', float(batch * g.width * g.out_hw[0] *
                                            g.out_hw[1]), 1, 1))
            ops.append(elementwise_latency(hw, prefix + 'relu3', out_e, 1, 1))
        return ops

    def _downsample(self, g: BlockGeometry, batch: float) -> List[OpLatency]:
        if not g.has_downsample:
            return []
        return [_conv(self.hw, 'downsample', batch, g.in_channels,
                      g.out_channels, g.out_hw, g.in_hw, stride=g.stride)]

    def spatial_block_ops(self, g: BlockGeometry, batch: int,
                          d: float) -> List[OpLatency]:
        """Kernels of a spatial block at density ``d`` (fraction of output
        pixels kept) with patch side S = ``g.granularity``."""
        if self.eager:
            return self._spatial_eager(g, batch, d)
        hw = self.hw
        S = int(g.granularity)
        ho, wo = g.out_hw
        hi, wi = g.in_hw
        ops = [_conv(hw, 'masker_conv1', batch, g.in_channels,
                     g.width + 2, g.in_hw, g.in_hw),
               elementwise_latency(hw, 'mask_index',
                                   float(batch * 2 * hi * wi), 1, 0,
                                   ops_per_elem=2.)]
        ops += self._downsample(g, batch)
        sh, sw = min(S, ho), min(S, wo)
        # expected number of active patches; the kernels are evaluated at
        # the neighbouring integer counts and blended linearly
        patches = d * batch * ho * wo / float(sh * sw)
        win = ((sh - 1) * g.stride + 3) * ((sw - 1) * g.stride + 3)
        # patch cells whose windows cover a source pixel, on average
        cells = win / float(sh * sw * g.stride * g.stride)
        coverage = 1. - (1. - d) ** cells

        thr = self.spatial_dense_threshold
        if thr is not None and d >= thr:
            # dense conv2 / conv3, output multiplied by the mask
            dense = self.static_block_ops(g, batch)
            rest = [o for o in dense if o.name != 'conv1' and
                    o.name != 'relu1']
            return ops + rest + [elementwise_latency(
                hw, 'mask_mul', float(batch * g.out_channels * ho * wo), 2,
                1)]

        def patch_ops(n):
            if n <= 0:
                return []
            conv2 = [_conv(hw, 'gather_conv2', n, g.width, g.width,
                           (sh, sw), g.in_hw, k=3, stride=g.stride,
                           dilation=g.dilation, gathered=True,
                           in_coverage=coverage,
                           source_batch=float(batch))]
            return conv2 + [
                _conv(hw, 'conv3', n, g.width, g.out_channels, (sh, sw),
                      (sh, sw)),
                elementwise_latency(
                    hw, 'scatter_add', float(n * sh * sw * g.out_channels),
                    2, 1, run_elems=float(sw), contiguous_reads=1)]
        return ops + _expected_ops(patch_ops, patches)

    def channel_block_ops(self, g: BlockGeometry, batch: int,
                          d: float) -> List[OpLatency]:
        """Kernels of a channel block at density ``d`` (fraction of the
        ``width / G`` channel groups kept), per-sample channel sets."""
        hw = self.hw
        G = int(g.granularity)
        n = g.num_groups
        hid = g.channel_masker_hidden
        act = d * g.width
        std = G * math.sqrt(n * d * (1. - d))
        # weights read off-chip: the union of the samples' channel sets
        union = 1. - (1. - d) ** batch
        # one kernel: global pool of x, then the 2-layer MLP
        pool = pool_latency(hw, 'masker', batch, g.in_channels, g.in_hw,
                            (1, 1), g.in_hw[0] * g.in_hw[1])
        mlp1 = _conv(hw, 'masker_mlp', batch, g.in_channels, hid, (1, 1),
                     (1, 1))
        mlp2 = _conv(hw, 'masker_mlp2', batch, hid, 2 * n, (1, 1), (1, 1))
        launch = hw.launch_us * 1e-3
        ops = [OpLatency('masker', pool.ms + mlp1.ms + mlp2.ms - 2 * launch,
                         pool.compute_ms + mlp1.compute_ms + mlp2.compute_ms,
                         pool.memory_ms + mlp1.memory_ms + mlp2.memory_ms,
                         launch, pool.macs + mlp1.macs + mlp2.macs)]
        if self.eager:
            return self._channel_eager(g, batch, d, ops[0])
        ops += self._downsample(g, batch)
        if act > 0:
            ops.append(_conv(
                hw, 'conv1', batch, g.in_channels, act, g.in_hw, g.in_hw,
                per_sample_channels=True, cout_std=std,
                weight_elems=union * g.width * g.in_channels))
            ops.append(_conv(
                hw, 'conv2', batch, act, act, g.out_hw, g.in_hw, k=3,
                stride=g.stride, dilation=g.dilation,
                per_sample_channels=True, cout_std=std,
                weight_elems=union ** 2 * g.width * g.width * 9))
            ops.append(_conv(
                hw, 'conv3', batch, act, g.out_channels, g.out_hw, g.out_hw,
                per_sample_channels=True,
                weight_elems=union * g.width * g.out_channels))
        ops.append(elementwise_latency(
            hw, 'add', float(batch * g.out_channels * g.out_hw[0] *
                             g.out_hw[1]), 2, 1))
        return ops

    def _channel_eager(self, g: BlockGeometry, batch: int, d: float,
                       masker: OpLatency) -> List[OpLatency]:
        """Eager channel path (``_channel_forward`` of
        :mod:`laud_mm.models.dynamic`), whole batch at once: per-sample
        weights of the k kept channels (k = the largest per-sample count,
        padded to a multiple of ``CHANNEL_PAD`` with zero channels) gathered
        by indexing, conv1 as one batched GEMM (N x (k x C_in) @ (C_in x
        HW), bias broadcast first), ReLU, conv2 as one grouped conv (a group
        of k channels per sample), ReLU, conv3 as one batched GEMM
        accumulated into the shortcut (a copy of the input unless
        ``owned_block_inputs``), then bn3's shift and the ReLU. Maps under
        ``CHANNEL_SMALL_MAP_PIXELS`` above ``CHANNEL_DENSE_RATE`` kept groups:
        masked dense; every group on: the static block."""
        from ..models import dynamic as dyn
        hw = self.hw
        n = float(batch)
        c_in, c_out, width = g.in_channels, g.out_channels, g.width
        hi, wi = g.in_hw
        ho, wo = g.out_hw
        in_px, out_px = hi * wi, ho * wo
        out_e = n * c_out * out_px
        if self.forced_gates:  # _forced_gate: zeros, cast, select, mul, add
            ops = [_launches(hw, 'gate', EAGER_FORCED_GATE_LAUNCHES)]
        else:  # pool + MLP (one op above), relu, view, gate
            ops = [masker, _launches(hw, 'masker_steps', 4)]
        ops += self._downsample(g, batch)
        ops.append(_launches(hw, 'gate_checks', 3))  # gt, all, item
        if d >= 1.:  # every group on: the static block
            return ops + self.static_block_ops(g, batch)
        ops.append(_launches(hw, 'repeat_interleave', 1))
        if in_px < dyn.CHANNEL_SMALL_MAP_PIXELS:
            # the rate test: cast, mean, item
            ops.append(_launches(hw, 'rate_check', 3))
            if d > dyn.CHANNEL_DENSE_RATE:  # masked dense, folded BN
                mid_in = n * width * in_px
                mid_out = n * width * out_px
                return ops + [
                    _launches(hw, 'mask_prep', 3),
                    _conv(hw, 'conv1', batch, c_in, width, g.in_hw, g.in_hw),
                    elementwise_latency(hw, 'relu1', mid_in, 1, 1),
                    elementwise_latency(hw, 'mask1', mid_in, 1, 1),
                    _conv(hw, 'conv2', batch, width, width, g.out_hw,
                          g.in_hw, k=3, stride=g.stride,
                          dilation=g.dilation),
                    elementwise_latency(hw, 'relu2', mid_out, 1, 1),
                    elementwise_latency(hw, 'mask2', mid_out, 1, 1),
                    _conv(hw, 'conv3', batch, width, c_out, g.out_hw,
                          g.out_hw),
                    elementwise_latency(hw, 'add', out_e, 2, 1),
                    elementwise_latency(hw, 'relu3', out_e, 1, 1)]
        # kept channel indices (sum, max, sort, where, ...)
        ops.append(_launches(hw, 'kept_channels', 13))
        k = channel_kept_padded(g, batch, d, self.forced_gates)
        # conv3 is accumulated into the shortcut: the input itself when the
        # backbone owns it, else a copy of it (or the downsample's output),
        # then bn3's shift and the ReLU (a pass each)
        out = [] if (self.owned_block_inputs or g.has_downsample) else [
            elementwise_latency(hw, 'clone', out_e, 1, 1)]
        tail = [elementwise_latency(hw, 'bias3', out_e, 1, 1),
                elementwise_latency(hw, 'relu3', out_e, 1, 1)]
        if k <= 0:  # every sample off: relu(shortcut + bn3 shift)
            return ops + [_launches(hw, 'bookkeeping', 14)] + out + tail
        nk = n * k
        if dyn.CHANNEL_FUSED_CPU and batch >= hw.num_pe \
                and hw.vector_width >= 16 and c_out % 16 == 0:
            # the fused AVX-512 kernel (laud_mm.ops.channel_branch_add_relu;
            # a CPU spec with 16-lane vectors stands for AVX-512; a thread
            # per sample, so batch >= N_PE): conv1 and conv2 panels gathered
            # once per call, then per sample three GEMMs over the pixels as
            # rows (output channels on the lanes: no pixel-vector rounding),
            # conv3 into a per-panel buffer added into the shortcut (one
            # pass with bn3's shift and the ReLU)
            kq = -(-k // 16) * 16
            rows_in, rows_out = (in_px, 1), (out_px, 1)
            return ops + [
                _launches(hw, 'bookkeeping', 6),
                # the panel gathers read whole weight rows once per call (all
                # of w1, the kept rows of w2: what dominates at small
                # batches) and write each sample's panels
                elementwise_latency(hw, 'w1_rows', c_in * (width + 1), 1, 0),
                elementwise_latency(hw, 'w2_rows', 9 * k * (width + 1), 1, 0),
                elementwise_latency(hw, 'w1_panels', n * kq * c_in, 0, 1),
                elementwise_latency(hw, 'w2_panels', n * kq * k * 9, 0, 1),
                _conv(hw, 'conv1', batch, c_in, kq, rows_in, rows_in,
                      per_sample_channels=True, weight_elems=n * kq * c_in),
                _conv(hw, 'conv2', batch, 9 * k, kq, rows_out, rows_out,
                      per_sample_channels=True, weight_elems=n * kq * k * 9),
                _conv(hw, 'conv3', batch, k, c_out, rows_out, rows_out,
                      per_sample_channels=True, weight_elems=nk * c_out)
            ] + out + [elementwise_latency(hw, 'add_relu3', out_e, 2, 1)]
        # per-sample weights (index_select row copies; conv2's from the
        # gather kernel, runs of 9): one GEMM per sample, tiles never span
        # samples; conv2 one grouped conv (a group of k channels per sample)
        return ops + [
            _launches(hw, 'bookkeeping', 24),
            elementwise_latency(hw, 'w1_gather', nk * c_in, 1, 1),
            elementwise_latency(hw, 'bias1', nk * in_px, 0, 1),
            _conv(hw, 'conv1', batch, c_in, k, g.in_hw, g.in_hw,
                  per_sample_channels=True, weight_elems=nk * c_in),
            elementwise_latency(hw, 'relu1', nk * in_px, 1, 1),
            elementwise_latency(hw, 'w2_gather', nk * k * 9, 1, 1,
                                run_elems=9., contiguous_reads=1),
            _conv(hw, 'conv2', 1, nk, nk, g.out_hw, g.in_hw, k=3,
                  stride=g.stride, dilation=g.dilation, groups=batch),
            elementwise_latency(hw, 'relu2', nk * out_px, 1, 1),
            elementwise_latency(hw, 'w3_gather', nk * c_out, 1, 1)] + out + [
            _conv(hw, 'conv3', batch, k, c_out, g.out_hw, g.out_hw,
                  per_sample_channels=True, weight_elems=nk * c_out),
            # the GEMM reads the shortcut it accumulates into
            elementwise_latency(hw, 'conv3_acc', out_e, 1, 0)] + tail

    def _spatial_eager(self, g: BlockGeometry, batch: int,
                       d: float) -> List[OpLatency]:
        """Eager spatial path (``_spatial_forward`` of
        :mod:`laud_mm.models.dynamic`): conv1 dense (with the masker's
        logit as an extra output, forced gates included; stride-2
        blocks: the masker on its own, and conv1 on the gathered input
        windows when they cover under ``SPATIAL_WINDOW_CONV1_MAX_FRACTION``
        of the map, ``window_conv1``), then either
        the gather path - gather kernel (K x K windows of the active patches,
        conv1's ReLU fused), conv2 (valid) on the windows, ReLU, conv3 on the
        patches (``spatial_patch_convs``: GEMMs for S = 1, conv3 as one GEMM
        under ``SPATIAL_CONV3_GEMM_MAX_PATCHES`` patches), fused scatter-add
        + ReLU over the whole output - or, from ``spatial_dense_threshold``
        of the patches on, the dense block times the mask. The patches are counted on the patch grid (partial edge
        patches are computed whole); a random patch set keeps on average
        the same fraction of pixels as of patches, so ``d`` is both."""
        from ..models import dynamic as dyn
        hw = self.hw
        S = int(g.granularity)
        ho, wo = g.out_hw
        gh, gw = ceil_div(ho, S), ceil_div(wo, S)
        n = float(batch)
        width, c_out = g.width, g.out_channels
        out_e = n * c_out * ho * wo
        in_px = n * g.in_hw[0] * g.in_hw[1]
        fused = dyn.SPATIAL_FUSED_CPU and batch >= hw.num_pe and \
            hw.vector_width >= 16 and width % 16 == 0 and c_out % 16 == 0
        if fused:
            return self._spatial_fused(g, batch, d)
        if g.stride > 1:  # the masker on its own (_spatial_gate)
            ops = self._spatial_gate_ops(g, batch)
            c1 = width
        else:  # masker fused into conv1: pool its logit, compare
            ops = [elementwise_latency(hw, 'mask_pool', in_px, 1, 0),
                   _launches(hw, 'mask_steps', 4)]
            if self.forced_gates:  # the logit is computed, then replaced
                ops.append(_launches(hw, 'gate', EAGER_FORCED_GATE_LAUNCHES))
            c1 = width + 1
        conv1 = _conv(hw, 'conv1', batch, g.in_channels, c1, g.in_hw,
                      g.in_hw)
        ops.append(_launches(hw, 'gate_count', 3))  # gt, sum, item
        if d <= 0.:  # relu(shortcut)
            return ops + self._downsample(g, batch) + [
                elementwise_latency(hw, 'relu', out_e, 1, 1)]
        thr = self.spatial_dense_threshold
        if (thr is not None and d >= thr) or d >= 1.:
            dense = self.static_block_ops(g, batch)
            ops += [conv1 if o.name == 'conv1' else o for o in dense
                    if o.name not in ('add', 'relu3')]
            ops.append(_launches(hw, 'slice', 1))
            if d < 1.:  # expand_spatial_gate, y *= mask
                ops += [_launches(hw, 'expand_mask', 3),
                        elementwise_latency(hw, 'mask_mul', out_e, 1, 1)]
            return ops + self._downsample(g, batch) + [
                elementwise_latency(hw, 'add', out_e, 2, 1),
                elementwise_latency(hw, 'relu3', out_e, 1, 1)]
        sh, sw = min(S, ho), min(S, wo)
        k = (S - 1) * g.stride + 2 * g.dilation + 1  # window side
        ops += ([conv1] if g.stride == 1 else []) + [
            _launches(hw, 'bookkeeping', 10)]

        def gemm(name, rows, cin, cout):  # one GEMM over all the rows
            return _conv(hw, name, 1, cin, cout, (rows, 1), (rows, 1))

        def patch_ops(p):
            if p <= 0:
                return []
            if dyn.uses_window_conv1(S, g.stride, g.dilation, p, in_px):
                # window_conv1: gather the input windows, conv1 on them,
                # ReLU, re-zero the outside pixels
                ops = [elementwise_latency(
                           hw, 'gather_x', p * g.in_channels * k * k, 1, 1,
                           run_elems=float(k), contiguous_reads=1),
                       _conv(hw, 'conv1', p, g.in_channels, width, (k, k),
                             (k, k)),
                       elementwise_latency(hw, 'relu1', p * width * k * k,
                                           1, 1),
                       _launches(hw, 'outside', 8)]
            else:
                # dense conv1 (stride 2: after the masker), then one K x K
                # window per patch and channel; ReLU fused
                ops = ([conv1] if g.stride > 1 else []) + [
                    elementwise_latency(hw, 'gather', p * width * k * k, 1,
                                        1, run_elems=float(k),
                                        contiguous_reads=1)]
            if S == 1:  # spatial_patch_convs: two GEMMs, bias written first
                return ops + [
                    elementwise_latency(hw, 'bias2', p * width, 0, 1),
                    gemm('conv2', p, width * 9, width),
                    elementwise_latency(hw, 'relu2', p * width, 1, 1),
                    elementwise_latency(hw, 'bias3', p * c_out, 0, 1),
                    gemm('conv3', p, width, c_out)]
            px = p * sh * sw
            ops += [_conv(hw, 'conv2', p, width, width, (sh, sw), (k, k), k=3,
                          stride=g.stride, dilation=g.dilation),
                    elementwise_latency(hw, 'relu2', px * width, 1, 1)]
            if p >= dyn.SPATIAL_CONV3_GEMM_MAX_PATCHES:
                return ops + [_conv(hw, 'conv3', p, width, c_out, (sh, sw),
                                    (sh, sw))]
            return ops + [  # transpose in, bias, GEMM, transpose out
                elementwise_latency(hw, 'h_transpose', px * width, 1, 1),
                elementwise_latency(hw, 'bias3', px * c_out, 0, 1),
                gemm('conv3', px, width, c_out),
                elementwise_latency(hw, 'y_transpose', px * c_out, 1, 1)]
        ops += _expected_ops(patch_ops, d * n * gh * gw)
        ops += self._downsample(g, batch)
        # one pass over the output: identity and out streamed, the active
        # patches read (a fraction d of the output)
        return ops + [elementwise_latency(hw, 'scatter_add_relu', out_e,
                                          1 + d, 1)]

    def _spatial_gate_ops(self, g: BlockGeometry,
                          batch: int) -> List[OpLatency]:
        """The masker on its own (``_spatial_gate`` of
        :mod:`laud_mm.models.dynamic`): its logit difference as a
        one-channel 1x1 conv of x (a read of x), pooled to the patch grid,
        compared; forced gates compute it too, then replace it."""
        hw = self.hw
        in_px = float(batch) * g.in_hw[0] * g.in_hw[1]
        ops = [elementwise_latency(hw, 'mask_conv', in_px * g.in_channels,
                                   1, 0),
               elementwise_latency(hw, 'mask_pool', in_px, 1, 0),
               _launches(hw, 'mask_steps', 4)]
        if self.forced_gates:
            ops.append(_launches(hw, 'gate', EAGER_FORCED_GATE_LAUNCHES))
        return ops

    def _spatial_fused(self, g: BlockGeometry, batch: int,
                       d: float) -> List[OpLatency]:
        """Fused CPU spatial path (``laud_mm.ops.spatial_branch_add_relu``,
        used by ``_spatial_forward`` on AVX-512 CPUs when batch >= threads;
        a CPU spec with 16-lane vectors stands for AVX-512 and N_PE for the
        threads): the masker's logit difference as a one-channel 1x1 conv
        of x, pooled (also with forced gates); then per sample, one thread
        each, three GEMMs with the pixels as rows (output channels on the
        lanes): conv1 at the input pixels the active patches' conv2 windows
        cover (expected fraction 1 - (1 - d)^cells, ``cells`` = patch cells
        whose windows contain a pixel), conv2 (K = 9 width) and conv3 at
        the active output pixels; conv3's output is added into the shortcut
        at those pixels (runs of S). Outside a backbone's owned identity
        blocks the shortcut's other pixels get a ReLU pass. The kernel runs
        at every density (``spatial_dense_threshold`` is the gather path's)."""
        hw = self.hw
        S = int(g.granularity)
        ho, wo = g.out_hw
        hi, wi = g.in_hw
        n = float(batch)
        width, c_out, c_in = g.width, g.out_channels, g.in_channels
        out_e = n * c_out * ho * wo
        ops = self._spatial_gate_ops(g, batch)
        ops.append(_launches(hw, 'gate_count', 3))  # gt, sum, item
        if d <= 0.:  # the owned input itself, else relu(shortcut)
            inplace = self.owned_block_inputs and not g.has_downsample
            return ops + self._downsample(g, batch) + (
                [] if inplace else
                [elementwise_latency(hw, 'relu', out_e, 1, 1)])
        # the kernel runs at every density (no dense fallback)
        sh, sw = min(S, ho), min(S, wo)
        win = ((sh - 1) * g.stride + 2 * g.dilation + 1) * \
            ((sw - 1) * g.stride + 2 * g.dilation + 1)
        cells = win / float(sh * sw * g.stride * g.stride)
        cover = 1. - (1. - d) ** cells  # input pixels conv1 computes
        ops.append(_launches(hw, 'bookkeeping', 4))  # nonzero, contiguous

        def gemm(name, k, cout):  # r rows (pixels) per sample
            return lambda r: [] if r <= 0 else [_conv(
                hw, name, batch, k, cout, (r, 1), (r, 1),
                per_sample_channels=True, weight_elems=n * k * cout)]
        ops += _expected_ops(gemm('conv1', c_in, width), cover * hi * wi)
        ops += _expected_ops(gemm('conv2', 9 * width, width), d * ho * wo)
        ops += _expected_ops(gemm('conv3', width, c_out), d * ho * wo)
        ops += self._downsample(g, batch)
        ops.append(elementwise_latency(hw, 'add_relu3', d * out_e, 2, 1,
                                       run_elems=float(sw)))
        if g.has_downsample or not self.owned_block_inputs:
            ops.append(elementwise_latency(hw, 'relu', out_e, 1, 1))
        return ops

    def _layer_eager(self, g: BlockGeometry, batch: int,
                     d: float) -> List[OpLatency]:
        """Eager layer path (``_layer_forward`` of
        :mod:`laud_mm.models.dynamic`): conv1 as per-image GEMMs on the kept
        samples' rows of x (no row copy), ReLU, conv2, ReLU, then per kept
        sample the shortcut row gets the bias (one pass), conv3 accumulated
        in place (GEMM) and a ReLU pass. The output is the shortcut itself:
        for an identity block inside a backbone
        (``owned_block_inputs``, ``self.owned_block_inputs``) the input, so
        skipped samples cost nothing; otherwise a copy of the input (identity
        block called alone) or the downsample's output, and the skipped rows
        get a ReLU pass. Every sample on: the static block."""
        hw = self.hw
        out_e = float(g.out_channels * g.out_hw[0] * g.out_hw[1])
        if self.forced_gates:
            ops = [_launches(hw, 'gate', EAGER_FORCED_GATE_LAUNCHES)]
        else:  # mean, linear, gate
            ops = [pool_latency(hw, 'masker', batch, g.in_channels, g.in_hw,
                                (1, 1), g.in_hw[0] * g.in_hw[1]),
                   linear_latency(hw, 'masker_fc', batch, g.in_channels, 2),
                   _launches(hw, 'masker_steps', 1)]
        ops += self._downsample(g, batch)
        ops.append(_launches(hw, 'gate_count', 3))  # gt, sum, item
        inplace = self.owned_block_inputs and not g.has_downsample

        def eager(n):
            if n >= batch:
                return self.static_block_ops(g, batch)
            res = [_launches(hw, 'bookkeeping', 6 + 5 * n)]
            if not g.has_downsample and not inplace:
                res.append(elementwise_latency(hw, 'clone', out_e * batch,
                                               1, 1))
            if n > 0:
                branch = {o.name: o for o in self.static_block_ops(g, n)}
                res += [branch[k] for k in ('conv1', 'relu1', 'conv2',
                                            'relu2')]
                res += [elementwise_latency(hw, 'bias3', out_e * n, 1, 1),
                        branch['conv3'],
                        elementwise_latency(hw, 'relu3', out_e * n, 1, 1)]
            if not inplace and n < batch:  # relu of the skipped rows
                res += [_launches(hw, 'skipped_relu', batch - n),
                        elementwise_latency(hw, 'relu_skipped',
                                            out_e * (batch - n), 1, 1)]
            return res
        return ops + _expected_ops(eager, d * batch, with_zero=True)

    def layer_block_ops(self, g: BlockGeometry, batch: int,
                        d: float) -> List[OpLatency]:
        """Kernels of a layer-skipping block: ``d`` = fraction of samples
        that run the residual branch."""
        if self.eager:
            return self._layer_eager(g, batch, d)
        hw = self.hw
        ops = [pool_latency(hw, 'masker', batch, g.in_channels, g.in_hw,
                            (1, 1), g.in_hw[0] * g.in_hw[1])]
        ops += self._downsample(g, batch)
        return ops + _expected_ops(
            lambda n: self.static_block_ops(g, n), d * batch)

    def block_ops(self, g: BlockGeometry, batch: int,
                  density: Optional[float]) -> List[OpLatency]:
        """Kernels of one block (dispatch on ``g.paradigm``; RegNetY blocks,
        ``g.kind == 'regnety'``, go to :mod:`laud_mm.latency.regnet`,
        transformer layers, ``g.kind == 'vit'``, to
        :mod:`laud_mm.latency.vit`).

        Raises:
            ValueError: for an unknown paradigm.
        """
        if g.kind == 'vit':
            from .vit import vit_layer_ops
            return vit_layer_ops(self, g, batch, density)
        if g.kind == 'regnety':
            from .regnet import regnety_block_ops
            return regnety_block_ops(self, g, batch, density)
        if g.paradigm is None:
            return self._downsample(g, batch) + \
                self.static_block_ops(g, batch)
        if g.paradigm == 'spatial':
            return self.spatial_block_ops(g, batch, density)
        if g.paradigm == 'channel':
            return self.channel_block_ops(g, batch, density)
        if g.paradigm == 'layer':
            return self.layer_block_ops(g, batch, density)
        raise ValueError(f'block s{g.stage}.b{g.index}: paradigm='
                         f'{g.paradigm!r} is not one of {PARADIGMS} or None')

    # ---------------------------------------------------------- backbone
    def predict_backbone(self, geometries: Sequence[BlockGeometry],
                         densities: Sequence[float], batch_size: int,
                         stem: Optional[StemGeometry] = None
                         ) -> BackboneLatency:
        """Whole-batch latency of a (dynamic) backbone.

        Args:
            geometries: per block :class:`BlockGeometry` (forward order), or
                per transformer layer :class:`TokenLayerGeometry`.
            densities: per block mask density in [0, 1] (spatial: fraction
                of output pixels kept; channel: of channel groups; layer: of
                samples run); ignored (may be None) for static blocks.
            batch_size: images per batch (>= 1).
            stem: optional :class:`StemGeometry`, its latency is added.

        Returns:
            :class:`BackboneLatency` (milliseconds, whole batch).

        Raises:
            ValueError: naming ``densities`` (wrong length, value outside
                [0, 1] or not a number), ``batch_size`` (not a positive
                integer) or ``geometries`` (empty / wrong type).
        """
        geometries = list(geometries)
        if not geometries or not all(
                isinstance(g, (BlockGeometry, TokenLayerGeometry))
                for g in geometries):
            raise ValueError('geometries must be a non-empty list of '
                             'BlockGeometry or TokenLayerGeometry')
        if isinstance(batch_size, bool) or int(batch_size) != batch_size \
                or batch_size < 1:
            raise ValueError(f'batch_size={batch_size!r} must be a positive '
                             f'integer')
        batch_size = int(batch_size)
        densities = [None if d is None else d for d in list(densities)]
        if len(densities) != len(geometries):
            raise ValueError(f'densities has {len(densities)} entries but '
                             f'geometries has {len(geometries)} blocks')
        dens = []
        for j, (g, d) in enumerate(zip(geometries, densities)):
            if g.paradigm is None:
                dens.append(None)
                continue
            try:
                d = float(d)
            except (TypeError, ValueError):
                raise ValueError(f'densities[{j}]={d!r} is not a number')
            if not (0. <= d <= 1.):
                raise ValueError(f'densities[{j}]={d!r} is outside [0, 1]')
            dens.append(d)
        block_ops = [self.block_ops(g, batch_size, d)
                     for g, d in zip(geometries, dens)]
        per_block = [sum(o.ms for o in ops) for ops in block_ops]
        n_stages = max(g.stage for g in geometries) + 1
        per_stage = [0.] * n_stages
        for g, t in zip(geometries, per_block):
            per_stage[g.stage] += t
        stem_ops = self.stem_ops(stem, batch_size) if stem is not None \
            else []
        stem_ms = sum(o.ms for o in stem_ops)
        total = stem_ms + sum(per_block)
        return BackboneLatency(
            total, total / batch_size, per_block, per_stage, stem_ms,
            batch_size, self.hw.name, block_ops,
            [f'layer{g.index}' if g.kind == 'vit' else
             f's{g.stage}.b{g.index}' for g in geometries], stem_ops, dens,
            [g.paradigm for g in geometries])

    def predict_static(self, geometries: Sequence[BlockGeometry],
                       batch_size: int, stem: Optional[StemGeometry] = None
                       ) -> BackboneLatency:
        """Latency of the same network without maskers (every block
        static, BN folded). Same arguments and errors as
        :meth:`predict_backbone` (without densities)."""
        static = [dataclasses.replace(g, paradigm=None, granularity=None)
                  for g in geometries]
        return self.predict_backbone(static, [None] * len(static),
                                     batch_size, stem)
