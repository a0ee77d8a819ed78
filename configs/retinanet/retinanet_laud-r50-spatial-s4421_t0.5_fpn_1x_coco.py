# LAUD-ResNet-50, spatial skipping (S = 4-4-2-1), target 0.5, RetinaNet FPN 1x
# on COCO.
_base_ = './retinanet_laud-r50-channel-g2_t0.5_fpn_1x_coco.py'
# Backbone weights (docs/model_zoo.md, "Backbone weights"): a LAUD ImageNet
# checkpoint (configs/imagenet/, maskers included; the temperature stays
# at 0.1), e.g.
#   laud_weights = 'work_dirs/laud-r50-spatial-s4421_8xb128_in1k/epoch_100.pth'
# or None: static ImageNet weights (the backbone's init_cfg) with the
# temperature annealed 5 -> 0.1 while the gates leave the dense start.
laud_weights = None
model = dict(
    laud_weights=laud_weights,
    backbone=dict(
    _base_.laud_spatial_s4421))
