# LAUD-ResNet-50, spatial skipping (S = 4-4-2-1), target rate 0.5,
# Mask2Former instance segmentation on COCO (mmdet layout data/coco/): large
# scale jitter at 1024 x 1024, 50 epochs (368750 iterations at batch 8 x 2,
# mmdet's schedule), AdamW 1e-4, backbone lr multiplier 0.1 (paper appendix
# B.3). Sparsity term (F_dyn / F_static - t)^2 with weight 1, tau fixed at
# 0.1, hooks and evaluators (box and mask AP + latency) from
# ../_base_/laud_detection_runtime.py (docs/method.md sec. 3).
_base_ = [
    'mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco.py',
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
    detector='Mask2Former',
    sparsity_loss=dict(_base_.laud_sparsity_loss, target_rate=target_rate),
    backbone=dict(_base_.laud_spatial_s4421, type='laud_mm.LAUDResNet'))
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1,
                                                     decay_mult=1.0)}))
val_evaluator = _base_.laud_instance_evaluator
test_evaluator = val_evaluator
default_hooks = _base_.laud_default_hooks
