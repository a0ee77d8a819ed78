"""COCO instance annotations -> semantic label maps in mmseg's layout.

Each image of a COCO instances file becomes one single-channel PNG (uint8,
same height and width as the image, same file name with ``.png``) whose
pixels hold

- 0 for background (no object),
- 1 ... K for the K thing categories, in the order of their COCO category
  id (COCO: 1 = person ... 80 = toothbrush, the order of mmdet's
  ``CocoDataset`` classes),
- ``ignore_index`` (255) inside crowd regions (``iscrowd=1``: a group of
  objects outlined as one region, not a clean instance mask).

Instances are painted from the largest to the smallest mask area (COCO's
``area`` field), so a small object lying on a larger one keeps its label;
crowd regions are painted last and override any instance under them
(pixels in a crowd region are ambiguous, and mmseg's losses and
``IoUMetric`` skip ``ignore_index``).

mmseg reads the result with ``LoadAnnotations`` (``reduce_zero_label=False``:
background is class 0 of K + 1) through
:class:`laud_mm.datasets.COCOSemanticDataset`, or any ``BaseSegDataset``
with ``img_suffix='.jpg', seg_map_suffix='.png'``.

Source: COCO's annotation format (Lin et al. 2014; polygons, compressed and
uncompressed RLE, ``iscrowd``), decoded with ``pycocotools.mask``; mmseg's
dataset layout (images and ``.png`` label maps with the same stem).
Command line: ``tools/dataset_converters/coco_semantic.py``.
"""
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

#: label of pixels in crowd regions (mmseg's default ``ignore_index``)
IGNORE_INDEX = 255


def load_coco(ann_file: str) -> dict:
    """Read a COCO instances json.

    Raises:
        FileNotFoundError: ``ann_file`` does not exist.
        ValueError: it lacks ``images``, ``annotations`` or ``categories``
            (names the file and the key).
    """
    if not osp.isfile(ann_file):
        raise FileNotFoundError(f'COCO annotation file {ann_file!r} does not '
                                f'exist')
    with open(ann_file) as f:
        coco = json.load(f)
    for key in ('images', 'annotations', 'categories'):
        if key not in coco:
            raise ValueError(f'{ann_file!r} is not a COCO instances file: no '
                             f'{key!r} entry')
    return coco


def category_labels(categories: Sequence[dict]
                    ) -> Tuple[Dict[int, int], List[str]]:
    """Label of each COCO category: 1 ... K in ascending category id.

    Args:
        categories: the json's ``categories`` (dicts with ``id``, ``name``).

    Returns:
        (category id -> label, class names with 'background' first).

    Raises:
        ValueError: duplicate ids, or more than 254 categories (the labels
            would reach the ignore index 255 of a uint8 map).
    """
    cats = sorted(categories, key=lambda c: c['id'])
    ids = [c['id'] for c in cats]
    if len(set(ids)) != len(ids):
        raise ValueError(f'COCO categories have duplicate ids: {ids}')
    if len(cats) >= IGNORE_INDEX:
        raise ValueError(f'{len(cats)} categories do not fit a uint8 label '
                         f'map below the ignore index {IGNORE_INDEX}')
    return ({c['id']: i + 1 for i, c in enumerate(cats)},
            ['background'] + [c['name'] for c in cats])


