"""Weights hand-off between torchvision, mmpretrain classifiers and mmdet
detectors (paper sec. 3.5 and 4.3: LAUD models fine-tune from torchvision's
static ResNets; the ImageNet-trained LAUD backbone replaces the detector's).

Key layouts (all ResNets of torchvision, mmpretrain, mmdet and
:class:`laud_mm.LAUDResNet` share the parameter names below the prefix):

- torchvision ``ResNet.state_dict()``: ``conv1.weight``, ``bn1.*``,
  ``layer1.0.conv1.weight``, ..., ``layer1.0.downsample.1.running_var``,
  ``fc.weight`` (1000, 2048), ``fc.bias``.
- mmpretrain ``ImageClassifier`` (and :class:`laud_mm.LAUDImageClassifier`):
  ``backbone.<torchvision name>`` (plus ``backbone.layerX.Y.masker.*`` for
  LAUD backbones), ``head.fc.weight``, ``head.fc.bias``.
- mmdet detector: ``backbone.<name>`` as above, so a classifier checkpoint
  loads into a detector's backbone through
  ``init_cfg=dict(type='Pretrained', prefix='backbone.', checkpoint=...)``
  (mmengine strips the prefix and keeps the masker weights).

Importing this module also registers the checkpoint scheme
``torchvision-cls://<arch or file>`` with mmengine's ``CheckpointLoader``: it
loads torchvision weights (``torchvision://<arch>`` download, or a local
torchvision ``.pth`` file) and returns them in mmpretrain's classifier layout,
so ``init_cfg=dict(type='Pretrained', checkpoint='torchvision-cls://resnet50')``
initialises a whole classifier (backbone and fc) from torchvision.
"""
import os.path as osp
import pickle
import re
from collections import OrderedDict
from typing import Dict, List, Tuple

import torch
from mmengine.runner.checkpoint import (CheckpointLoader, _load_checkpoint,
                                        load_from_torchvision)

TORCHVISION_CLS_SCHEME = 'torchvision-cls://'

#: ``revise_keys`` for :func:`mmengine.runner.load_checkpoint` that turn a
#: torchvision state dict into mmpretrain classifier keys and leave an
#: mmpretrain / mmengine Runner classifier checkpoint unchanged.
CLASSIFIER_REVISE_KEYS: List[Tuple[str, str]] = [
    (r'^module\.', ''),
    (r'^(?!(backbone|neck|head|data_preprocessor)\.)(?!fc\.)', 'backbone.'),
    (r'^fc\.', 'head.fc.'),
]


def _unwrap(checkpoint) -> 'OrderedDict[str, torch.Tensor]':
    """The state dict inside a checkpoint (``state_dict`` / ``model`` entry
    of a dict, or the dict itself), with DataParallel's ``module.`` dropped.

    Raises:
        ValueError: if ``checkpoint`` is not a dict of tensors.
    """
    if not isinstance(checkpoint, dict):
        raise ValueError(f'checkpoint of type {type(checkpoint).__name__} is '
                         f'not a dict')
    sd = checkpoint
    for key in ('state_dict', 'model'):
        if key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    out = OrderedDict()
    for k, v in sd.items():
        if torch.is_tensor(v):
            out[re.sub(r'^module\.', '', k)] = v
    if not out:
        raise ValueError('checkpoint holds no tensors (expected a state dict, '
                         "or a dict with a 'state_dict' entry)")
    return out


def load_state_dict_file(filename: str, trusted: bool = False
                         ) -> 'OrderedDict[str, torch.Tensor]':
    """Read a state dict from a path or an mmengine checkpoint URL
    (``torchvision://``, ``open-mmlab://``, ``http(s)://``, ...) on the CPU.

    Runner checkpoints load with torch's ``weights_only`` default (laud_mm
    allow-lists their non-tensor types, :mod:`laud_mm.engine.safe_load`).

    Args:
        filename: path or URL.
        trusted: unpickle a local file with ``weights_only=False`` (arbitrary
            code: only for files from a trusted source, e.g. Runner
            checkpoints saved without laud_mm imported, which pickle
            ``getattr``).

    Raises:
        ValueError: ``filename`` is a missing local file, holds no tensors,
            or is refused by ``weights_only`` (and ``trusted`` is False).
    """
    if '://' not in filename and not osp.isfile(filename):
        raise ValueError(f'checkpoint={filename!r}: no such file')
    if trusted and '://' not in filename:
        return _unwrap(torch.load(filename, map_location='cpu',
                                  weights_only=False))
    try:
        ckpt = _load_checkpoint(filename, map_location='cpu')
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[-1][:200]
        raise ValueError(
            f'checkpoint={filename!r} does not load with weights_only=True '
            f'({first}); if it comes from a trusted source, re-save it with '
            f'`python tools/convert_checkpoint.py strip --trusted SRC DST`'
        ) from e
    return _unwrap(ckpt)


