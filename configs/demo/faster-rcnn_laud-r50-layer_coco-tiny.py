# Demo stage 2, layer skipping: as the spatial demo
# (faster-rcnn_laud-r50-spatial_coco-tiny.py), from the layer stage-1
# checkpoint (configs/demo/laud-r50-layer_imagenette.py).
_base_ = ['./faster-rcnn_laud-r50-spatial_coco-tiny.py']
laud_weights = 'work_dirs/demo/stage1_layer_t0.5.pth'
model = dict(laud_weights=laud_weights, backbone=dict(_base_.laud_layer))
