"""Backbone latency: block geometry + activation rates -> kernels ->
latency per kernel, block, stage and network.

The kernels of each block kind come from its registered latency block
(:mod:`laud_mm.latency.blocks`: ResNet bottleneck, RegNetY block, T2T-ViT
layer, and their stems), in the paper's fused scheduling
(``implementation='fused'``) or as this project's dynamic path runs them
(``'eager'``; see :class:`LatencyPredictor` and
``docs/latency_predictor.md``).

Source: paper appendix A, docs/method.md sec. 4.
"""
import dataclasses
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

from ..structures.geometry import BlockGeometry, TokenLayerGeometry
from .blocks import block_latency, stem_latency
from .hardware import HardwareSpec, get_hardware
from .operators import OpLatency

__all__ = ['LatencyPredictor', 'BackboneLatency']


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
            (:mod:`laud_mm.models.resnet.dynamic`), kernel by kernel: separate
            ReLU kernels; spatial: dense conv1, gather kernel (K x K windows,
            conv1's ReLU fused), conv2 on the windows, conv3 on the patches,
            one fused scatter-add + ReLU pass (dense fallbacks as in
            ``_spatial_forward``); channel: per-sample weights gathered,
            conv1 / conv3 one batched GEMM each and conv2 one grouped conv
            over the kept channels padded to ``CHANNEL_PAD`` (masked-dense
            on small maps at high rates), fused scatter-add + ReLU;
            layer: the branch on the kept samples (per-image GEMMs), conv3
            accumulated into the shortcut rows; plus the Python bookkeeping
            calls of each path (counted as launches). Used to validate the
            model against measured CPU latency
            (``tools/analysis_tools/validate_predictor.py``).
        spatial_dense_threshold: spatial blocks whose fraction of active
            patches reaches this value run densely and multiply by the mask
            (the eager path does so at
            ``laud_mm.ops.policy.SPATIAL_DENSE_THRESHOLD``); None: always
            gather.
        forced_gates: eager only: the gates are imposed
            (``masker.forced_gate``, as the validation does): every
            channel-block sample keeps the same count, and spatial blocks
            count the forced gate's bookkeeping calls. The maskers' kernels
            are counted either way (a forced gate replaces the masker's
            decision, not its cost).
        owned_block_inputs: eager only: identity blocks run as inside a
            backbone (``laud_mm.models.layers.dynamic.owned_block_inputs``: a layer
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
        # (geometries, densities, index) while predict_backbone prices a
        # block: its neighbours (:meth:`neighbour`)
        self._chain = None

    # ------------------------------------------------------------ blocks
    def stem_ops(self, stem, batch: int) -> List[OpLatency]:
        """Kernels of a backbone stem (dispatch on ``stem.kind``).

        Raises:
            ValueError: for a stem kind without a latency block.
        """
        return stem_latency(stem.kind)(self, stem, batch)

    def block_ops(self, g, batch: int,
                  density: Optional[float]) -> List[OpLatency]:
        """Kernels of one block (dispatch on ``g.kind``, then its
        paradigm).

        Raises:
            ValueError: for a kind without a latency block or an unknown
                paradigm.
        """
        return block_latency(g.kind)(self, g, batch, density)

    def neighbour(self, offset: int) -> Optional[Tuple[object, float]]:
        """While :meth:`predict_backbone` prices a block: the (geometry,
        density) of the block ``offset`` places after it (-1: the block
        before), None past either end or for a block priced on its own
        (:meth:`block_ops` called directly). Blocks of a backbone hand
        their successor data in the eager path (a dense spatial block its
        successor's masker logits,
        :mod:`laud_mm.models.layers.spatial_logit_record`), which a block
        run alone does not."""
        if self._chain is None:
            return None
        geoms, dens, j = self._chain
        k = j + offset
        if not 0 <= k < len(geoms):
            return None
        return geoms[k], dens[k]

    # ---------------------------------------------------------- backbone
    def predict_backbone(self, geometries: Sequence[BlockGeometry],
                         densities: Sequence[float], batch_size: int,
                         stem=None
                         ) -> BackboneLatency:
        """Whole-batch latency of a (dynamic) backbone.

        Args:
            geometries: per block :class:`BlockGeometry` (forward order), or
                per transformer layer :class:`TokenLayerGeometry`.
            densities: per block mask density in [0, 1] (spatial: fraction
                of output pixels kept; channel: of channel groups; layer: of
                samples run); ignored (may be None) for static blocks.
            batch_size: images per batch (>= 1).
            stem: optional stem geometry (``StemGeometry``,
                ``RegNetStemGeometry``, ``T2TStemGeometry``), its latency is
                added.

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
        block_ops = []
        try:
            for j, (g, d) in enumerate(zip(geometries, dens)):
                self._chain = (geometries, dens, j)
                block_ops.append(self.block_ops(g, batch_size, d))
        finally:
            self._chain = None
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
                       batch_size: int, stem=None
                       ) -> BackboneLatency:
        """Latency of the same network without maskers (every block
        static, BN folded). Same arguments and errors as
        :meth:`predict_backbone` (without densities)."""
        static = [dataclasses.replace(g, paradigm=None, granularity=None)
                  for g in geometries]
        return self.predict_backbone(static, [None] * len(static),
                                     batch_size, stem)
