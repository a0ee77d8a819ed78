"""Convert checkpoints between torchvision, mmpretrain and mmdet layouts
(paper sec. 3.5 / 4.3: LAUD classifiers start from torchvision's static
ResNets; detectors start from the LAUD ImageNet backbone;
:func:`laud_mm.models.resnet.convert.convert_checkpoint`).

Usage:
    # torchvision ResNet -> mmpretrain classifier checkpoint
    # (backbone.* and head.fc.*; loads into mmpretrain's ImageClassifier and
    # laud_mm.LAUDImageClassifier, e.g. as model.init_cfg / teacher.checkpoint)
    python tools/model_converters/convert_checkpoint.py tv2cls resnet50-0676ba61.pth out.pth
    python tools/model_converters/convert_checkpoint.py tv2cls torchvision://resnet50 out.pth

    # LAUD (or any mmpretrain) classifier checkpoint -> backbone checkpoint
    # (keys without 'backbone.', maskers included; for loaders without a
    # prefix option). Not needed for mmdet configs:
    # init_cfg=dict(type='Pretrained', prefix='backbone.', checkpoint=CLS_CKPT)
    # loads the classifier checkpoint directly, masker weights kept.
    python tools/model_converters/convert_checkpoint.py cls2backbone epoch_100.pth backbone.pth

    # any checkpoint -> weights only, keys unchanged (e.g. a Runner checkpoint
    # saved without laud_mm imported, which torch >= 2.6 refuses under
    # weights_only because it pickles getattr; --trusted unpickles it fully:
    # only for files from a trusted source)
    python tools/model_converters/convert_checkpoint.py strip --trusted epoch_3.pth weights.pth

The output is ``{'state_dict': ..., 'meta': {'converted_from': ...,
'mode': ...}}`` with tensors only (loads under torch's ``weights_only``).
Without a network, ``torchvision://`` needs the file in torch hub's cache.

Exit status 1 with the message on stderr: a missing input file, or input
keys that are not the expected layout (the message names the file).
"""
import argparse
import sys

import laud_mm  # noqa: F401  (checkpoint schemes, weights_only allow-list)
from laud_mm.models.resnet.convert import CONVERT_MODES, convert_checkpoint


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('mode', choices=CONVERT_MODES,
                        help='tv2cls: torchvision ResNet -> mmpretrain '
                        'classifier; cls2backbone: classifier -> backbone; '
                        'strip: weights only, keys unchanged')
    parser.add_argument('--trusted', action='store_true',
                        help='unpickle SRC with weights_only=False (only for '
                        'files from a trusted source)')
    parser.add_argument('src', help='input checkpoint (path or URL such as '
                        'torchvision://resnet50)')
    parser.add_argument('dst', help='output .pth path')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        n = convert_checkpoint(args.mode, args.src, args.dst,
                               trusted=args.trusted)
    except ValueError as e:
        print(f'convert_checkpoint: error: {e}', file=sys.stderr)
        return 1
    print(f'{args.mode}: wrote {n} tensors to {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
