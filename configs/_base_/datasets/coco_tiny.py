# The real coco_tiny data set (../shared/data/coco_tiny: 80 train + 80 val
# COCO 2017 images with official boxes and masks) at a CPU-friendly scale.
# Demo configs pull these into their own keys with {{_base_.tiny_*}}, so they
# can sit beside a detector config that defines the COCO dataloaders.
tiny_data_root = '../shared/data/coco_tiny/'
tiny_scale = (320, 192)  # long side 320 px: ~3 s per batch of 2 on 2 cores
tiny_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=tiny_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
tiny_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=tiny_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor')),
]
tiny_train_dataloader = dict(
    batch_size=2, num_workers=2, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(type='CocoDataset', data_root=tiny_data_root,
                 ann_file='annotations/instances_train2017.json',
                 data_prefix=dict(img='train2017/'),
                 filter_cfg=dict(filter_empty_gt=True, min_size=32),
                 pipeline=tiny_train_pipeline))
tiny_val_dataloader = dict(
    batch_size=2, num_workers=2, persistent_workers=True, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='CocoDataset', data_root=tiny_data_root,
                 ann_file='annotations/instances_val2017.json',
                 data_prefix=dict(img='val2017/'), test_mode=True,
                 pipeline=tiny_test_pipeline))
tiny_val_evaluator = [
    dict(type='CocoMetric',
         ann_file=tiny_data_root + 'annotations/instances_val2017.json',
         metric='bbox', format_only=False),
    dict(type='laud_mm.BackboneLatencyMetric', hardware='v100'),
]

# ---- instance segmentation (Mask R-CNN, Mask2Former): box and mask AP
tiny_instance_val_evaluator = [
    dict(type='CocoMetric',
         ann_file=tiny_data_root + 'annotations/instances_val2017.json',
         metric=['bbox', 'segm'], format_only=False),
    dict(type='laud_mm.BackboneLatencyMetric', hardware='v100'),
]

# ---- DETR-style multi-scale training (DDQ-DETR), scaled down from mmdet's
# 480-800 short sides to 256-320 (long side <= 533)
tiny_detr_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomChoiceResize',
         scales=[(533, 256), (533, 288), (533, 320)], keep_ratio=True),
    dict(type='PackDetInputs'),
]
tiny_detr_train_dataloader = dict(
    batch_size=2, num_workers=2, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(type='CocoDataset', data_root=tiny_data_root,
                 ann_file='annotations/instances_train2017.json',
                 data_prefix=dict(img='train2017/'),
                 filter_cfg=dict(filter_empty_gt=False),
                 pipeline=tiny_detr_train_pipeline))

# ---- large scale jitter (Mask2Former), scaled down from 1024 to 320: the
# crops are padded to tiny_lsj_size by the model's BatchFixedSizePad
tiny_lsj_size = (320, 320)
tiny_lsj_train_pipeline = [
    dict(type='LoadImageFromFile', to_float32=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=tiny_lsj_size, ratio_range=(0.1, 2.0),
         resize_type='Resize', keep_ratio=True),
    dict(type='RandomCrop', crop_size=tiny_lsj_size, crop_type='absolute',
         recompute_bbox=True, allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-5, 1e-5), by_mask=True),
    dict(type='PackDetInputs'),
]
tiny_lsj_batch_augments = [
    dict(type='BatchFixedSizePad', size=tiny_lsj_size, img_pad_value=0,
         pad_mask=True, mask_pad_value=0, pad_seg=False),
]
tiny_lsj_train_dataloader = dict(
    batch_size=2, num_workers=2, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(type='CocoDataset', data_root=tiny_data_root,
                 ann_file='annotations/instances_train2017.json',
                 data_prefix=dict(img='train2017/'),
                 filter_cfg=dict(filter_empty_gt=True, min_size=32),
                 pipeline=tiny_lsj_train_pipeline))
