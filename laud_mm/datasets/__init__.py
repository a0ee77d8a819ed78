"""Data sets and data conversion: COCO instance annotations as semantic
label maps (:mod:`.coco_semantic`) and the mmseg data set that reads them
(:mod:`.coco_semantic_dataset`).

``import laud_mm`` does not import this package (it imports mmseg): the
``laud_mm`` DATASETS registry imports it the first time a config names
``type='laud_mm.COCOSemanticDataset'``.
"""
from .coco_semantic import (IGNORE_INDEX, category_labels,
                            convert_coco_semantic, missing_label_maps,
                            semantic_label_map)
from .coco_semantic_dataset import COCOSemanticDataset

__all__ = ['IGNORE_INDEX', 'category_labels', 'convert_coco_semantic',
           'missing_label_maps', 'semantic_label_map', 'COCOSemanticDataset']
