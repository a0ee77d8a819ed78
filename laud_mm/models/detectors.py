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
from .layers.weights import apply_weights_route, check_weights_file

_CLASSES: Dict[type, type] = {}


def check_image_channels(owner: str, backbone, data) -> None:
    """Refuse images whose channel count is not the backbone's (a
    grayscale image loaded with ``color_type='grayscale'`` otherwise fails
    deep in the data preprocessor with an IndexError).

    Args:
        owner: the model class named in the message.
        backbone: the LAUD backbone (its first conv: ``conv1``, or
            ``stem[0]`` with a deep stem).
        data: the dataloader batch (``inputs``: list of (C, H, W) tensors).

    Raises:
        ValueError: naming the image's index and shape.
    """
    inputs = data.get('inputs') if isinstance(data, dict) else None
    if not isinstance(inputs, (list, tuple)):
        return
    first = backbone.stem[0] if getattr(backbone, 'deep_stem', False) \
        else getattr(backbone, 'conv1', None)
    c = getattr(first, 'in_channels', None)
    if c is None:
        return
    for i, img in enumerate(inputs):
        if isinstance(img, torch.Tensor) and (img.dim() != 3 or
                                              img.shape[0] != c):
            raise ValueError(
                f'{owner}: image {i} of the batch has shape '
                f'{tuple(img.shape)}, expected ({c}, H, W); load '
                f"grayscale images as color (LoadImageFromFile "
                f"color_type='color', the default)")


class LAUDDetectorMixin:
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

    def __init__(self, *args, sparsity_loss: Optional[dict] = None,
                 laud_weights: Optional[str] = None, **kwargs):
        super().__init__(*args, **kwargs)
        if not hasattr(self.backbone, 'activation_stats'):
            raise TypeError(
                f'LAUDDetector needs a LAUD backbone (e.g. '
                f"type='laud_mm.LAUDResNet'), got {type(self.backbone).__name__}")
        dynamic = bool(getattr(self.backbone, 'paradigm', None))
        if sparsity_loss is not None and not dynamic:
            raise ValueError('LAUDDetector: sparsity_loss is set but the '
                             'backbone has paradigm=None (static)')
        self.sparsity_loss = MODELS.build(sparsity_loss) \
            if sparsity_loss is not None else None
        apply_weights_route(self, laud_weights, 'LAUDDetector')

    def _check_image_channels(self, data) -> None:
        """Refuse images whose channel count is not the backbone's (see
        :func:`check_image_channels`)."""
        check_image_channels('LAUDDetector', self.backbone, data)

    def init_weights(self) -> None:
        """The upstream initialisation (the backbone's ``init_cfg``: the
        weights route), after refusing a ``laud_weights`` file that does
        not exist (:func:`~laud_mm.models.layers.weights.
        check_weights_file`).

        Raises:
            ValueError: ``laud_weights`` names a missing local file.
        """
        check_weights_file(self, 'LAUDDetector')
        super().init_weights()

    def train_step(self, data, optim_wrapper):
        self._check_image_channels(data)
        return super().train_step(data, optim_wrapper)

    def val_step(self, data):
        self._check_image_channels(data)
        return super().val_step(data)

    def test_step(self, data):
        self._check_image_channels(data)
        return super().test_step(data)

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
        stats = self.backbone.activation_stats()
        if self.sparsity_loss is not None:
            losses.update(self.sparsity_loss(stats))
        losses['act_rate'] = stats['activation_rate'].detach().mean()
        return losses

    def predict(self, batch_inputs: torch.Tensor, batch_data_samples,
                rescale: bool = True):
        results = self._heads_fp32(super().predict, batch_inputs,
                                   batch_data_samples, rescale=rescale)
        attach_laud_stats(self.backbone, results)
        return results


def laud_detector_class(base: Type) -> Type:
    """The cached subclass ``LAUD<base>`` with :class:`LAUDDetectorMixin`."""
    cls = _CLASSES.get(base)
    if cls is None:
        cls = type(f'LAUD{base.__name__}', (LAUDDetectorMixin, base),
                   {'__module__': __name__, '__doc__': base.__doc__})
        _CLASSES[base] = cls
    return cls


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
