"""Evaluation metric: the backbone's activation rate, FLOPs and predicted
latency, reported beside mmdet's / mmpretrain's accuracy metrics.

Source: paper sec. 4 (average backbone FLOPs and latency over the validation
set, predicted by the latency model of sec. 3.3 / appendix A).
"""
from collections import defaultdict
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger

from ...registry import METRICS


@METRICS.register_module()
class BackboneLatencyMetric(BaseMetric):
    """Mean activation rate, backbone GFLOPs and predicted backbone latency.

    Reads the ``laud_stats`` that :class:`laud_mm.LAUDDetector` (or the LAUD
    classifier) writes into every predicted data sample. Per-block mask
    densities are averaged over the images evaluated at the same padded input
    size, the latency predictor gives the batch latency for each such size,
    and the per-image latencies are averaged over all images. Distributed
    evaluation gathers the per-image records of every rank first
    (mmengine's ``BaseMetric``), so the result equals the single-process one.

    Output keys (prefix ``laud/``): ``activation_rate`` (dynamic / static
    backbone FLOPs), ``backbone_GFLOPs`` (mean per image, 1e9
    multiply-accumulates), ``latency_ms`` (predicted per-image latency at
    ``batch_size`` on ``hardware``, ms), ``static_latency_ms`` (the same
    backbone without maskers) and ``speedup`` (static / dynamic).

    Args:
        hardware: device name ('v100', 'rtx3090', 'rtx3060', 'tx2', 'nano',
            'a100', 'h200', 'cpu'), a YAML/JSON spec file, or a HardwareSpec.
        batch_size: batch for the prediction; None: the device's default
            (128 on server GPUs, 1 on Jetson boards, as in the paper).
        collect_device, prefix: as mmengine's BaseMetric.

    Raises:
        ValueError: unknown hardware (names the value) or batch_size < 1.
        KeyError: a data sample without ``laud_stats`` (model is not a LAUD
            detector / classifier).
    """

    default_prefix = 'laud'

    def __init__(self, hardware='v100', batch_size: Optional[int] = None,
                 collect_device: str = 'cpu', prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        from ...latency import LatencyPredictor
        try:
            self.predictor = LatencyPredictor(hardware)
        except ValueError as e:
            raise ValueError(f'BackboneLatencyMetric: hardware={hardware!r}: '
                             f'{e}') from e
        if batch_size is not None and (isinstance(batch_size, bool) or
                                       not isinstance(batch_size, int) or
                                       batch_size < 1):
            raise ValueError(f'BackboneLatencyMetric: batch_size={batch_size!r} '
                             f'must be a positive integer or None')
        self.batch_size = batch_size

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for ds in data_samples:
            stats = ds.get('laud_stats') if isinstance(ds, dict) else \
                ds.metainfo.get('laud_stats')
            if stats is None:
                raise KeyError(
                    "BackboneLatencyMetric: data sample has no 'laud_stats'; "
                    "the model must be a laud_mm LAUD detector/classifier "
                    "(type='laud_mm.LAUDDetector' / 'laud_mm.LAUDImageClassifier')")
            self.results.append(stats)

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        if not results:
            # otherwise 0 / 0: a nan rate and a ZeroDivisionError in speedup
            raise ValueError('BackboneLatencyMetric: no images were evaluated '
                             '(empty validation / test set?)')
        flops = np.array([r['flops'] for r in results], dtype=np.float64)
        dense = np.array([r['dense_flops'] for r in results], dtype=np.float64)
        groups = defaultdict(list)
        for r in results:
            groups[tuple(r['stem'].in_hw)].append(r)
        hw = self.predictor.hw
        batch = self.batch_size or hw.default_batch
        dyn_ms, static_ms, counts = [], [], []
        for key in sorted(groups):
            rs = groups[key]
            dens = np.mean([r['block_density'] for r in rs], axis=0).tolist()
            geoms, stem = rs[0]['geometries'], rs[0]['stem']
            dyn_ms.append(self.predictor.predict_backbone(
                geoms, dens, batch, stem=stem).per_image_ms)
            static_ms.append(self.predictor.predict_static(
                geoms, batch, stem=stem).per_image_ms)
            counts.append(len(rs))
        w = np.array(counts, dtype=np.float64) / sum(counts)
        lat = float(np.dot(w, dyn_ms))
        lat_static = float(np.dot(w, static_ms))
        MMLogger.get_current_instance().info(
            f'BackboneLatencyMetric: {len(results)} images, {len(groups)} '
            f'input sizes, predicted on {hw.name} at batch {batch}')
        return dict(activation_rate=float(np.mean(flops / dense)),
                    backbone_GFLOPs=float(flops.mean() / 1e9),
                    latency_ms=lat, static_latency_ms=lat_static,
                    speedup=lat_static / lat)
