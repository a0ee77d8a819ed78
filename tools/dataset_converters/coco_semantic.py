"""COCO instance annotations -> semantic label maps in mmseg's layout
(background 0, the 80 thing classes 1-80 in category-id order, crowd regions
255), one ``.png`` per image beside nothing else: the images stay where they
are (:func:`laud_mm.datasets.coco_semantic.convert_coco_semantic`).

Usage:
    python tools/dataset_converters/coco_semantic.py ANN_FILE OUT_DIR \
        [--overwrite]

Example (the segmentation demo's data; the demo's dataset also runs this
itself when the label maps are missing):
    python tools/dataset_converters/coco_semantic.py \\
        ../shared/data/coco_tiny/annotations/instances_val2017.json \\
        work_dirs/coco_tiny_semantic/val2017
"""
import argparse
import sys

from laud_mm.datasets.coco_semantic import convert_coco_semantic


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='COCO instance annotations to semantic label maps')
    parser.add_argument('ann_file', help='COCO instances json')
    parser.add_argument('out_dir', help='directory of the .png label maps')
    parser.add_argument('--overwrite', action='store_true',
                        help='rewrite label maps that exist already')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    r = convert_coco_semantic(args.ann_file, args.out_dir,
                              overwrite=args.overwrite)
    print(f'{r["images"]} images: {r["written"]} label maps written, '
          f'{r["kept"]} kept, in {r["out_dir"]} ({len(r["classes"])} classes '
          f'incl. background; crowd regions 255)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
