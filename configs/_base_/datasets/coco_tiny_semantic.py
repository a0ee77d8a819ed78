# The real coco_tiny images (../shared/data/coco_tiny: 80 train + 80 val COCO
# 2017 images) as a semantic segmentation set: background + the 80 COCO thing
# classes, crowd regions ignored (255). The label maps are written into
# work_dirs/coco_tiny_semantic/ (never committed) by
# laud_mm.COCOSemanticDataset the first time it finds them missing (the same
# conversion as tools/dataset_converters/coco_semantic.py). Sized for a
# 2-core CPU: test images at short side 192 px, 128 x 128 training crops
# (mmseg's ADE20K recipe at 512 px scaled down).
# Configs pull these into their own keys with {{_base_.tiny_sem_*}} (the
# dataloaders carry _delete_ so nothing of an upstream recipe's data set
# remains).
tiny_sem_data_root = '../shared/data/coco_tiny/'
tiny_sem_label_root = 'work_dirs/coco_tiny_semantic/'
tiny_sem_num_classes = 81
tiny_sem_scale = (320, 192)   # Resize scale (long, short), keep_ratio
tiny_sem_crop = (128, 128)    # training crops (H, W)
tiny_sem_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=tiny_sem_scale, ratio_range=(0.75, 1.25),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=tiny_sem_crop, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
tiny_sem_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=tiny_sem_scale, keep_ratio=True),
    # annotations after Resize: the metric compares at the original size
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]

tiny_sem_train_dataloader = dict(
    _delete_=True,
    batch_size=4, num_workers=2, persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type='laud_mm.COCOSemanticDataset', data_root=None,
        data_prefix=dict(img_path=tiny_sem_data_root + 'train2017',
                         seg_map_path=tiny_sem_label_root + 'train2017'),
        coco_ann_file=tiny_sem_data_root +
        'annotations/instances_train2017.json',
        pipeline=tiny_sem_train_pipeline))
tiny_sem_val_dataloader = dict(
    _delete_=True,
    batch_size=1, num_workers=2, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='laud_mm.COCOSemanticDataset', data_root=None,
        data_prefix=dict(img_path=tiny_sem_data_root + 'val2017',
                         seg_map_path=tiny_sem_label_root + 'val2017'),
        coco_ann_file=tiny_sem_data_root +
        'annotations/instances_val2017.json',
        pipeline=tiny_sem_test_pipeline))
