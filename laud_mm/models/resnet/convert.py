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
import os
import os.path as osp
from collections import OrderedDict
from typing import Dict

import torch
from mmengine.runner.checkpoint import CheckpointLoader, load_from_torchvision

from ..layers.checkpoint import (classifier_to_backbone,
                                 load_state_dict_file, unwrap_state_dict)

TORCHVISION_CLS_SCHEME = 'torchvision-cls://'


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
    return {'state_dict': torchvision_to_mmpretrain(unwrap_state_dict(ckpt))}


#: modes of :func:`convert_checkpoint`
CONVERT_MODES = ('tv2cls', 'cls2backbone', 'strip')


def convert_checkpoint(mode: str, src: str, dst: str,
                       trusted: bool = False) -> int:
    """Convert the checkpoint ``src`` and save it to ``dst`` as
    ``{'state_dict': ..., 'meta': {'converted_from': src, 'mode': mode}}``
    with tensors only (loads under torch's ``weights_only``).

    Modes: 'tv2cls' torchvision ResNet -> mmpretrain classifier
    (:func:`torchvision_to_mmpretrain`); 'cls2backbone' classifier ->
    backbone keys (:func:`~laud_mm.models.layers.checkpoint.
    classifier_to_backbone`); 'strip' weights only, keys unchanged. Command
    line: ``tools/model_converters/convert_checkpoint.py``.

    Args:
        mode: one of :data:`CONVERT_MODES`.
        src: input checkpoint (path or URL such as ``torchvision://resnet50``).
        dst: output .pth path (its directory is created).
        trusted: unpickle ``src`` fully (``weights_only=False``; only for
            files from a trusted source).

    Returns:
        the number of tensors written.

    Raises:
        ValueError: unknown ``mode``, missing ``src`` or wrong key layout
            (names the file).
    """
    if mode not in CONVERT_MODES:
        raise ValueError(f'mode={mode!r} must be one of {CONVERT_MODES}')
    sd = load_state_dict_file(src, trusted=trusted)
    try:
        if mode == 'tv2cls':
            out = torchvision_to_mmpretrain(sd)
        elif mode == 'cls2backbone':
            out = classifier_to_backbone(sd)
        else:
            out = sd
    except ValueError as e:
        raise ValueError(f'{src}: {e}') from e
    os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    torch.save({'state_dict': out,
                'meta': {'converted_from': src, 'mode': mode}}, dst)
    return len(out)
