# LAUD-ResNet-50, spatial skipping (S = 4-4-2-1), ImageNet-1k fine-tuning from
# torchvision's static ResNet-50 with distillation from it (paper sec. 3.5,
# docs/method.md sec. 2). The objective, hooks and metrics come from
# ../_base_/laud_classification_runtime.py, the 100-epoch SGD schedule
# (batch 8 x 128, lr 0.08) from ../_base_/schedules/laud_imagenet_sgd_100e.py.
#
# Target rate: valid for 0.4 - 0.8. mmengine evaluates `target_rate` when the
# config is parsed, so change it with
#   --cfg-options model.sparsity_loss.target_rate=0.4
# or in a child config:
#   _base_ = ['./laud-r50-spatial-s4421_8xb128_in1k.py']
#   target_rate = 0.4
#   model = dict(sparsity_loss=dict(target_rate=target_rate))
#
# Weights (no conversion step needed): the student starts from
# 'torchvision-cls://resnet50' (laud_mm's mmengine checkpoint scheme: torchvision
# weights mapped to mmpretrain keys, backbone and fc; maskers keep their
# keep-biased init); the teacher loads 'torchvision://resnet50' (keys mapped on
# load). Offline: download resnet50-0676ba61.pth elsewhere and use
# 'torchvision-cls:///path/resnet50-0676ba61.pth' and the plain path.
_base_ = [
    'mmpretrain::_base_/models/resnet50.py',
    'mmpretrain::_base_/datasets/imagenet_bs64.py',
    '../_base_/schedules/laud_imagenet_sgd_100e.py',
    'mmpretrain::_base_/default_runtime.py',
    '../_base_/laud_classification_runtime.py',
]

target_rate = 0.5
student_init = 'torchvision-cls://resnet50'
teacher_checkpoint = 'torchvision://resnet50'

model = dict(
    type='laud_mm.LAUDImageClassifier',
    backbone=dict(
        _base_.laud_spatial_s4421,
        _delete_=True,
        type='laud_mm.LAUDResNet',
        depth=50,
        out_indices=(3, ),
        style='pytorch',
        frozen_stages=-1,
        norm_eval=False),
    sparsity_loss=dict(_base_.laud_sparsity_loss, target_rate=target_rate),
    # frozen static teacher: torchvision's ResNet-50 in mmpretrain's layout
    teacher=dict(config='mmpretrain::resnet/resnet50_8xb32_in1k.py',
                 checkpoint=teacher_checkpoint),
    distill_loss=_base_.laud_distill_loss,
    init_cfg=dict(type='Pretrained', checkpoint=student_init))

# data: data/imagenet in mmpretrain's layout (train/, val/, meta/train.txt,
# meta/val.txt), 128 images per GPU
train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader

custom_hooks = [_base_.laud_gumbel_hook]
val_evaluator = _base_.laud_evaluator
test_evaluator = val_evaluator
default_hooks = dict(_base_.laud_default_hooks,
                     checkpoint=_base_.laud_checkpoint_hook)
