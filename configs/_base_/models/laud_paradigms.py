# The paradigm and granularity of each LAUD backbone variant, as variables
# for the configs to splice into their backbone dict, e.g.
#   model = dict(backbone=dict(_base_.laud_channel_g2))
# (docs/method.md sec. 1; paper sec. 3.2 and 4.3.1). Granularity is given per
# stage: S = patch side in output pixels (spatial), G = channels per gate
# (channel). Every LAUD config reaches this file through laud_runtime.py.

# spatial skipping, S = 4-4-2-1: the best measured on GPUs for ResNet
laud_spatial_s4421 = dict(paradigm='spatial', granularity=(4, 4, 2, 1))
# spatial skipping, S = 4-4-7-1: 7 x 7 patches in stage 3, for the larger
# feature maps of detection (the masker weights do not depend on S)
laud_spatial_s4471 = dict(paradigm='spatial', granularity=(4, 4, 7, 1))
# channel skipping, G = 2-2-2-2: one gate per 2 channels of the block width
laud_channel_g2 = dict(paradigm='channel', granularity=(2, 2, 2, 2))
# layer skipping: one gate per block and image (no granularity)
laud_layer = dict(paradigm='layer', granularity=None)
