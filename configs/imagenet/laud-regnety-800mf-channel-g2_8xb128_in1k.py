# LAUD-RegNetY-800MF, channel skipping (G = 2-2-2-2: one gate per 2 channels of
# the block width; conv2's conv groups of 16 channels run whole when any of
# their channels is kept, see laud_mm/models/regnet/dynamic.py), ImageNet-1k.
# Schedule, weights and teacher as laud-regnety-800mf-spatial-s4421_8xb128_in1k.py.
_base_ = ['./laud-regnety-800mf-spatial-s4421_8xb128_in1k.py']
model = dict(backbone=dict(_base_.laud_channel_g2))
