"""The two routes by which a dense-prediction LAUD model gets its backbone
weights, chosen by one config value, ``laud_weights``:

1. **LAUD ImageNet checkpoint** (``laud_weights='path/or/url.pth'``): the
   classifier trained with the sparsity loss (configs/imagenet/), maskers
   included, loaded with ``prefix='backbone.'``. The gates start at the
   ImageNet activation rate, so fine-tuning keeps the Gumbel temperature
   fixed at its final value (paper appendix B.3).
2. **Static ImageNet weights** (``laud_weights=None``): the backbone's own
   ``init_cfg`` (the upstream config's, e.g. ``torchvision://resnet50``) via
   mmengine's ``Pretrained`` init; the maskers keep their keep-biased
   initialisation, so the gates start dense and fine-tuning anneals the
   temperature (5 -> 0.1, as ImageNet training does) while the sparsity
   loss pulls the rate to the target; the maskers of frozen stages
   (mmdet's ``frozen_stages=1``) train as well
   (``backbone.train_frozen_maskers``), else those stages could never
   skip. On route 1 they stay frozen with their stage, as in the authors'
   release.

Nothing is read or downloaded while a config is loaded or a model is built:
the weights load in ``init_weights`` (when a Runner starts training), and a
missing local checkpoint file is reported there (:func:`check_weights_file`),
so that building, inspecting and testing a config with a trained checkpoint
work without the ImageNet checkpoint.

Source: paper sec. 4.5 and appendix B.2-B.3; docs/method.md sec. 2-3.
"""
import os.path as osp
from typing import Optional, Tuple

#: Gumbel temperature schedules (tau0, tau1) of the two routes
TAU_FROM_LAUD_CHECKPOINT = (0.1, 0.1)
TAU_FROM_STATIC_WEIGHTS = (5.0, 0.1)


def apply_weights_route(model, laud_weights: Optional[str],
                        owner: str) -> Tuple[float, float]:
    """Set ``model.backbone``'s weights route (static weights: also
    ``backbone.train_frozen_maskers``) and ``model.laud_tau_schedule``
    (read by :class:`laud_mm.GumbelTemperatureHook` without ``tau0`` /
    ``tau1``).

    Args:
        model: a task model with a LAUD ``backbone``.
        laud_weights: LAUD ImageNet checkpoint (path or URL), or None for the
            static weights of the backbone's ``init_cfg``.
        owner: the class named in error messages.

    Returns:
        the route's (tau0, tau1).

    Raises:
        ValueError: ``laud_weights`` not a string or None.
    """
    if laud_weights is None:
        if hasattr(model.backbone, 'train_frozen_maskers'):
            model.backbone.train_frozen_maskers = True
        model.laud_weights = None
        model.laud_weights_route = 'static ImageNet weights'
        model.laud_tau_schedule = TAU_FROM_STATIC_WEIGHTS
        return model.laud_tau_schedule
    if not isinstance(laud_weights, str) or not laud_weights:
        raise ValueError(f'{owner}: laud_weights={laud_weights!r} must be a '
                         f'checkpoint path / URL or None')
    model.backbone.init_cfg = dict(type='Pretrained', prefix='backbone.',
                                   checkpoint=laud_weights)
    model.laud_weights = laud_weights
    model.laud_weights_route = 'LAUD ImageNet checkpoint'
    model.laud_tau_schedule = TAU_FROM_LAUD_CHECKPOINT
    return model.laud_tau_schedule


def check_weights_file(model, owner: str) -> None:
    """Before ``init_weights`` loads them: refuse a ``laud_weights`` local
    file that does not exist, naming the key and both routes.

    Args:
        model: a task model after :func:`apply_weights_route`.
        owner: the class named in the message.

    Raises:
        ValueError: ``model.laud_weights`` is a local path that is not a
            file.
    """
    laud_weights = getattr(model, 'laud_weights', None)
    if laud_weights is not None and '://' not in laud_weights and \
            not osp.isfile(laud_weights):
        raise ValueError(
            f'{owner}: laud_weights={laud_weights!r}: no such file. Either '
            f'(1) point laud_weights at a LAUD ImageNet checkpoint (trained '
            f'with a configs/imagenet/ config, maskers included), or (2) set '
            f'laud_weights=None to start from static ImageNet weights (the '
            f"backbone's init_cfg) with the Gumbel temperature annealed "
            f'during fine-tuning (docs/model_zoo.md, "Backbone weights")')
