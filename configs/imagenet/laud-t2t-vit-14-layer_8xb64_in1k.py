# LAUD-T2T-ViT-t-14, layer skipping (one Gumbel gate per encoder layer and
# image: a skipped layer is the identity), ImageNet-1k. Schedule, teacher,
# weights and target-rate override as in
# laud-t2t-vit-14-spatial_8xb64_in1k.py.
_base_ = ['./laud-t2t-vit-14-spatial_8xb64_in1k.py']
model = dict(backbone=dict(paradigm='layer'))
