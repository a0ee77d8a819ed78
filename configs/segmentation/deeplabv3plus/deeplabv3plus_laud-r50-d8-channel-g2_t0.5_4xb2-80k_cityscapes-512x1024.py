# LAUD-ResNet-50, channel skipping (G = 2-2-2-2), target rate 0.5, DeepLabV3+
# on Cityscapes (mmseg layout data/cityscapes/, 19 classes): mmseg's recipe
# (80k iterations at batch 4 x 2, 512 x 1024 crops, SGD lr 0.01, poly decay;
# output stride 8: mmseg's strides (1, 2, 1, 1), dilations (1, 1, 2, 4),
# contract_dilation=True kept), the backbone replaced by the LAUD one.
# From ../../_base_/laud_segmentation_runtime.py: the sparsity term
# (F_dyn / F_static - t)^2 with weight 1, tau by the weights route, the
# laud_mm hooks and mIoU + latency on one line (docs/segmentation.md,
# docs/method.md sec. 3).
_base_ = [
    'mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb2-80k_cityscapes-512x1024.py',
    '../../_base_/laud_segmentation_runtime.py',
]
custom_imports = _base_.laud_custom_imports
target_rate = 0.5
# Backbone weights (docs/model_zoo.md, "Backbone weights"): a LAUD ImageNet
# checkpoint (configs/imagenet/, maskers included; the temperature stays
# at 0.1), e.g.
#   laud_weights = 'work_dirs/laud-r50-channel-g2_8xb128_in1k/epoch_100.pth'
# or None: static ImageNet weights (the backbone's init_cfg) with the
# temperature annealed 5 -> 0.1 while the gates leave the dense start.
laud_weights = None
model = dict(
    laud_weights=laud_weights,
    type='laud_mm.LAUDSegmentor',
    segmentor='EncoderDecoder',
    # mmseg's open-mmlab://resnet50_v1c is a static deep-stem network;
    # laud_mm.LAUDResNet has the 7x7 stem of torchvision's ResNet and of the
    # LAUD ImageNet checkpoints (as mmseg's r50b configs)
    pretrained=None,
    sparsity_loss=dict(_base_.laud_sparsity_loss, target_rate=target_rate),
    backbone=dict(_base_.laud_channel_g2, type='laud_mm.LAUDResNet',
                  # the static route's weights (laud_weights=None); a LAUD
                  # checkpoint in laud_weights replaces this init_cfg
                  init_cfg=dict(type='Pretrained',
                                checkpoint='torchvision://resnet50')))
# backbone lr multiplier 0.5, as the paper's SGD detectors (Faster / Mask
# R-CNN, appendix B.3): a project choice, the paper has no semantic
# segmentation recipe
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.5)}))
val_evaluator = _base_.laud_miou_evaluator
test_evaluator = val_evaluator
default_hooks = _base_.laud_default_hooks
