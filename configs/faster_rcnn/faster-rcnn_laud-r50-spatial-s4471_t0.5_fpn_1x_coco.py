# LAUD-ResNet-50, spatial skipping with the detection granularity S = 4-4-7-1
# (docs/method.md sec. 1: stage-3 patches of 7 x 7 on the larger detection
# feature maps), target rate 0.5. The masker weights do not depend on S, so
# the 4-4-2-1 ImageNet checkpoint loads unchanged.
_base_ = './faster-rcnn_laud-r50-spatial-s4421_t0.5_fpn_1x_coco.py'
# Backbone weights (docs/model_zoo.md, "Backbone weights"): a LAUD ImageNet
# checkpoint (configs/imagenet/, maskers included; the temperature stays
# at 0.1), e.g.
#   laud_weights = 'work_dirs/<imagenet config>/epoch_100.pth'
# or None: static ImageNet weights (the backbone's init_cfg) with the
# temperature annealed 5 -> 0.1 while the gates leave the dense start.
laud_weights = None
model = dict(laud_weights=laud_weights,
             backbone=dict(_base_.laud_spatial_s4471))
