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
import logging
import os.path as osp
import pickle
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.logging import print_log
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


def check_checkpoint_file(filename: str, key: str = 'checkpoint') -> None:
    """Refuse a local file that is not a PyTorch checkpoint before anything
    unpickles it (torch's own errors for one - ``KeyError: 101`` for a text
    file, an ``IndexError`` or a ``weights_only`` message suggesting
    ``weights_only=False`` for random bytes - do not say what is wrong).
    Reads a few bytes: a ``torch.save`` zip archive (holding a
    ``data.pkl``) or a legacy pickle (protocol 2 - 5) passes. URLs
    (``://``) are left to their loaders.

    Args:
        filename: path (or URL).
        key: the config key / argument named in the message.

    Raises:
        ValueError: a missing file, or one that is neither (naming ``key``,
            the path and its first bytes).
    """
    import zipfile
    if '://' in str(filename):
        return
    if not osp.isfile(filename):
        raise ValueError(f'{key}={filename!r}: no such file')
    if zipfile.is_zipfile(filename):
        with zipfile.ZipFile(filename) as z:
            if any(n.endswith('data.pkl') for n in z.namelist()):
                return
        raise ValueError(f'{key}={filename!r} is a zip archive without the '
                         f"data.pkl of a torch.save checkpoint")
    with open(filename, 'rb') as f:
        head = f.read(2)
    if len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return
    raise ValueError(
        f'{key}={filename!r} is not a PyTorch checkpoint (neither a '
        f'torch.save zip archive nor a pickle; it starts with {head!r}): a '
        f'text file, a truncated download or another format?')


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
        ValueError: ``filename`` is a missing local file, not a PyTorch
            checkpoint (:func:`check_checkpoint_file`), holds no tensors,
            or is refused by ``weights_only`` (and ``trusted`` is False).
    """
    check_checkpoint_file(filename)
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


# ------------------------------------------------ paradigm and granularity
#: state-dict key of the backbone's recorded paradigm and granularity
PARADIGM_KEY = 'laud_paradigm'
_CODES = {None: 0, 'spatial': 1, 'channel': 2, 'layer': 3}
_NAMES = {v: k for k, v in _CODES.items()}


def encode_paradigm(paradigm: Optional[str],
                    granularity: Optional[Sequence[int]],
                    num_stages: int) -> torch.Tensor:
    """The ``laud_paradigm`` buffer: (1 + num_stages,) int64, the paradigm
    code (0 static, 1 spatial, 2 channel, 3 layer) then S or G per stage (0
    where there is none)."""
    gran = list(granularity) if granularity is not None else \
        [0] * num_stages
    return torch.tensor([_CODES[paradigm]] + gran, dtype=torch.int64)


def decode_paradigm(t: torch.Tensor) -> Tuple[Optional[str],
                                              Optional[Tuple[int, ...]]]:
    """(paradigm, granularity) of a ``laud_paradigm`` tensor.

    Raises:
        ValueError: if it is not a 1-D integer tensor with a known code.
    """
    if not isinstance(t, torch.Tensor) or t.dim() != 1 or t.numel() < 1 or \
            t.is_floating_point() or int(t[0]) not in _NAMES:
        raise ValueError(f'{PARADIGM_KEY}={t!r} is not a paradigm record')
    vals = [int(v) for v in t.tolist()]
    gran = tuple(vals[1:])
    return _NAMES[vals[0]], (gran if gran and any(gran) else None)


def record_paradigm(module: torch.nn.Module, owner: str,
                    paradigm: Optional[str],
                    granularity: Optional[Sequence[int]],
                    num_stages: int) -> None:
    """Record a backbone's paradigm and granularity in its state dict (a
    persistent buffer ``laud_paradigm``, :func:`encode_paradigm`) and check
    them when a state dict is loaded (a pre-hook run before the families'
    shape checks):

    - a checkpoint of another paradigm or granularity is refused, naming
      both (a spatial masker has the same tensors for every patch side S,
      and a channel or token masker may match another paradigm's keys, so
      shapes alone cannot tell);
    - a static checkpoint (paradigm None) loads into a dynamic model: LAUD
      models start from static weights (docs/method.md sec. 2), the maskers
      stay initialised;
    - a checkpoint without the record (a torchvision / mmdet / mmpretrain
      one, or a LAUD one saved before laud_mm recorded it) loads; if it
      holds masker weights of this backbone a warning says that their
      paradigm and granularity were not checked. The model's record is
      filled in, so strict loading works.

    Args:
        module: the backbone.
        owner: its class name, for the messages.
        paradigm, granularity: the backbone's.
        num_stages: stages (0 for a transformer: no granularity).
    """
    module.register_buffer(PARADIGM_KEY, encode_paradigm(
        paradigm, granularity, num_stages), persistent=True)

    def hook(state_dict, prefix, *args):
        key = prefix + PARADIGM_KEY
        own = getattr(module, PARADIGM_KEY)
        if key not in state_dict:
            if any(k.startswith(prefix) and '.masker.' in k
                   for k in state_dict):
                print_log(
                    f'{owner}: the checkpoint records no paradigm / '
                    f'granularity (key {key!r}; saved before laud_mm recorded '
                    f'them): its masker weights load unchecked into '
                    f'paradigm={paradigm!r}, granularity={granularity!r}',
                    logger='current', level=logging.WARNING)
            state_dict[key] = own.clone()
            return
        theirs = decode_paradigm(state_dict[key])
        if theirs[0] is None and paradigm is not None:
            state_dict[key] = own.clone()  # static weights, fresh maskers
            return
        if theirs != (paradigm, None if granularity is None
                      else tuple(granularity)):
            raise ValueError(
                f'{owner}(paradigm={paradigm!r}, granularity='
                f'{granularity!r}): the checkpoint was saved with paradigm='
                f'{theirs[0]!r}, granularity={theirs[1]!r} (key {key!r}); '
                f'build the model with those, or load another checkpoint')

    module._register_load_state_dict_pre_hook(hook)
