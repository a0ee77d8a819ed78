"""Checkpoint files and key layouts shared by every family: reading a state
dict safely, the classifier -> backbone hand-off, and the ``revise_keys``
that map torchvision-style keys to mmpretrain's classifier layout.

Key layouts (mmpretrain ``ImageClassifier`` and
:class:`laud_mm.LAUDImageClassifier`): ``backbone.<backbone name>`` (plus
``backbone.<block>.masker.*`` for LAUD backbones), ``head.fc.*``; an mmdet
detector: ``backbone.<name>`` as well, so a classifier checkpoint loads
into a detector's backbone through ``init_cfg=dict(type='Pretrained',
prefix='backbone.', checkpoint=...)`` (mmengine strips the prefix and keeps
the masker weights).

Source: paper sec. 3.5 and 4.3 (LAUD models fine-tune from static
ImageNet weights; the ImageNet-trained LAUD backbone replaces the
detector's).
"""
import os.path as osp
import pickle
import re
from collections import OrderedDict
from typing import Dict, List, Tuple

import torch
from mmengine.runner.checkpoint import _load_checkpoint

#: ``revise_keys`` for :func:`mmengine.runner.load_checkpoint` that turn a
#: torchvision state dict into mmpretrain classifier keys and leave an
#: mmpretrain / mmengine Runner classifier checkpoint unchanged.
CLASSIFIER_REVISE_KEYS: List[Tuple[str, str]] = [
    (r'^module\.', ''),
    (r'^(?!(backbone|neck|head|data_preprocessor)\.)(?!fc\.)', 'backbone.'),
    (r'^fc\.', 'head.fc.'),
]


def unwrap_state_dict(checkpoint) -> 'OrderedDict[str, torch.Tensor]':
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
    allow-lists their non-tensor types, :mod:`laud_mm.compat.torch_load`).

    Args:
        filename: path or URL.
        trusted: unpickle a local file with ``weights_only=False`` (arbitrary
            code: only for files from a trusted source, e.g. Runner
            checkpoints saved without
            :class:`laud_mm.WeightsOnlyCheckpointHook`, which pickle
            ``getattr``).

    Raises:
        ValueError: ``filename`` is a missing local file, holds no tensors,
            or is refused by ``weights_only`` (and ``trusted`` is False).
    """
    if '://' not in filename and not osp.isfile(filename):
        raise ValueError(f'checkpoint={filename!r}: no such file')
    if trusted and '://' not in filename:
        return unwrap_state_dict(torch.load(filename, map_location='cpu',
                                  weights_only=False))
    try:
        ckpt = _load_checkpoint(filename, map_location='cpu')
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[-1][:200]
        raise ValueError(
            f'checkpoint={filename!r} does not load with weights_only=True '
            f'({first}); if it comes from a trusted source, re-save it with '
            f'`python tools/model_converters/convert_checkpoint.py strip --trusted SRC DST`'
        ) from e
    return unwrap_state_dict(ckpt)


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
