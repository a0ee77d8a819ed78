# LAUD-RegNetY-800MF, spatial skipping (S = 4-4-2-1), ImageNet-1k fine-tuning
# from torchvision's static RegNetY-800MF with distillation from it (paper
# sec. 4.2 RegNet results, sec. 3.5 objective; docs/method.md sec. 1-2).
# 8 GPUs x 128 = batch 1024, lr 0.08 (= 0.01 x 1024 / 128), SGD Nesterov,
# cosine, 100 epochs, wd 5e-5 (the authors' release).
#
# Target rate: 0.4 - 0.8; change with
#   --cfg-options model.sparsity_loss.target_rate=0.4
# Granularity 4-4-7-1 (also reported for 800MF):
#   --cfg-options model.backbone.granularity="(4,4,7,1)"
#
# Weights: torchvision's regnet_y_800mf state dict, mapped to laud_mm's keys on
# load by the 'torchvision-regnety://' checkpoint scheme
# (laud_mm/models/regnet/backbone.py: convert_torchvision_regnety):
# 'torchvision-regnety://regnet_y_800mf' downloads torchvision's weights
# (or reads torch hub's cache); offline, download regnet_y_800mf-*.pth
# elsewhere and use 'torchvision-regnety:///path/regnet_y_800mf-....pth' for
# both student_init and teacher_checkpoint. The maskers keep their
# keep-biased initialisation.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64.py',
    'mmpretrain::_base_/schedules/imagenet_bs256_coslr.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['laud_mm'], allow_failed_imports=False)

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
    backbone=dict(type='laud_mm.LAUDRegNetY', arch=arch, paradigm='spatial',
                  granularity=(4, 4, 2, 1), out_indices=(3, ),
                  norm_eval=False),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=1000,
              in_channels=final_width,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
              topk=(1, 5)),
    # alpha = 10, per-block bounds relaxing over the first third of training
    sparsity_loss=dict(type='laud_mm.SparsityLoss', target_rate=target_rate,
                       loss_weight=10.0, warmup_fraction=0.33,
                       block_bounds=True),
    # frozen static teacher: torchvision's RegNetY-800MF
    teacher=dict(config=static_model, checkpoint=teacher_checkpoint),
    distill_loss=dict(type='laud_mm.DistillationLoss', temperature=4.0,
                      loss_weight=0.5),
    init_cfg=dict(type='Pretrained', checkpoint=student_init))

train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.08, momentum=0.9, nesterov=True,
                   weight_decay=5e-5))
param_scheduler = dict(type='CosineAnnealingLR', T_max=100, by_epoch=True,
                       begin=0, end=100)
train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=1)
auto_scale_lr = dict(base_batch_size=1024)

# Gumbel temperature 5 -> 0.1, exponentially, every iteration
custom_hooks = [dict(type='laud_mm.GumbelTemperatureHook', tau0=5.0, tau1=0.1)]

val_evaluator = [
    dict(type='Accuracy', topk=(1, 5)),
    dict(type='laud_mm.BackboneLatencyMetric', hardware='v100'),
]
test_evaluator = val_evaluator
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3,
                    save_best='accuracy/top1', rule='greater'))
