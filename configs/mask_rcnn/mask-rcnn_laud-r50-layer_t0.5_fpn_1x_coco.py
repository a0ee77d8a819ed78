# LAUD-ResNet-50, layer skipping, target rate 0.5, Mask R-CNN.
_base_ = './mask-rcnn_laud-r50-spatial-s4421_t0.5_fpn_1x_coco.py'
laud_pretrained = 'work_dirs/laud-r50-layer_8xb128_in1k/epoch_100.pth'
model = dict(backbone=dict(
    _base_.laud_layer, init_cfg=dict(checkpoint=laud_pretrained)))
