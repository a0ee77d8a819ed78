"""torchvision -> laud_mm checkpoint key mapping of LAUD-RegNetY.

**Checkpoint keys.** torchvision -> laud_mm (:func:`torchvision_regnety_key`,
:func:`convert_torchvision_regnety`)::

    stem.0.*                                  -> conv1.*
    stem.1.*                                  -> bn1.*
    trunk_output.block{s}.block{s}-{i}.proj.0.* -> layer{s}.{i}.downsample.0.*
    trunk_output.block{s}.block{s}-{i}.proj.1.* -> layer{s}.{i}.downsample.1.*
    trunk_output.block{s}.block{s}-{i}.f.a.0.*  -> layer{s}.{i}.conv1.*
    trunk_output.block{s}.block{s}-{i}.f.a.1.*  -> layer{s}.{i}.bn1.*
    trunk_output.block{s}.block{s}-{i}.f.b.0.*  -> layer{s}.{i}.conv2.*
    trunk_output.block{s}.block{s}-{i}.f.b.1.*  -> layer{s}.{i}.bn2.*
    trunk_output.block{s}.block{s}-{i}.f.se.fc1.* -> layer{s}.{i}.se.fc1.*
    trunk_output.block{s}.block{s}-{i}.f.se.fc2.* -> layer{s}.{i}.se.fc2.*
    trunk_output.block{s}.block{s}-{i}.f.c.0.*  -> layer{s}.{i}.conv3.*
    trunk_output.block{s}.block{s}-{i}.f.c.1.*  -> layer{s}.{i}.bn3.*
    fc.*                                      -> head.fc.* (classifier layout)

(s = 1..4, i = 0-based block index). The checkpoint scheme
``torchvision-regnety://<file or arch>`` (registered on import) loads a
torchvision RegNetY state dict in mmpretrain's classifier layout
(``backbone.*``, ``head.fc.*``): use it as a classifier's ``init_cfg``, a
teacher's ``checkpoint``, or with ``prefix='backbone.'`` for a bare backbone
(mmdet). The LAUD maskers are not in torchvision checkpoints: they stay at
their keep-biased initialisation (reported as missing keys).

Source: torchvision ``models/regnet.py`` (key names), mmengine
``CheckpointLoader`` schemes.
"""
import os.path as osp
import re
from collections import OrderedDict
from typing import Dict, Optional

import torch
from mmengine.runner.checkpoint import (CheckpointLoader, _load_checkpoint,
                                        load_from_torchvision)


TORCHVISION_REGNETY_SCHEME = 'torchvision-regnety://'

_TV_BLOCK = re.compile(r'^trunk_output\.block(\d+)\.block\1-(\d+)\.(.+)$')
_TV_PARTS = [('proj.0.', 'downsample.0.'), ('proj.1.', 'downsample.1.'),
             ('f.a.0.', 'conv1.'), ('f.a.1.', 'bn1.'), ('f.b.0.', 'conv2.'),
             ('f.b.1.', 'bn2.'), ('f.se.fc1.', 'se.fc1.'),
             ('f.se.fc2.', 'se.fc2.'), ('f.c.0.', 'conv3.'),
             ('f.c.1.', 'bn3.')]


def torchvision_regnety_key(key: str) -> Optional[str]:
    """laud_mm backbone key of one torchvision RegNetY key (see the module
    docstring's table); None for the classifier ``fc.*`` keys.

    Raises:
        ValueError: for a key that is not a torchvision RegNetY key.
    """
    if key.startswith('fc.'):
        return None
    if key.startswith('stem.0.'):
        return 'conv1.' + key[len('stem.0.'):]
    if key.startswith('stem.1.'):
        return 'bn1.' + key[len('stem.1.'):]
    m = _TV_BLOCK.match(key)
    if m:
        stage, idx, rest = m.groups()
        for src, dst in _TV_PARTS:
            if rest.startswith(src):
                return f'layer{stage}.{idx}.{dst}{rest[len(src):]}'
    raise ValueError(f'key={key!r} is not a torchvision RegNetY key')


def is_torchvision_regnety(state_dict: Dict[str, torch.Tensor]) -> bool:
    """True if the keys look like torchvision's RegNetY (``stem.0.weight``
    and ``trunk_output.*.f.se.*`` at the top level)."""
    return 'stem.0.weight' in state_dict and any(
        k.startswith('trunk_output.') and '.f.se.' in k for k in state_dict)


def convert_torchvision_regnety(state_dict: Dict[str, torch.Tensor],
                                layout: str = 'backbone'
                                ) -> 'OrderedDict[str, torch.Tensor]':
    """torchvision RegNetY state dict -> laud_mm keys (tensors not copied).

    Args:
        state_dict: ``torchvision.models.regnet_y_400mf().state_dict()`` or
            the like (a ``module.`` prefix is dropped).
        layout: 'backbone' (keys of :class:`LAUDRegNetY`; ``fc.*`` dropped)
            or 'classifier' (mmpretrain ``ImageClassifier`` /
            :class:`laud_mm.LAUDImageClassifier`: ``backbone.*`` and
            ``head.fc.*``).

    Returns:
        OrderedDict with the mapped keys (maskers absent).

    Raises:
        ValueError: unknown ``layout``, or keys that are not torchvision
            RegNetY's (names the first offending key).
    """
    if layout not in ('backbone', 'classifier'):
        raise ValueError(f"layout={layout!r} must be 'backbone' or "
                         f"'classifier'")
    sd = OrderedDict((re.sub(r'^module\.', '', k), v)
                     for k, v in state_dict.items())
    if not is_torchvision_regnety(sd):
        raise ValueError(f'not a torchvision RegNetY state dict (expected '
                         f"'stem.0.weight' and 'trunk_output.*.f.se.*'); "
                         f'first keys: {list(sd)[:4]}')
    out = OrderedDict()
    for k, v in sd.items():
        new = torchvision_regnety_key(k)
        if new is None:
            if layout == 'classifier':
                out['head.' + k] = v
            continue
        out[('backbone.' + new) if layout == 'classifier' else new] = v
    return out


@CheckpointLoader.register_scheme(prefixes=TORCHVISION_REGNETY_SCHEME,
                                  force=True)
def load_torchvision_regnety(filename: str, map_location=None) -> dict:
    """mmengine checkpoint loader for ``torchvision-regnety://<file|arch>``.

    ``torchvision-regnety:///path/regnet_y_800mf-xxx.pth`` reads a local
    torchvision state dict; ``torchvision-regnety://regnet_y_800mf`` reads
    torchvision's ImageNet weights like ``torchvision://`` (download or torch
    hub cache).

    Returns:
        ``{'state_dict': <classifier layout>}`` (``backbone.*``,
        ``head.fc.*``; use ``prefix='backbone.'`` for a bare backbone).

    Raises:
        ValueError: the weights are not a torchvision RegNetY's.
    """
    name = filename[len(TORCHVISION_REGNETY_SCHEME):]
    if osp.isfile(name):
        ckpt = _load_checkpoint(name, map_location=map_location)
    else:
        ckpt = load_from_torchvision('torchvision://' + name, map_location)
    if isinstance(ckpt, dict) and isinstance(ckpt.get('state_dict'), dict):
        ckpt = ckpt['state_dict']
    return {'state_dict': convert_torchvision_regnety(ckpt, 'classifier')}
