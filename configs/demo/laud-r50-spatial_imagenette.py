# Demo stage 1 (tools/run_demo.sh): LAUD-ResNet-50, spatial skipping
# (S = 4-4-2-1), target rate 0.5, trained on the 500 real ImageNet photos of
# ../shared/data/imagenette_subset (10 classes, 128 px crops, batch 16) with
# the paper's sparsity loss (alpha = 10, per-block bounds relaxing over the
# first third) and the Gumbel temperature annealed 5 -> 0.1 (paper sec. 3.5,
# appendix B.2; docs/method.md sec. 2). Its checkpoint, maskers included, is
# the backbone of the COCO demos (stage 2: `laud_weights`).
#
# Demo scale: no ImageNet weights can be fetched offline, so the network
# starts from scratch and trains 4 epochs (128 iterations): the gates reach
# the target rate; the accuracy is that of a few minutes of training.
# Distillation (the paper's third term) needs a trained static teacher: give
# one with --cfg-options model.teacher.config=... model.teacher.checkpoint=...
# (e.g. a run of resnet50_static_imagenette.py); the demo trains without.
_base_ = ['./resnet50_static_imagenette.py']

target_rate = 0.5
model = dict(
    backbone=dict(_base_.laud_spatial_s4421),
    sparsity_loss=dict(_base_.laud_sparsity_loss, target_rate=target_rate))
custom_hooks = [_base_.laud_gumbel_hook]

max_epochs = 4
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=10),
    dict(type='CosineAnnealingLR', T_max=max_epochs, by_epoch=True, begin=0,
         end=max_epochs),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(checkpoint=dict(type='CheckpointHook',
                                     interval=max_epochs))
