"""COCO instance annotations -> semantic label maps
(:mod:`laud_mm.datasets.coco_semantic`), on the real coco_tiny annotations,
checked against pycocotools' own decoding (``COCO.annToMask``):

- one uint8 PNG per image, of the image's size, values in {0, ..., 80, 255};
- class k is the k-th category by id (1 = person ... 80 = toothbrush, mmdet's
  CocoDataset order), 0 where no instance is;
- every crowd region is 255, every instance pixel outside crowd regions and
  outside smaller instances holds its category's label;
- a re-run keeps the files; ``COCOSemanticDataset`` writes what is missing
  and mmseg's pipeline reads the maps back unchanged.
"""
import os
import os.path as osp

import cv2
import numpy as np
import pytest

import laud_mm  # noqa: F401
from laud_mm.datasets.coco_semantic import (IGNORE_INDEX, category_labels,
                                            convert_coco_semantic,
                                            semantic_label_map)


@pytest.fixture(scope='module')
def converted(tmp_path_factory, coco_tiny):
    out = {}
    for split in ('train2017', 'val2017'):
        d = str(tmp_path_factory.mktemp(split))
        ann = osp.join(coco_tiny, 'annotations', f'instances_{split}.json')
        out[split] = (ann, d, convert_coco_semantic(ann, d))
    return out


@pytest.mark.parametrize('split', ['train2017', 'val2017'])
def test_label_maps_against_pycocotools(split, converted, coco_tiny):
    from mmdet.datasets.coco import CocoDataset
    from pycocotools.coco import COCO
    ann, out_dir, summary = converted[split]
    coco = COCO(ann)
    assert summary['classes'] == ['background'] + \
        list(CocoDataset.METAINFO['classes'])
    assert summary['written'] == summary['images'] == 80
    cat_ids = sorted(coco.getCatIds())
    seen, crowd_px = set(), 0
    for img_id in coco.getImgIds():
        info = coco.loadImgs(img_id)[0]
        path = osp.join(out_dir, info['file_name'].replace('.jpg', '.png'))
        label = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        assert label.dtype == np.uint8 and label.ndim == 2
        img = cv2.imread(osp.join(coco_tiny, split, info['file_name']))
        assert label.shape == img.shape[:2] == \
            (info['height'], info['width'])
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id, iscrowd=None))
        crowd = np.zeros(label.shape, bool)
        covered = np.zeros(label.shape, bool)
        for a in anns:
            m = coco.annToMask(a).astype(bool)
            covered |= m
            if a['iscrowd']:
                crowd |= m
        # crowd regions are ignored, pixels of no annotation background
        assert (label[crowd] == IGNORE_INDEX).all()
        assert (label[~covered] == 0).all()
        assert ((label == IGNORE_INDEX) == crowd).all()
        crowd_px += int(crowd.sum())
        # each instance keeps its label where no smaller instance and no
        # crowd region lies on it
        things = sorted((a for a in anns if not a['iscrowd']),
                        key=lambda a: a['area'])
        above = crowd.copy()
        for a in things:   # smallest first: painted last, on top
            m = coco.annToMask(a).astype(bool)
            own = m & ~above
            want = cat_ids.index(a['category_id']) + 1
            assert (label[own] == want).all(), (img_id, a['id'])
            above |= m
        seen |= set(np.unique(label).tolist())
    assert seen <= set(range(81)) | {IGNORE_INDEX}
    assert len(seen - {0, IGNORE_INDEX}) >= 70   # ~ every category occurs
    # coco_tiny has crowd annotations in both splits (11 val, 6 train)
    assert crowd_px > 0


def test_rerun_keeps_files_and_errors(converted, tmp_path):
    ann, out_dir, _ = converted['val2017']
    again = convert_coco_semantic(ann, out_dir)
    assert (again['written'], again['kept']) == (0, 80)
    with pytest.raises(FileNotFoundError, match='does not exist'):
        convert_coco_semantic(str(tmp_path / 'none.json'), str(tmp_path))
    with pytest.raises(ValueError, match='duplicate ids'):
        category_labels([dict(id=1, name='a'), dict(id=1, name='b')])
    with pytest.raises(KeyError, match='category_id=7'):
        semantic_label_map([dict(id=3, category_id=7, iscrowd=0, area=1.,
                                 segmentation=[[0, 0, 2, 0, 2, 2]])],
                           4, 4, {1: 1})


def test_dataset_writes_missing_maps_and_mmseg_reads_them(converted,
                                                          coco_tiny,
                                                          tmp_path):
    from mmengine.registry import DATASETS, init_default_scope
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    init_default_scope('mmseg')
    ann, ref_dir, _ = converted['val2017']
    out_dir = str(tmp_path / 'val2017')
    os.makedirs(out_dir)
    ds = DATASETS.build(dict(
        type='laud_mm.COCOSemanticDataset',
        data_prefix=dict(img_path=osp.join(coco_tiny, 'val2017'),
                         seg_map_path=out_dir),
        coco_ann_file=ann,
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='LoadAnnotations'), dict(type='PackSegInputs')]))
    assert len(ds) == 80 and len(os.listdir(out_dir)) == 80
    assert ds.metainfo['classes'][:2] == ('background', 'person')
    assert len(ds.metainfo['classes']) == 81
    sample = ds[0]
    name = osp.basename(sample['data_samples'].img_path)[:-4] + '.png'
    want = cv2.imread(osp.join(ref_dir, name), cv2.IMREAD_UNCHANGED)
    got = sample['data_samples'].gt_sem_seg.data[0].numpy()
    assert np.array_equal(got, want)
    with pytest.raises(ValueError, match='reduce_zero_label=True'):
        DATASETS.build(dict(type='laud_mm.COCOSemanticDataset',
                            reduce_zero_label=True))
