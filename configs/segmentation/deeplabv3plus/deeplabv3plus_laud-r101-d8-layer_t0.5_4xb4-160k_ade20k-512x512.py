# LAUD-ResNet-101 version of
#   deeplabv3plus_laud-r50-d8-layer_t0.5_4xb4-160k_ade20k-512x512.py
# (same paradigm, granularity, target rate and recipe): depth 101, with
# torchvision's ResNet-101 weights on the static route (laud_weights=None)
# or the LAUD-R101 ImageNet checkpoint, the work dir of
# configs/imagenet/laud-r101-layer_8xb128_in1k.py.
_base_ = './deeplabv3plus_laud-r50-d8-layer_t0.5_4xb4-160k_ade20k-512x512.py'
# Backbone weights (docs/model_zoo.md, "Backbone weights"): a LAUD ImageNet
# checkpoint (configs/imagenet/, maskers included; the temperature stays
# at 0.1), e.g.
#   laud_weights = 'work_dirs/laud-r101-layer_8xb128_in1k/epoch_100.pth'
# or None: static ImageNet weights (the backbone's init_cfg) with the
# temperature annealed 5 -> 0.1 while the gates leave the dense start.
laud_weights = None
# (re-stated here: mmengine resolves the parent's `laud_weights` in the
# parent, so the model key must be set again for this file's value to count)
model = dict(
    laud_weights=laud_weights,
    backbone=dict(depth=101,
                  init_cfg=dict(checkpoint='torchvision://resnet101')))
