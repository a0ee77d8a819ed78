# LAUD-ResNet-50, channel skipping (G = 2-2-2-2), target rate 0.5.
_base_ = './faster-rcnn_laud-r50-spatial-s4421_t0.5_fpn_1x_coco.py'
laud_pretrained = 'work_dirs/laud-r50-channel-g2_8xb128_in1k/epoch_100.pth'
model = dict(backbone=dict(
    _base_.laud_channel_g2, init_cfg=dict(checkpoint=laud_pretrained)))
