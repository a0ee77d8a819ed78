"""Segmentor integration: any mmseg ``EncoderDecoder`` (UPerNet, DeepLabV3+,
mmseg's Mask2Former, ...) with a LAUD backbone gains the sparsity loss in
training and per-image activation statistics in prediction, without copying
mmseg's segmentors.

``type='laud_mm.LAUDSegmentor', segmentor='EncoderDecoder'`` builds a
subclass of mmseg's class with :class:`LAUDSegmentorMixin` in front of it.
Every other key of the model config (backbone, decode / auxiliary heads,
train / test cfg, data preprocessor) is passed to the mmseg class unchanged,
and the state-dict keys stay mmseg's. mmseg is imported when the first
segmentor is built, not when ``laud_mm`` is imported.

Source: the LAUD backbone replaces the ResNet of a dense-prediction network
and is fine-tuned with the sparsity term, as for detection (paper sec. 4.5
and appendix B.3, docs/method.md sec. 3); semantic segmentation itself is
this repository's addition (docs/segmentation.md).
"""
from typing import Dict, Optional, Type

import torch
from mmengine.registry import DefaultScope

from ..registry import MODELS
from .layers.stats import attach_laud_stats
from .layers.task import LAUDTaskMixin, cached_task_class

_CLASSES: Dict[type, type] = {}


class LAUDSegmentorMixin(LAUDTaskMixin):
    """Adds the backbone's sparsity loss and activation statistics to an
    mmseg ``EncoderDecoder``.

    Training (``loss``): mmseg's decode (and auxiliary) head losses, plus
    ``loss_sparsity`` (when a sparsity loss is configured) and ``act_rate``
    (mean backbone FLOPs ratio of the batch, logged, not summed: mmseg sums
    only keys containing 'loss').

    Prediction (``predict``): writes ``laud_stats`` into each returned
    ``SegDataSample``'s metainfo exactly as :class:`LAUDDetectorMixin` does
    (per-image backbone FLOPs, mask densities, block and stem geometry at
    the image's own input size), read by
    :class:`laud_mm.BackboneLatencyMetric`.

    Weights: ``laud_weights`` selects the backbone's weights route and the
    Gumbel temperature schedule ``laud_tau_schedule``, as for detection
    (:mod:`laud_mm.models.layers.weights`).

    Args:
        sparsity_loss: config of :class:`laud_mm.SparsityLoss` (None: no
            sparsity term).
        laud_weights: a LAUD ImageNet checkpoint (path or URL, maskers
            included; loaded with ``prefix='backbone.'``, tau fixed at 0.1),
            or None for the static ImageNet weights of the backbone's
            ``init_cfg`` with tau annealed 5 -> 0.1. Read in
            ``init_weights``, not at construction.

    Raises:
        TypeError: (construction) the backbone is not a LAUD backbone.
        ValueError: (construction) ``sparsity_loss`` with a static
            backbone, or ``laud_weights`` neither a string nor None;
            (``init_weights``) a local ``laud_weights`` file that does not
            exist (the message names ``laud_weights``); (prediction) ``test_cfg.mode='slide'`` (the
            backbone then runs once per crop, while ``laud_stats``
            describes one forward per image).
    """

    laud_owner = 'LAUDSegmentor'

    def loss(self, inputs: torch.Tensor, data_samples) -> dict:
        """mmseg's losses, ``loss_sparsity`` and ``act_rate``.

        Args:
            inputs: (N, 3, H, W) preprocessed images.
            data_samples: ``SegDataSample`` list with ``gt_sem_seg``.
        """
        losses = super().loss(inputs, data_samples)
        return self.add_laud_losses(losses)

    def predict(self, inputs: torch.Tensor, data_samples=None):
        """mmseg's prediction (``pred_sem_seg``, ``seg_logits``) plus
        ``laud_stats`` in every data sample's metainfo.

        Raises:
            ValueError: ``test_cfg.mode`` is 'slide'.
        """
        mode = (self.test_cfg or {}).get('mode', 'whole')
        if mode != 'whole':
            raise ValueError(
                f"LAUDSegmentor: model.test_cfg.mode={mode!r}: sliding-window "
                f"inference runs the backbone once per crop, and the "
                f"activation statistics (laud_stats) describe one forward per "
                f"image; use test_cfg=dict(mode='whole')")
        results = super().predict(inputs, data_samples)
        attach_laud_stats(self.backbone, results)
        return results


def laud_segmentor_class(base: Type) -> Type:
    """The cached subclass ``LAUD<base>`` with :class:`LAUDSegmentorMixin`."""
    return cached_task_class(LAUDSegmentorMixin, base, _CLASSES)


@MODELS.register_module()
def LAUDSegmentor(segmentor: str = 'EncoderDecoder',
                  sparsity_loss: Optional[dict] = None,
                  laud_weights: Optional[str] = None, **kwargs):
    """Build mmseg's ``segmentor`` class with a LAUD backbone.

    Args:
        segmentor: an mmseg ``EncoderDecoder`` type (mmseg's Mask2Former is
            an ``EncoderDecoder`` with a ``Mask2FormerHead``), e.g.
            'EncoderDecoder', 'CascadeEncoderDecoder'.
        sparsity_loss: config of :class:`laud_mm.SparsityLoss` (None: no
            sparsity term, e.g. for a static backbone).
        laud_weights: the backbone's weights route
            (:mod:`laud_mm.models.layers.weights`): a LAUD ImageNet
            checkpoint, or None for the static ImageNet weights of the
            backbone's ``init_cfg`` with the temperature annealed.
        **kwargs: the mmseg segmentor's own arguments.

    Returns:
        An instance of ``LAUD<segmentor>`` (a subclass of mmseg's class),
        built in mmseg's default scope (its heads and data preprocessor
        resolve in mmseg's registry whatever scope is current).

    Raises:
        ValueError: if ``segmentor`` is not an mmseg ``EncoderDecoder``
            type (names the value), or ``laud_weights`` is neither a string
            nor None (a missing local file is refused by ``init_weights``,
            naming ``laud_weights`` and both routes).
    """
    import mmseg.models  # noqa: F401  (registers mmseg's segmentors)
    from mmseg.models.segmentors import EncoderDecoder
    from mmseg.registry import MODELS as MMSEG_MODELS
    base = MMSEG_MODELS.get(segmentor) if isinstance(segmentor, str) else None
    if not (isinstance(base, type) and issubclass(base, EncoderDecoder)):
        raise ValueError(f'LAUDSegmentor: segmentor={segmentor!r} is not an '
                         f"mmseg EncoderDecoder type (e.g. 'EncoderDecoder')")
    with DefaultScope.overwrite_default_scope('mmseg'):
        return laud_segmentor_class(base)(sparsity_loss=sparsity_loss,
                                          laud_weights=laud_weights, **kwargs)
