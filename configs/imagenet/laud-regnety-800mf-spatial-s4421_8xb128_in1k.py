# LAUD-RegNetY-800MF, spatial skipping (S = 4-4-2-1), ImageNet-1k fine-tuning
# from torchvision's static RegNetY-800MF with distillation from it (paper
# sec. 4.3.2 RegNet results, sec. 3.5 objective; docs/method.md sec. 1-2).
# The objective, hooks and metrics come from
# ../_base_/laud_classification_runtime.py, the 100-epoch SGD schedule
# (batch 8 x 128, lr 0.08) from ../_base_/schedules/laud_imagenet_sgd_100e.py.
#
# Target rate: 0.4 - 0.8; change with
#   --cfg-options model.sparsity_loss.target_rate=0.4
# Granularity 4-4-7-1 (also reported for 800MF):
#   --cfg-options model.backbone.granularity="(4,4,7,1)"
#
# Weights: torchvision's regnet_y_800mf state dict, mapped to laud_mm's keys on
# load by the 'torchvision-regnety://' checkpoint scheme
# (laud_mm/models/regnet/convert.py):
# 'torchvision-regnety://regnet_y_800mf' downloads torchvision's weights
# (or reads torch hub's cache); offline, download regnet_y_800mf-*.pth
# elsewhere and use 'torchvision-regnety:///path/regnet_y_800mf-....pth' for
# both student_init and teacher_checkpoint. The maskers keep their
# keep-biased initialisation.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64.py',
    '../_base_/schedules/laud_imagenet_sgd_100e.py',
    'mmpretrain::_base_/default_runtime.py',
    '../_base_/laud_classification_runtime.py',
]

arch = 'regnety_800mf'
final_width = 784  # 400MF: 440
target_rate = 0.5
student_init = 'torchvision-regnety://regnet_y_800mf'
teacher_checkpoint = student_init

static_model = dict(
    type='ImageClassifier',
    backbone=dict(type='laud_mm.LAUDRegNetY', arch=arch, paradigm=None,
                  out_indices=(3, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=1000,
              in_channels=final_width,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
              topk=(1, 5)))

model = dict(
    type='laud_mm.LAUDImageClassifier',
    backbone=dict(_base_.laud_spatial_s4421, type='laud_mm.LAUDRegNetY',
                  arch=arch, out_indices=(3, ), norm_eval=False),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=1000,
              in_channels=final_width,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
              topk=(1, 5)),
    sparsity_loss=dict(_base_.laud_sparsity_loss, target_rate=target_rate),
    # frozen static teacher: torchvision's RegNetY-800MF
    teacher=dict(config=static_model, checkpoint=teacher_checkpoint),
    distill_loss=_base_.laud_distill_loss,
    init_cfg=dict(type='Pretrained', checkpoint=student_init))

train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader

custom_hooks = [_base_.laud_gumbel_hook]
val_evaluator = _base_.laud_evaluator
test_evaluator = val_evaluator
default_hooks = dict(_base_.laud_default_hooks,
                     checkpoint=_base_.laud_checkpoint_hook)
