# LAUD-RegNetY-400MF, layer skipping (a skipped block also skips its SE, paper
# sec. 4.3.2), ImageNet-1k: the ImageNet stage of
# ../faster_rcnn/faster-rcnn_laud-regnety-400mf-layer_t0.5_fpn_1x_coco.py.
# Schedule, weights and teacher as
# laud-regnety-400mf-spatial-s4421_8xb128_in1k.py.
_base_ = ['./laud-regnety-400mf-spatial-s4421_8xb128_in1k.py']
model = dict(backbone=dict(_base_.laud_layer))