def segmentation_mask(segmentation, height: int, width: int) -> np.ndarray:
    """(H, W) uint8 0/1 mask of one COCO ``segmentation`` entry.

    Args:
        segmentation: polygons (list of [x0, y0, x1, y1, ...]), an
            uncompressed RLE (``counts`` a list) or a compressed RLE.
        height, width: the image size, pixels.

    Raises:
        ValueError: an RLE of another size than the image.
    """
    from pycocotools import mask as mask_utils
    if isinstance(segmentation, list):
        rle = mask_utils.merge(
            mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get('counts'), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    if tuple(rle['size']) != (height, width):
        raise ValueError(f'RLE of size {tuple(rle["size"])} on an image of '
                         f'size {(height, width)}')
    return mask_utils.decode(rle)


def semantic_label_map(annotations: Sequence[dict], height: int, width: int,
                       cat_to_label: Dict[int, int],
                       ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Semantic label map of one image from its instance annotations.

    Args:
        annotations: the image's COCO annotations (``segmentation``,
            ``category_id``, ``iscrowd``, ``area``).
        height, width: image size, pixels.
        cat_to_label: category id -> label (:func:`category_labels`).
        ignore_index: label of crowd regions.

    Returns:
        (H, W) uint8: 0 background, the instance's label where an instance
        is (larger instances first, smaller ones on top), ``ignore_index``
        in crowd regions (painted last).

    Raises:
        KeyError: an annotation of a category missing from
            ``cat_to_label`` (names the category id).
    """
    out = np.zeros((height, width), dtype=np.uint8)
    things = sorted((a for a in annotations if not a.get('iscrowd', 0)),
                    key=lambda a: -float(a.get('area', 0.)))
    crowds = [a for a in annotations if a.get('iscrowd', 0)]
    for a in things + crowds:
        if a['category_id'] not in cat_to_label:
            raise KeyError(f'annotation {a.get("id")} has category_id='
                           f'{a["category_id"]}, not in the categories')
        m = segmentation_mask(a['segmentation'], height, width).astype(bool)
        out[m] = ignore_index if a.get('iscrowd', 0) else \
            cat_to_label[a['category_id']]
    return out


def label_map_path(out_dir: str, file_name: str) -> str:
    """Where the label map of image ``file_name`` goes:
    ``out_dir/<stem>.png``."""
    return osp.join(out_dir, osp.splitext(osp.basename(file_name))[0] + '.png')


def convert_coco_semantic(ann_file: str, out_dir: str,
                          overwrite: bool = False,
                          ignore_index: int = IGNORE_INDEX,
                          expected_classes: Optional[Sequence[str]] = None
                          ) -> dict:
    """Write the semantic label map of every image of a COCO instances file.

    Files are written atomically (a temporary name, then ``os.replace``),
    so concurrent conversions (several ranks) and interrupted runs never
    leave a truncated PNG behind.

    Args:
        ann_file: COCO instances json.
        out_dir: directory of the ``.png`` label maps (created).
        overwrite: rewrite label maps that exist already (default: keep
            them).
        ignore_index: label of crowd regions (255).
        expected_classes: if given, the class names ('background' first)
            the categories must give (e.g. a dataset's METAINFO).

    Returns:
        dict with 'classes' (names, 'background' first), 'images' (count),
        'written', 'kept' (label maps written / already there), 'out_dir'.

    Raises:
        FileNotFoundError, ValueError: see :func:`load_coco`,
            :func:`category_labels`; a category list other than
            ``expected_classes`` (names ``ann_file``).
    """
    import cv2
    coco = load_coco(ann_file)
    cat_to_label, classes = category_labels(coco['categories'])
    if expected_classes is not None and \
            list(expected_classes) != list(classes):
        raise ValueError(
            f'{ann_file!r}: its categories give the classes {classes[:4]}... '
            f'({len(classes)}), expected {list(expected_classes)[:4]}... '
            f'({len(expected_classes)})')
    by_image: Dict[int, List[dict]] = {}
    for a in coco['annotations']:
        by_image.setdefault(a['image_id'], []).append(a)
    os.makedirs(out_dir, exist_ok=True)
    written = kept = 0
    for img in coco['images']:
        path = label_map_path(out_dir, img['file_name'])
        if not overwrite and osp.isfile(path):
            kept += 1
            continue
        label = semantic_label_map(by_image.get(img['id'], []),
                                   int(img['height']), int(img['width']),
                                   cat_to_label, ignore_index)
        tmp = f'{path}.{os.getpid()}.tmp.png'
        if not cv2.imwrite(tmp, label):
            raise OSError(f'could not write {tmp!r}')
        os.replace(tmp, path)
        written += 1
    return dict(classes=classes, images=len(coco['images']),
                written=written, kept=kept, out_dir=out_dir)


def missing_label_maps(ann_file: str, out_dir: str) -> List[str]:
    """File names of the images of ``ann_file`` whose label map is not in
    ``out_dir``."""
    coco = load_coco(ann_file)
    return [img['file_name'] for img in coco['images']
            if not osp.isfile(label_map_path(out_dir, img['file_name']))]