def is_torchvision_resnet(state_dict: Dict[str, torch.Tensor]) -> bool:
    """True if the keys are torchvision ResNet keys (``conv1.weight``,
    ``layer1.*`` and ``fc.weight`` at the top level, no ``backbone.``)."""
    return 'conv1.weight' in state_dict and 'fc.weight' in state_dict and \
        any(k.startswith('layer1.') for k in state_dict) and \
        not any(k.startswith('backbone.') for k in state_dict)


def torchvision_to_mmpretrain(state_dict: Dict[str, torch.Tensor]
                              ) -> 'OrderedDict[str, torch.Tensor]':
    """torchvision ResNet state dict -> mmpretrain ``ImageClassifier`` keys:
    ``fc.*`` -> ``head.fc.*``, everything else -> ``backbone.*``.

    Tensors are not copied. The result loads into mmpretrain's
    ``ImageClassifier`` with a ``ResNet`` backbone and a ``LinearClsHead``
    and into :class:`laud_mm.LAUDImageClassifier` (maskers reported missing
    and kept at their keep-biased initialisation).

    Raises:
        ValueError: if the keys are not a torchvision ResNet's.
    """
    if not is_torchvision_resnet(state_dict):
        some = sorted(state_dict)[:4]
        raise ValueError(f'not a torchvision ResNet state dict (expected '
                         f"'conv1.weight', 'layer1.*' and 'fc.weight' at the "
                         f'top level); first keys: {some}')
    out = OrderedDict()
    for k, v in state_dict.items():
        out[('head.' + k) if k.startswith('fc.') else ('backbone.' + k)] = v
    return out


def classifier_to_backbone(state_dict: Dict[str, torch.Tensor],
                           prefix: str = 'backbone.'
                           ) -> 'OrderedDict[str, torch.Tensor]':
    """Keep the keys under ``prefix`` (a classifier's backbone), stripped of
    it: a checkpoint for a bare backbone (``init_cfg=dict(type='Pretrained',
    checkpoint=...)`` without ``prefix``), maskers included.

    Raises:
        ValueError: if no key starts with ``prefix``.
    """
    out = OrderedDict((k[len(prefix):], v) for k, v in state_dict.items()
                      if k.startswith(prefix))
    if not out:
        raise ValueError(f'prefix={prefix!r}: no key of the checkpoint starts '
                         f'with it (first keys: {sorted(state_dict)[:4]})')
    return out


@CheckpointLoader.register_scheme(prefixes=TORCHVISION_CLS_SCHEME, force=True)
def load_torchvision_as_classifier(filename: str, map_location=None) -> dict:
    """mmengine checkpoint loader for ``torchvision-cls://<arch or file>``.

    ``torchvision-cls://resnet50`` reads torchvision's ImageNet weights the
    way ``torchvision://resnet50`` does (download or torch hub cache);
    ``torchvision-cls:///path/resnet50.pth`` / ``torchvision-cls://rel.pth``
    reads a local torchvision state dict.

    Returns:
        ``{'state_dict': <mmpretrain classifier keys>}``.

    Raises:
        ValueError: the weights are not a torchvision ResNet's.
    """
    name = filename[len(TORCHVISION_CLS_SCHEME):]
    if osp.isfile(name):
        ckpt = torch.load(name, map_location=map_location)
    else:
        ckpt = load_from_torchvision('torchvision://' + name, map_location)
    return {'state_dict': torchvision_to_mmpretrain(_unwrap(ckpt))}
