# LAUD-ResNet-50, spatial skipping (S = 4-4-2-1), target 0.5, RetinaNet FPN 1x
# on COCO.
_base_ = './retinanet_laud-r50-channel-g2_t0.5_fpn_1x_coco.py'
laud_pretrained = 'work_dirs/laud-r50-spatial-s4421_8xb128_in1k/epoch_100.pth'
model = dict(backbone=dict(
    _base_.laud_spatial_s4421, init_cfg=dict(checkpoint=laud_pretrained)))
