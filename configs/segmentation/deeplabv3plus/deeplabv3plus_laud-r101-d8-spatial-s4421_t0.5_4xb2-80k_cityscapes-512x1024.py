# LAUD-ResNet-101 version of
#   deeplabv3plus_laud-r50-d8-spatial-s4421_t0.5_4xb2-80k_cityscapes-512x1024.py
# (same paradigm, granularity, target rate and recipe): depth 101 and the
# LAUD-R101 ImageNet checkpoint, the work dir of
# configs/imagenet/laud-r101-spatial-s4421_8xb128_in1k.py.
_base_ = './deeplabv3plus_laud-r50-d8-spatial-s4421_t0.5_4xb2-80k_cityscapes-512x1024.py'
laud_pretrained = 'work_dirs/laud-r101-spatial-s4421_8xb128_in1k/epoch_100.pth'
model = dict(backbone=dict(depth=101,
                           init_cfg=dict(checkpoint=laud_pretrained)))
