# LAUD-RegNetY-800MF, layer skipping (a skipped block also skips its SE, paper
# sec. 4.3.2), ImageNet-1k. Schedule, weights and teacher as
# laud-regnety-800mf-spatial-s4421_8xb128_in1k.py.
_base_ = ['./laud-regnety-800mf-spatial-s4421_8xb128_in1k.py']
model = dict(backbone=dict(_base_.laud_layer))
