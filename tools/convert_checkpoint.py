"""Convert checkpoints between torchvision, mmpretrain and mmdet layouts
(paper sec. 3.5 / 4.3: LAUD classifiers start from torchvision's static
ResNets; detectors start from the LAUD ImageNet backbone).

Usage:
    # torchvision ResNet -> mmpretrain classifier checkpoint
    # (backbone.* and head.fc.*; loads into mmpretrain's ImageClassifier and
    # laud_mm.LAUDImageClassifier, e.g. as model.init_cfg / teacher.checkpoint)
    python tools/convert_checkpoint.py tv2cls resnet50-0676ba61.pth out.pth
    python tools/convert_checkpoint.py tv2cls torchvision://resnet50 out.pth

    # LAUD (or any mmpretrain) classifier checkpoint -> backbone checkpoint
    # (keys without 'backbone.', maskers included; for loaders without a
    # prefix option). Not needed for mmdet configs:
    # init_cfg=dict(type='Pretrained', prefix='backbone.', checkpoint=CLS_CKPT)
    # loads the classifier checkpoint directly, masker weights kept.
    python tools/convert_checkpoint.py cls2backbone epoch_100.pth backbone.pth

    # any checkpoint -> weights only, keys unchanged (e.g. a Runner checkpoint
    # saved without laud_mm imported, which torch >= 2.6 refuses under
    # weights_only because it pickles getattr; --trusted unpickles it fully:
    # only for files from a trusted source)
    python tools/convert_checkpoint.py strip --trusted epoch_3.pth weights.pth

The output is ``{'state_dict': ..., 'meta': {'converted_from': ...,
'mode': ...}}`` with tensors only (loads under torch's ``weights_only``).
Without a network, ``torchvision://`` needs the file in torch hub's cache.

Raises (exit status 1, message on stderr): a missing input file, or input
keys that are not the expected layout (ValueError naming the file).
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch  # noqa: E402

import laud_mm  # noqa: E402,F401  (schemes, safe globals)
from laud_mm.models.layers.checkpoint import (  # noqa: E402
    classifier_to_backbone, load_state_dict_file)
from laud_mm.models.resnet.convert import torchvision_to_mmpretrain  # noqa: E402

MODES = ('tv2cls', 'cls2backbone', 'strip')


def convert(mode: str, src: str, dst: str, trusted: bool = False) -> int:
    """Convert ``src`` to ``dst``; return the number of tensors written.
    ``trusted``: unpickle ``src`` fully (``weights_only=False``).

    Raises:
        ValueError: unknown ``mode``, missing ``src`` or wrong key layout.
    """
    if mode not in MODES:
        raise ValueError(f'mode={mode!r} must be one of {MODES}')
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('mode', choices=MODES,
                        help='tv2cls: torchvision ResNet -> mmpretrain '
                        'classifier; cls2backbone: classifier -> backbone; '
                        'strip: weights only, keys unchanged')
    parser.add_argument('--trusted', action='store_true',
                        help='unpickle SRC with weights_only=False (only for '
                        'files from a trusted source)')
    parser.add_argument('src', help='input checkpoint (path or URL such as '
                        'torchvision://resnet50)')
    parser.add_argument('dst', help='output .pth path')
    args = parser.parse_args(argv)
    try:
        n = convert(args.mode, args.src, args.dst, trusted=args.trusted)
    except ValueError as e:
        print(f'convert_checkpoint: error: {e}', file=sys.stderr)
        return 1
    print(f'{args.mode}: wrote {n} tensors to {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
