# LAUD-ResNet-50, spatial skipping with the detection granularity S = 4-4-7-1
# (docs/method.md sec. 1: stage-3 patches of 7 x 7 on the larger detection
# feature maps), target rate 0.5. The masker weights do not depend on S, so
# the 4-4-2-1 ImageNet checkpoint loads unchanged.
_base_ = './faster-rcnn_laud-r50-spatial-s4421_t0.5_fpn_1x_coco.py'
model = dict(backbone=dict(_base_.laud_spatial_s4471))
