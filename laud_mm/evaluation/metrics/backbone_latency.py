"""Evaluation metric: the backbone's activation rate, FLOPs and predicted
latency, reported beside mmdet's / mmpretrain's accuracy metrics.

Source: paper sec. 4 (average backbone FLOPs and latency over the validation
set, predicted by the latency model of sec. 3.3 / appendix A).
"""
import os.path as osp
from collections import defaultdict
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger

from ...registry import METRICS


@METRICS.register_module()
class BackboneLatencyMetric(BaseMetric):
    """Mean activation rate, backbone GFLOPs and predicted backbone latency.

    Reads the ``laud_stats`` that the LAUD task models (detector, segmentor,
    classifier) write into every predicted data sample: each image's FLOPs
    and per-block mask densities *at its own input size* (before batch
    padding, :func:`laud_mm.models.layers.stats.attach_laud_stats`). Images
    of the same size are grouped, their per-block densities averaged, and
    the latency predictor prices ``batch_size`` images of that size; the
    per-image latencies are averaged over all images (the paper's "average
    backbone latency on the validation set"). The figures therefore depend
    neither on the test batch size nor on padding. Distributed evaluation
    gathers the per-image records of every rank first (mmengine's
    ``BaseMetric``), so the result equals the single-process one.

    Output keys (prefix ``laud/``): ``activation_rate`` (dynamic / static
    backbone FLOPs, mean over images), ``backbone_GFLOPs`` (mean per image,
    1e9 multiply-accumulates), ``latency_ms`` (predicted per-image latency,
    ms), ``static_latency_ms`` (the same backbone without maskers),
    ``speedup`` (static / dynamic), and what the prediction assumed:
    ``pred_hardware`` (device name), ``pred_batch`` (images per predicted
    batch) and ``pred_input`` (``'HxW'``, the mean evaluated input size, with
    the number of distinct sizes); the assumptions are also logged once.

    Two models of the dynamic backbone (``implementation``): ``'fused'``
    prices the paper's fused operators on any device spec (the paper's
    figures, sec. 3.3); ``'eager'`` prices this project's
    dynamic-inference path kernel by kernel (on a CPU spec its CPU
    kernels: the model that ``tools/analysis_tools/validate_predictor.py``
    checks against measured latency), with the dense fallback of spatial
    blocks at the paths' thresholds (``laud_mm.ops.policy``). With a spec
    calibrated on the evaluating machine
    (``tools/analysis_tools/calibrate_hardware.py --threads N --fit``),
    ``'eager'`` and the test loader's batch size, ``speedup`` predicts
    what :class:`laud_mm.BackboneSpeedHook` measures in the same
    evaluation (``laud/measured_speedup``); the latencies differ by the
    padding, which the hook times (a batch is padded to its largest
    image) and the metric does not (each image priced at its own size).
    Several instances with different ``prefix`` report several devices on
    one line.

    Args:
        hardware: device name ('v100', 'rtx3090', 'rtx3060', 'tx2', 'nano',
            'a100', 'h200', 'cpu'), a YAML/JSON spec file, or a HardwareSpec.
        batch_size: images per predicted batch, all of one evaluated size
            (default 1: the latency of one image as a detector or segmentor
            runs it; the ImageNet configs set 128, the paper's
            classification batch on server GPUs).
        implementation: ``'fused'`` (default) or ``'eager'`` (see above).
        collect_device, prefix: as mmengine's BaseMetric.

    Raises:
        ValueError: unknown hardware (names the value), batch_size < 1 or an
            unknown implementation (names the value).
        KeyError: a data sample without ``laud_stats`` (model is not a LAUD
            task model).
    """

    default_prefix = 'laud'

    def __init__(self, hardware='v100', batch_size: int = 1,
                 implementation: str = 'fused',
                 collect_device: str = 'cpu', prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        from ...latency import LatencyPredictor
        from ...ops import policy
        if implementation not in LatencyPredictor.IMPLEMENTATIONS:
            raise ValueError(f'BackboneLatencyMetric: implementation='
                             f'{implementation!r} is not one of '
                             f'{LatencyPredictor.IMPLEMENTATIONS}')
        self.implementation = implementation
        try:
            self.predictor = LatencyPredictor(hardware)
        except ValueError as e:
            hint = ''
            if isinstance(hardware, str) and hardware.lower().endswith(
                    ('.yaml', '.yml', '.json')) and not osp.isfile(hardware):
                hint = (' (a spec of this machine: tools/analysis_tools/'
                        'calibrate_hardware.py --threads N --fit --out '
                        f'{hardware})')
            raise ValueError(f'BackboneLatencyMetric: hardware={hardware!r}: '
                             f'{e}{hint}') from e
        # the eager model, per block kind: each family's dynamic path falls
        # back to the dense block at its own threshold
        self._eager = {kind: LatencyPredictor(
            self.predictor.hw, implementation='eager',
            spatial_dense_threshold=thr) for kind, thr in (
                ('bottleneck', policy.SPATIAL_DENSE_THRESHOLD),
                ('regnety', policy.REGNETY_SPATIAL_DENSE_THRESHOLD),
                ('vit', None))} if implementation == 'eager' else {}
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) \
                or batch_size < 1:
            raise ValueError(f'BackboneLatencyMetric: batch_size={batch_size!r} '
                             f'must be a positive integer')
        self.batch_size = batch_size

    def _predictor_for(self, kind: str):
        """The predictor that prices backbones of block kind ``kind``.

        Raises:
            ValueError: eager model, a kind without an eager path.
        """
        if not self._eager:
            return self.predictor
        if kind not in self._eager:
            raise ValueError(f"BackboneLatencyMetric: implementation="
                             f"'eager' has no dynamic path for blocks of kind "
                             f"{kind!r} (known: {sorted(self._eager)})")
        return self._eager[kind]

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        """Keep each data sample's ``laud_stats``.

        Raises:
            KeyError: a data sample without them.
        """
        for ds in data_samples:
            stats = ds.get('laud_stats') if isinstance(ds, dict) else \
                ds.metainfo.get('laud_stats')
            if stats is None:
                raise KeyError(
                    "BackboneLatencyMetric: data sample has no 'laud_stats'; "
                    "the model must be a laud_mm LAUD task model "
                    "(type='laud_mm.LAUDDetector', 'laud_mm.LAUDSegmentor' "
                    "or 'laud_mm.LAUDImageClassifier')")
            self.results.append(stats)

    def compute_metrics(self, results: List[dict]) -> Dict[str, object]:
        """The ``laud/`` figures of all evaluated images (see the class
        docstring).

        Raises:
            ValueError: no image was evaluated.
        """
        if not results:
            # otherwise 0 / 0: a nan rate and a ZeroDivisionError in speedup
            raise ValueError('BackboneLatencyMetric: no images were evaluated '
                             '(empty validation / test set?)')
        flops = np.array([r['flops'] for r in results], dtype=np.float64)
        dense = np.array([r['dense_flops'] for r in results], dtype=np.float64)
        groups = defaultdict(list)
        for r in results:
            hw = r.get('input_hw') or r['stem'].in_hw
            groups[tuple(hw)].append(r)
        hw = self.predictor.hw
        batch = self.batch_size
        dyn_ms, static_ms, counts = [], [], []
        for key in sorted(groups):
            rs = groups[key]
            dens = np.mean([r['block_density'] for r in rs], axis=0).tolist()
            geoms, stem = rs[0]['geometries'], rs[0]['stem']
            pred = self._predictor_for(geoms[0].kind)
            dyn_ms.append(pred.predict_backbone(
                geoms, dens, batch, stem=stem).per_image_ms)
            static_ms.append(pred.predict_static(
                geoms, batch, stem=stem).per_image_ms)
            counts.append(len(rs))
        w = np.array(counts, dtype=np.float64) / sum(counts)
        lat = float(np.dot(w, dyn_ms))
        lat_static = float(np.dot(w, static_ms))
        sizes = np.array([k for k in sorted(groups)], dtype=np.float64)
        mean_hw = np.dot(w, sizes)
        pred_input = f'{mean_hw[0]:.0f}x{mean_hw[1]:.0f}' + (
            f' (mean of {len(groups)} sizes)' if len(groups) > 1 else '')
        MMLogger.get_current_instance().info(
            f'BackboneLatencyMetric: {len(results)} images; latency '
            f'predicted ({self.implementation} model) on {hw.name} for '
            f'batches of {batch} image(s) of '
            f'each evaluated input size ({len(groups)} sizes, mean '
            f'{mean_hw[0]:.0f}x{mean_hw[1]:.0f} px), per image')
        return dict(activation_rate=float(np.mean(flops / dense)),
                    backbone_GFLOPs=float(flops.mean() / 1e9),
                    latency_ms=lat, static_latency_ms=lat_static,
                    speedup=lat_static / lat, pred_hardware=hw.name,
                    pred_batch=batch, pred_input=pred_input)
