"""What every dense-prediction task model with a LAUD backbone adds to its
upstream class (mmdet detectors, mmseg segmentors), written once:

- construction checks (a LAUD backbone; no sparsity loss on a static one),
  the sparsity loss, and the backbone's weights route
  (:mod:`laud_mm.models.layers.weights`);
- ``init_weights`` refusing a missing ``laud_weights`` file first;
- train / val / test steps refusing images of the wrong channel count;
- the training losses' ``loss_sparsity`` and ``act_rate``;
- the cached ``LAUD<Base>`` subclass of an upstream class.

Source: paper sec. 4.5 and appendix B.3 (a LAUD backbone replaces the
ResNet of a dense-prediction network and is fine-tuned with the sparsity
term); docs/method.md sec. 3.
"""
from typing import Dict, Optional, Type

import torch

from ...registry import MODELS
from .weights import apply_weights_route, check_weights_file


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


class LAUDTaskMixin:
    """The shared part of :class:`laud_mm.models.detectors.
    LAUDDetectorMixin` and :class:`laud_mm.models.segmentors.
    LAUDSegmentorMixin`; a subclass sets ``laud_owner`` (the name in error
    messages) and calls :meth:`add_laud_losses` in its ``loss``.

    Args:
        sparsity_loss: config of :class:`laud_mm.SparsityLoss`, or None.
        laud_weights: LAUD ImageNet checkpoint (path / URL) or None (static
            weights of the backbone's ``init_cfg``).

    Raises:
        TypeError: the backbone is not a LAUD backbone.
        ValueError: ``sparsity_loss`` with a static backbone;
            ``laud_weights`` neither a string nor None; (``init_weights``)
            a missing local ``laud_weights`` file; (steps) images whose
            channel count is not the backbone's.
    """

    laud_owner = 'LAUDTask'

    def __init__(self, *args, sparsity_loss: Optional[dict] = None,
                 laud_weights: Optional[str] = None, **kwargs):
        super().__init__(*args, **kwargs)
        owner = self.laud_owner
        if not hasattr(self.backbone, 'activation_stats'):
            raise TypeError(
                f"{owner} needs a LAUD backbone (e.g. type="
                f"'laud_mm.LAUDResNet'), got {type(self.backbone).__name__}")
        dynamic = bool(getattr(self.backbone, 'paradigm', None))
        if sparsity_loss is not None and not dynamic:
            raise ValueError(f'{owner}: sparsity_loss is set but the '
                             f'backbone has paradigm=None (static)')
        self.sparsity_loss = MODELS.build(sparsity_loss) \
            if sparsity_loss is not None else None
        apply_weights_route(self, laud_weights, owner)

    def init_weights(self) -> None:
        """The upstream initialisation (the backbone's ``init_cfg``: the
        weights route), after refusing a ``laud_weights`` file that does
        not exist (:func:`~laud_mm.models.layers.weights.
        check_weights_file`).

        Raises:
            ValueError: ``laud_weights`` names a missing local file.
        """
        check_weights_file(self, self.laud_owner)
        super().init_weights()

    def train_step(self, data, optim_wrapper):
        check_image_channels(self.laud_owner, self.backbone, data)
        return super().train_step(data, optim_wrapper)

    def val_step(self, data):
        check_image_channels(self.laud_owner, self.backbone, data)
        return super().val_step(data)

    def test_step(self, data):
        check_image_channels(self.laud_owner, self.backbone, data)
        return super().test_step(data)

    def add_laud_losses(self, losses: dict) -> dict:
        """Add ``loss_sparsity`` (when a sparsity loss is configured) and
        ``act_rate`` (the batch's mean backbone FLOPs ratio, logged, not
        summed: mmengine sums only keys containing 'loss') to ``losses``
        after a training forward of the backbone.

        Returns:
            ``losses``, updated in place.
        """
        stats = self.backbone.activation_stats()
        if self.sparsity_loss is not None:
            losses.update(self.sparsity_loss(stats))
        losses['act_rate'] = stats['activation_rate'].detach().mean()
        return losses


def cached_task_class(mixin: Type, base: Type,
                      cache: Dict[type, type]) -> Type:
    """The subclass ``LAUD<base>`` of ``(mixin, base)``, created once per
    base (``cache``), named for the upstream class, in ``mixin``'s module,
    with the upstream docstring."""
    cls = cache.get(base)
    if cls is None:
        cls = type(f'LAUD{base.__name__}', (mixin, base),
                   {'__module__': mixin.__module__, '__doc__': base.__doc__})
        cache[base] = cls
    return cls
