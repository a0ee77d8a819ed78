"""COCO thing classes as a semantic segmentation data set for mmseg: the
COCO images with the label maps of :mod:`laud_mm.datasets.coco_semantic`
(background + 80 thing classes, crowd regions ignored).

Source: COCO (Lin et al. 2014) instance annotations; mmseg's
``BaseSegDataset`` (images and ``.png`` label maps with the same stem).
"""
import os.path as osp
from typing import Optional

from mmdet.datasets.coco import CocoDataset
from mmengine.logging import MMLogger
from mmseg.datasets import BaseSegDataset

from ..registry import DATASETS
from .coco_semantic import (IGNORE_INDEX, convert_coco_semantic,
                            missing_label_maps)


@DATASETS.register_module()
class COCOSemanticDataset(BaseSegDataset):
    """COCO images with semantic label maps: class 0 'background', classes
    1-80 the COCO thing categories in category-id order (mmdet's
    ``CocoDataset`` names), 255 ignored (crowd regions).

    Args:
        coco_ann_file: optional COCO instances json of the images. When
            given, label maps missing from ``data_prefix['seg_map_path']``
            are written there first (:func:`~laud_mm.datasets.coco_semantic.
            convert_coco_semantic`, logged), so a config can name a work
            directory that a fresh clone does not have yet. Relative to
            the working directory (not to ``data_root``).
        **kwargs: mmseg ``BaseSegDataset`` arguments (``img_suffix='.jpg'``,
            ``seg_map_suffix='.png'``, ``reduce_zero_label=False``: the
            background is a class).

    Raises:
        ValueError: ``coco_ann_file`` whose categories are not COCO's 80
            (names the key and value), ``reduce_zero_label=True``, or
            ``ignore_index`` other than 255 (the label maps hold 255);
            ``coco_ann_file`` given without ``data_prefix['seg_map_path']``.
        FileNotFoundError: ``coco_ann_file`` does not exist.
    """

    METAINFO = dict(classes=('background',) +
                    tuple(CocoDataset.METAINFO['classes']))

    def __init__(self, coco_ann_file: Optional[str] = None, **kwargs):
        if kwargs.get('reduce_zero_label', False):
            raise ValueError('COCOSemanticDataset: reduce_zero_label=True '
                             "would drop class 0 ('background'); leave it "
                             'False')
        if kwargs.get('ignore_index', IGNORE_INDEX) != IGNORE_INDEX:
            raise ValueError(f'COCOSemanticDataset: ignore_index='
                             f'{kwargs["ignore_index"]!r}: the label maps '
                             f'mark crowd regions with {IGNORE_INDEX}')
        if coco_ann_file is not None and not osp.isfile(coco_ann_file):
            raise FileNotFoundError(f'COCOSemanticDataset: coco_ann_file='
                                    f'{coco_ann_file!r}: no such file')
        self.coco_ann_file = coco_ann_file
        super().__init__(**kwargs)

    def load_data_list(self):
        """Write missing label maps (``coco_ann_file``), then mmseg's list
        of (image, label map) pairs."""
        if self.coco_ann_file is not None:
            out_dir = self.data_prefix.get('seg_map_path')
            if not out_dir:
                raise ValueError("COCOSemanticDataset: coco_ann_file is set "
                                 "but data_prefix['seg_map_path'] is not")
            missing = missing_label_maps(self.coco_ann_file, out_dir)
            if missing:
                summary = convert_coco_semantic(
                    self.coco_ann_file, out_dir,
                    expected_classes=self.METAINFO['classes'])
                MMLogger.get_current_instance().info(
                    f'COCOSemanticDataset: wrote {summary["written"]} label '
                    f'maps of {self.coco_ann_file} to {out_dir} '
                    f'({summary["kept"]} were there)')
        return super().load_data_list()
