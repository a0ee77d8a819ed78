# LAUD-ResNet-50, spatial skipping (S = 4-4-2-1), target rate 0.5, DDQ-DETR
# 4-scale on COCO (mmdet layout data/coco/), 12 epochs, AdamW lr 2e-4 (batch
# 8 x 2), backbone lr multiplier 0.1 (paper appendix B.3). Sparsity term
# (F_dyn / F_static - t)^2 with weight 1, tau by the weights route, hooks and
# evaluators from ../_base_/laud_detection_runtime.py (docs/method.md sec. 3).
_base_ = [
    'mmdet::ddq/ddq-detr-4scale_r50_8xb2-12e_coco.py',
    '../_base_/laud_detection_runtime.py',
]
# Backbone weights (docs/model_zoo.md, "Backbone weights"): a LAUD ImageNet
# checkpoint (configs/imagenet/, maskers included; the temperature stays
# at 0.1), e.g.
#   laud_weights = 'work_dirs/laud-r50-spatial-s4421_8xb128_in1k/epoch_100.pth'
# or None: static ImageNet weights (the backbone's init_cfg) with the
# temperature annealed 5 -> 0.1 while the gates leave the dense start.
laud_weights = None
target_rate = 0.5
model = dict(
    laud_weights=laud_weights,
    type='laud_mm.LAUDDetector',
    detector='DDQDETR',
    sparsity_loss=dict(_base_.laud_sparsity_loss, target_rate=target_rate),
    backbone=dict(_base_.laud_spatial_s4421, type='laud_mm.LAUDResNet'))
# mmdet's DDQ-DETR recipe, restated so that the LAUD settings are visible
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=0.0002, weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)}))
max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
val_evaluator = _base_.laud_bbox_evaluator
test_evaluator = val_evaluator
default_hooks = _base_.laud_default_hooks
