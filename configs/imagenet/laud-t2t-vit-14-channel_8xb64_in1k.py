# LAUD-T2T-ViT-t-14, head skipping (the channel paradigm: one Gumbel gate per
# attention head, encoder layer and image; a skipped head's q, k, v,
# attention and proj input columns are not computed; the MLP stays dense),
# ImageNet-1k. Schedule, teacher, weights and target-rate override as in
# laud-t2t-vit-14-spatial_8xb64_in1k.py. Heads are 46 % of an encoder layer's
# FLOPs at 224 px, so with the dense T2T module the reachable backbone FLOPs
# rate is ~0.67-1.
_base_ = ['./laud-t2t-vit-14-spatial_8xb64_in1k.py']
target_rate = 0.8
model = dict(backbone=dict(paradigm='channel'),
             sparsity_loss=dict(target_rate=target_rate))
