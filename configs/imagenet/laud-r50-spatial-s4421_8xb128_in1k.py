# LAUD-ResNet-50, spatial skipping (S = 4-4-2-1), ImageNet-1k fine-tuning from
# torchvision's static ResNet-50 with distillation from it (paper sec. 3.5,
# docs/method.md sec. 2). 8 GPUs x 128 images = batch 1024, lr 0.08
# (= 0.01 x 1024 / 128), SGD Nesterov, cosine, 100 epochs, wd 5e-5 (the
# authors' release; the paper's text gives 1e-4).
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
    'mmpretrain::_base_/schedules/imagenet_bs256_coslr.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['laud_mm'], allow_failed_imports=False)

target_rate = 0.5
student_init = 'torchvision-cls://resnet50'
teacher_checkpoint = 'torchvision://resnet50'

model = dict(
    type='laud_mm.LAUDImageClassifier',
    backbone=dict(
        _delete_=True,
        type='laud_mm.LAUDResNet',
        depth=50,
        paradigm='spatial',
        granularity=(4, 4, 2, 1),
        out_indices=(3, ),
        style='pytorch',
        frozen_stages=-1,
        norm_eval=False),
    # alpha = 10, per-block bounds relaxing over the first third of training
    sparsity_loss=dict(type='laud_mm.SparsityLoss', target_rate=target_rate,
                       loss_weight=10.0, warmup_fraction=0.33,
                       block_bounds=True),
    # frozen static teacher: torchvision's ResNet-50 in mmpretrain's layout
    teacher=dict(config='mmpretrain::resnet/resnet50_8xb32_in1k.py',
                 checkpoint=teacher_checkpoint),
    distill_loss=dict(type='laud_mm.DistillationLoss', temperature=4.0,
                      loss_weight=0.5),
    init_cfg=dict(type='Pretrained', checkpoint=student_init))

# data: data/imagenet in mmpretrain's layout (train/, val/, meta/train.txt,
# meta/val.txt), 128 images per GPU
train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader

# the paper's schedule: 100 epochs, SGD Nesterov 0.9, lr 0.01 x batch / 128,
# cosine decay
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.08, momentum=0.9, nesterov=True,
                   weight_decay=5e-5))
param_scheduler = dict(type='CosineAnnealingLR', T_max=100, by_epoch=True,
                       begin=0, end=100)
train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=1)
auto_scale_lr = dict(base_batch_size=1024)

# Gumbel temperature 5 -> 0.1, exponentially, every iteration
custom_hooks = [dict(type='laud_mm.GumbelTemperatureHook', tau0=5.0, tau1=0.1)]

# top-1 / top-5 with the activation rate and the predicted backbone latency
val_evaluator = [
    dict(type='Accuracy', topk=(1, 5)),
    dict(type='laud_mm.BackboneLatencyMetric', hardware='v100'),
]
test_evaluator = val_evaluator
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3,
                    save_best='accuracy/top1', rule='greater'))
