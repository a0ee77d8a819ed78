"""Interpretability pictures of a LAUD model (paper sec. 4.4): where the
spatial gates of each stage keep computing on real images, and how often each
block (layer skipping) or its channel groups (channel skipping) are active
(:func:`laud_mm.analysis.visualization.visualize_masks`).

Usage:
    python tools/analysis_tools/visualize_masks.py CONFIG CHECKPOINT IMG_OR_DIR [...]
        [--out-dir DIR] [--max-images N] [--cfg-options k=v ...]

CHECKPOINT may be 'none' (the freshly initialised model: every gate keeps,
which is only useful to try the tool). Works for any config whose model has a
``laud_mm.LAUDResNet`` backbone (LAUD detectors and classifiers): the images
go through the config's own test pipeline (annotation loading removed) and
``model.test_step``.

Writes into ``--out-dir``:
- ``<image>_spatial_gates.png`` (spatial paradigm): the input image and, per
  stage, the fraction of the stage's blocks that compute each pixel, drawn
  over the image;
- ``block_activation.png``: per block, the mean mask density over the images
  with its spread, and the block's FLOPs ratio (computed / dense);
- ``block_activation.json``: the same numbers.
"""
import argparse
import sys

from mmengine.config import DictAction

from laud_mm.analysis.visualization import visualize_masks


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Draw the gates of a LAUD model on images')
    parser.add_argument('config')
    parser.add_argument('checkpoint', help="checkpoint, or 'none'")
    parser.add_argument('images', nargs='+', help='image files or dirs')
    parser.add_argument('--out-dir', default='mask_vis')
    parser.add_argument('--max-images', type=int, default=8)
    parser.add_argument('--max-overlays', type=int, default=4,
                        help='spatial overlays to draw (the chart uses all '
                        'images)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    visualize_masks(args.config, args.checkpoint, args.images,
                    out_dir=args.out_dir, max_images=args.max_images,
                    max_overlays=args.max_overlays,
                    cfg_options=args.cfg_options)
    return 0


if __name__ == '__main__':
    sys.exit(main())
