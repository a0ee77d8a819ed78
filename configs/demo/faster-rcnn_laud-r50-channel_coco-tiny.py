# Demo stage 2, channel skipping (G = 2-2-2-2): as the spatial demo
# (faster-rcnn_laud-r50-spatial_coco-tiny.py), from the channel stage-1
# checkpoint (configs/demo/laud-r50-channel_imagenette.py).
_base_ = ['./faster-rcnn_laud-r50-spatial_coco-tiny.py']
laud_weights = 'work_dirs/demo/stage1_channel_t0.5.pth'
model = dict(laud_weights=laud_weights,
             backbone=dict(_base_.laud_channel_g2))
