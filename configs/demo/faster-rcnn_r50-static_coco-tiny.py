# The static baseline of the demo trade-off: the same Faster R-CNN schedule
# as the LAUD demos (faster-rcnn_laud-r50-spatial_coco-tiny.py) with a static
# ResNet-50 (no maskers, no sparsity loss, no temperature), initialised from
# the static stage-1 run (configs/demo/resnet50_static_imagenette.py).
_base_ = ['./faster-rcnn_laud-r50-spatial_coco-tiny.py']
laud_weights = 'work_dirs/demo/stage1_static.pth'
model = dict(laud_weights=laud_weights, sparsity_loss=None,
             backbone=dict(paradigm=None, granularity=None))
custom_hooks = [dict(type='laud_mm.BackboneSpeedHook', phases=('test', ))]
