# LAUD-ResNet-50, channel skipping (G = 2-2-2-2), ImageNet-1k; schedule,
# teacher, weights and target-rate override as in
# laud-r50-spatial-s4421_8xb128_in1k.py.
_base_ = ['./laud-r50-spatial-s4421_8xb128_in1k.py']
target_rate = 0.5
model = dict(
    backbone=dict(paradigm='channel', granularity=(2, 2, 2, 2)),
    sparsity_loss=dict(target_rate=target_rate))
