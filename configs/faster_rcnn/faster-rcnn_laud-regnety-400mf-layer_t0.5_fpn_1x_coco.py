# LAUD-RegNetY-400MF, layer skipping (skips the block's SE too), target 0.5,
# Faster R-CNN FPN 1x on COCO. Backbone lr multiplier 0.5; sparsity term,
# tau by the weights route, hooks and evaluators from ../_base_/laud_detection_runtime.py
# (paper sec. 4.5, docs/method.md sec. 3). The FPN reads the stage outputs of widths
# 48 / 104 / 208 / 440 (LAUDRegNetY.out_channels). RGB input normalisation
# of the faster-rcnn_r50 base = torchvision's, which the RegNetY weights expect.
_base_ = [
    'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
    '../_base_/laud_detection_runtime.py',
]
# Backbone weights (docs/model_zoo.md, "Backbone weights"): a LAUD ImageNet
# checkpoint (configs/imagenet/, maskers included; the temperature stays
# at 0.1), e.g.
#   laud_weights = 'work_dirs/laud-regnety-400mf-layer_8xb128_in1k/epoch_100.pth'
# or None: static ImageNet weights (the backbone's init_cfg) with the
# temperature annealed 5 -> 0.1 while the gates leave the dense start.
laud_weights = None
target_rate = 0.5
model = dict(
    laud_weights=laud_weights,
    type='laud_mm.LAUDDetector',
    detector='FasterRCNN',
    sparsity_loss=dict(_base_.laud_sparsity_loss, target_rate=target_rate),
    backbone=dict(_base_.laud_layer, _delete_=True,
                  type='laud_mm.LAUDRegNetY', arch='regnety_400mf',
                  out_indices=(0, 1, 2, 3), frozen_stages=1, norm_eval=True,
                  init_cfg=dict(type='Pretrained', prefix='backbone.',
                                checkpoint='torchvision-regnety://regnet_y_400mf')),
    neck=dict(in_channels=[48, 104, 208, 440]))
optim_wrapper = dict(
    optimizer=dict(weight_decay=5e-5),
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.5)}))
val_evaluator = _base_.laud_bbox_evaluator
test_evaluator = val_evaluator
default_hooks = _base_.laud_default_hooks
