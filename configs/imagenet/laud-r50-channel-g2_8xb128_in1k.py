# LAUD-ResNet-50, channel skipping (G = 2-2-2-2), ImageNet-1k; schedule,
# teacher, weights and target rate as in laud-r50-spatial-s4421_8xb128_in1k.py.
_base_ = ['./laud-r50-spatial-s4421_8xb128_in1k.py']
model = dict(backbone=dict(_base_.laud_channel_g2))
