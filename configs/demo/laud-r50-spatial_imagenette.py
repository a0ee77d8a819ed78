# Demo step 2: LAUD-ResNet-50, spatial skipping (S = 4-4-2-1), target rate
# 0.5, on ../shared/data/imagenette_subset (128 px, 2-core CPU), with the
# paper's objective: CE + 10 x sparsity + 0.5 x 4^2 x KL(teacher || student)
# (paper sec. 3.5) and tau 5 -> 0.1.
#
# Teacher and initialisation: the static demo run (resnet50_static_imagenette.py),
# passed on the command line, e.g.
#   python tools/train.py configs/demo/laud-r50-spatial_imagenette.py \
#     --cfg-options load_from=work_dirs/resnet50_static_imagenette/epoch_4.pth \
#                   model.teacher.checkpoint=work_dirs/resnet50_static_imagenette/epoch_4.pth
# Without them (teacher.checkpoint=None, the default here) the student and the
# teacher are randomly initialised: the pipeline still runs end to end (a
# warning says so), but distillation then only regularises.
_base_ = ['./resnet50_static_imagenette.py']

target_rate = 0.5
teacher_checkpoint = None
model = dict(
    backbone=dict(_base_.laud_spatial_s4421),
    sparsity_loss=dict(_base_.laud_sparsity_loss, target_rate=target_rate),
    # the teacher is the static demo model (same architecture, no maskers)
    teacher=dict(config={{_base_.model}}, checkpoint=teacher_checkpoint),
    distill_loss=_base_.laud_distill_loss)
custom_hooks = [_base_.laud_gumbel_hook]

# 2 epochs of fine-tuning (64 iterations; the per-block sparsity bounds relax
# over the first third). The lr of the static run is kept: the paper's
# 0.01 x 16 / 128 would barely move the gates in 64 iterations.
max_epochs = 2
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=10),
    dict(type='CosineAnnealingLR', T_max=max_epochs, by_epoch=True, begin=0,
         end=max_epochs),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(checkpoint=dict(type='CheckpointHook',
                                     interval=max_epochs))
