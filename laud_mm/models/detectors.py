"""Detector integration: any mmdet detector with a LAUD backbone gains the
sparsity loss in training and per-image activation statistics in prediction,
without copying mmdet's detectors.

``type='laud_mm.LAUDDetector', detector='FasterRCNN'`` builds a subclass of
mmdet's class with :class:`LAUDDetectorMixin` in front of it. Every other key
of the model config (backbone, neck, heads, train/test cfg, preprocessor) is
passed to the mmdet class unchanged, and the state-dict keys stay mmdet's.

Source: paper sec. 4.5 and appendix B.3 (LAUD backbones replace the
detector's ResNet; extra sparsity loss, tau fixed at 0.1), docs/method.md
sec. 3.
"""
from typing import Dict, Optional, Type

import torch

from ..registry import MODELS
from .layers.stats import attach_laud_stats
from .layers.task import LAUDTaskMixin, cached_task_class

_CLASSES: Dict[type, type] = {}


class LAUDDetectorMixin(LAUDTaskMixin):
    """Adds the backbone's sparsity loss and activation statistics.

    Training (``loss``): adds ``loss_sparsity`` (when a sparsity loss is
    configured) and logs ``act_rate`` (mean backbone FLOPs ratio of the batch,
    not a loss: mmengine sums only keys containing 'loss').

    Prediction (``predict``): writes ``laud_stats`` into each returned data
    sample's metainfo, the image's backbone FLOPs and per-block densities at
    its own input size (:func:`laud_mm.models.layers.stats.
    attach_laud_stats`), which :class:`laud_mm.BackboneLatencyMetric` reads.

    Weights: ``laud_weights`` selects the backbone's weights route and the
    Gumbel temperature schedule (:mod:`laud_mm.models.layers.weights`).
    """

    laud_owner = 'LAUDDetector'

    # ---- CPU mixed precision: mmcv's CPU kernels (nms, RoIAlign, ...) take
    # float32 only, so under torch.autocast('cpu') (laud_mm.CPUAmpOptimWrapper)
    # the backbone and neck run autocast and the heads run in float32.
    _cpu_amp_dtype = None

    @staticmethod
    def _cpu_autocast_dtype(batch_inputs):
        if batch_inputs.device.type == 'cpu' and \
                torch.is_autocast_enabled('cpu'):
            return torch.get_autocast_dtype('cpu')
        return None

    def extract_feat(self, batch_inputs: torch.Tensor):
        dtype = self._cpu_amp_dtype
        if dtype is None:
            return super().extract_feat(batch_inputs)
        with torch.autocast('cpu', dtype=dtype):
            feats = super().extract_feat(batch_inputs)
        return tuple(f.float() for f in feats)

    def _heads_fp32(self, fn, batch_inputs, *args, **kwargs):
        dtype = self._cpu_autocast_dtype(batch_inputs)
        if dtype is None:
            return fn(batch_inputs, *args, **kwargs)
        self._cpu_amp_dtype = dtype
        try:
            with torch.autocast('cpu', enabled=False):
                return fn(batch_inputs, *args, **kwargs)
        finally:
            self._cpu_amp_dtype = None

    def loss(self, batch_inputs: torch.Tensor, batch_data_samples):
        losses = self._heads_fp32(super().loss, batch_inputs,
                                  batch_data_samples)
        return self.add_laud_losses(losses)

    def predict(self, batch_inputs: torch.Tensor, batch_data_samples,
                rescale: bool = True):
        results = self._heads_fp32(super().predict, batch_inputs,
                                   batch_data_samples, rescale=rescale)
        attach_laud_stats(self.backbone, results)
        return results


def laud_detector_class(base: Type) -> Type:
    """The cached subclass ``LAUD<base>`` with :class:`LAUDDetectorMixin`."""
    return cached_task_class(LAUDDetectorMixin, base, _CLASSES)


@MODELS.register_module()
def LAUDDetector(detector: str, sparsity_loss: Optional[dict] = None,
                 laud_weights: Optional[str] = None, **kwargs):
    """Build mmdet's ``detector`` class with a LAUD backbone.

    Args:
        detector: mmdet detector type, e.g. 'FasterRCNN', 'RetinaNet',
            'MaskRCNN', 'DDQDETR', 'Mask2Former'.
        sparsity_loss: config of :class:`laud_mm.SparsityLoss` (None: no
            sparsity term, e.g. for a static backbone).
        laud_weights: the backbone's weights route
            (:mod:`laud_mm.models.layers.weights`): a LAUD ImageNet
            checkpoint, or None for the static ImageNet weights of the
            backbone's ``init_cfg`` with the temperature annealed.
        **kwargs: the mmdet detector's own arguments.

    Returns:
        An instance of ``LAUD<detector>`` (a subclass of mmdet's class).

    Raises:
        ValueError: if ``detector`` is not a registered mmdet model, or
            ``laud_weights`` is neither a string nor None (a missing local
            file is refused by ``init_weights``).
    """
    import mmdet.models  # noqa: F401  (registers mmdet's detectors)
    from mmdet.registry import MODELS as MMDET_MODELS
    base = MMDET_MODELS.get(detector) if isinstance(detector, str) else None
    if base is None:
        raise ValueError(f'LAUDDetector: detector={detector!r} is not an mmdet '
                         f"model type (e.g. 'FasterRCNN')")
    return laud_detector_class(base)(sparsity_loss=sparsity_loss,
                                     laud_weights=laud_weights, **kwargs)
