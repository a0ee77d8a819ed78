# LAUD-ResNet-50, channel skipping (G = 2-2-2-2), target rate 0.5, DDQ-DETR.
_base_ = './ddq-detr-4scale_laud-r50-spatial-s4421_t0.5_8xb2-12e_coco.py'
laud_pretrained = 'work_dirs/laud-r50-channel-g2_8xb128_in1k/epoch_100.pth'
model = dict(backbone=dict(
    _base_.laud_channel_g2, init_cfg=dict(checkpoint=laud_pretrained)))
