# Demo: LAUD-RegNetY-400MF, layer skipping (a skipped block skips its SE too),
# target rate 0.5, on ../shared/data/imagenette_subset (128 px, 2-core CPU),
# with the paper's objective CE + 10 x sparsity + 0.5 x 4^2 x KL(teacher ||
# student) and tau 5 -> 0.1 (paper sec. 3.5 / 4.2).
#
# No ImageNet weights offline: the teacher is a static RegNetY-400MF
# (paradigm=None) with teacher.checkpoint=None (random, a warning says so);
# give trained weights with
#   --cfg-options model.teacher.checkpoint=PATH load_from=PATH
# e.g. torchvision's regnet_y_400mf as
#   'torchvision-regnety:///path/regnet_y_400mf-....pth' (head: 1000 classes,
# so fine-tune a 10-class static run first, as the ResNet demo does).
# Spatial / channel variants: --cfg-options model.backbone.paradigm=spatial
#   "model.backbone.granularity=(4,4,2,1)" (or channel, (2,2,2,2)).
_base_ = ['./resnet50_static_imagenette.py']

arch = 'regnety_400mf'
target_rate = 0.5
static_model = dict(
    type='laud_mm.LAUDImageClassifier',
    backbone=dict(type='laud_mm.LAUDRegNetY', arch=arch, paradigm=None,
                  out_indices=(3, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=440,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
              topk=(1, 5)))
model = dict(
    backbone=dict(_delete_=True, type='laud_mm.LAUDRegNetY', arch=arch,
                  paradigm='layer', out_indices=(3, )),
    head=dict(in_channels=440),
    sparsity_loss=dict(_base_.laud_sparsity_loss, target_rate=target_rate),
    teacher=dict(config=static_model, checkpoint=None),
    distill_loss=_base_.laud_distill_loss)
custom_hooks = [_base_.laud_gumbel_hook]

max_epochs = 2
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=10),
    dict(type='CosineAnnealingLR', T_max=max_epochs, by_epoch=True, begin=0,
         end=max_epochs),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(checkpoint=dict(type='CheckpointHook',
                                     interval=max_epochs))
