# Demo step 1: the static ResNet-50 (laud_mm.LAUDResNet, paradigm=None) on the
# 500 + 200 real ImageNet photos of ../shared/data/imagenette_subset (10
# classes), sized for a 2-core CPU: 128 px crops, batch 16, 3 epochs from
# scratch. No ImageNet weights can be fetched offline, so this short static
# run *is* the teacher (and the initialisation) of the LAUD demos
# (laud-r50-{spatial,channel,layer}_imagenette.py), as torchvision's ResNet-50
# is for the ImageNet configs. Expect a low top-1: 3 epochs on 500 images.
# Run from the repository root (data_root is relative to it).
_base_ = [
    'mmpretrain::_base_/default_runtime.py',
    '../_base_/laud_classification_runtime.py',
]

data_root = '../shared/data/imagenette_subset'
crop = 128
num_classes = 10

model = dict(
    type='laud_mm.LAUDImageClassifier',
    backbone=dict(type='laud_mm.LAUDResNet', depth=50, paradigm=None,
                  out_indices=(3, ), style='pytorch', frozen_stages=-1,
                  norm_eval=False),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=num_classes, in_channels=2048,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
              topk=(1, 5)))

data_preprocessor = dict(num_classes=num_classes,
                         mean=[123.675, 116.28, 103.53],
                         std=[58.395, 57.12, 57.375], to_rgb=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),  # 16 grayscale images load as 3-channel
    dict(type='RandomResizedCrop', scale=crop),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=crop * 8 // 7, edge='short'),
    dict(type='CenterCrop', crop_size=crop),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=16, num_workers=2, persistent_workers=True,
    dataset=dict(type='CustomDataset', data_root=data_root,
                 ann_file='meta/train.txt', data_prefix='train',
                 pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=25, num_workers=2, persistent_workers=True,
    dataset=dict(type='CustomDataset', data_root=data_root,
                 ann_file='meta/val.txt', data_prefix='val',
                 pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
test_dataloader = val_dataloader
val_evaluator = _base_.laud_evaluator
test_evaluator = val_evaluator

# from scratch: a larger lr than the fine-tuning rule 0.01 x batch / 128
max_epochs = 3
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.05, momentum=0.9, nesterov=True,
                   weight_decay=1e-4),
    clip_grad=dict(max_norm=10.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=30),
    dict(type='CosineAnnealingLR', T_max=max_epochs, by_epoch=True, begin=0,
         end=max_epochs),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict()
test_cfg = dict()
# no maskers here, so no Gumbel temperature hook (the LAUD demos add it)
default_hooks = dict(_base_.laud_default_hooks,
                     logger=dict(type='laud_mm.MainProcessLoggerHook',
                                 interval=8),
                     checkpoint=dict(type='CheckpointHook',
                                     interval=max_epochs))
randomness = dict(seed=0)
