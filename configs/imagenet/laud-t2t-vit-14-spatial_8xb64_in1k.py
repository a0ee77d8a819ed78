# LAUD-T2T-ViT-t-14, token skipping (the spatial paradigm: one Gumbel gate per
# patch token and encoder layer, the class token always kept; a skipped token
# is neither updated nor used as a key / value), ImageNet-1k fine-tuning from
# mmpretrain's static T2T-ViT-t-14 with distillation from it (paper sec. 3.2
# and "Experiments on vision Transformers", following AdaViT; objective of
# sec. 3.5: CE + 10 x sparsity + 0.5 x 4^2 x KL, tau 5 -> 0.1).
#
# Everything else is mmpretrain's own T2T-ViT-t-14 recipe (data pipeline with
# RandAugment / random erasing, Mixup + CutMix, AdamW, EMA), with a
# fine-tuning schedule: 100 epochs, lr 1e-4 for batch 512, 5 warm-up epochs,
# cosine (a project choice: AdaViT's schedule is not in the reference).
#
# Target rate: the backbone FLOPs ratio incl. the dense Tokens-to-Token module
# (26 % of T2T-ViT-t-14's 6.1 GFLOPs at 224 px, so rates below ~0.3 are out
# of reach). Change it with --cfg-options model.sparsity_loss.target_rate=0.5
#
# Weights: mmpretrain's released checkpoint (classifier layout backbone.* /
# head.*, loads unchanged; the maskers keep their keep-biased
# initialisation). Offline, download it elsewhere and pass the local path to
# both: --cfg-options model.init_cfg.checkpoint=PATH
# model.teacher.checkpoint=PATH
_base_ = [
    'mmpretrain::t2t_vit/t2t-vit-t-14_8xb64_in1k.py',
    '../_base_/laud_classification_runtime.py',
]

target_rate = 0.7
t2t_checkpoint = ('https://download.openmmlab.com/mmclassification/v0/'
                  't2t-vit/t2t-vit-t-14_8xb64_in1k_20211220-f7378dd5.pth')

model = dict(
    type='laud_mm.LAUDImageClassifier',
    # the rest of the backbone (embed 384, 14 layers, 6 heads, MLP ratio 3,
    # T2T token_dims 64, drop path 0.1) comes from mmpretrain's config
    backbone=dict(type='laud_mm.LAUDT2TViT', paradigm='spatial'),
    # the paper's objective; the per-block bounds apply per encoder layer
    sparsity_loss=dict(_base_.laud_sparsity_loss, target_rate=target_rate),
    # frozen static teacher: mmpretrain's T2T-ViT-t-14, its own config
    teacher=dict(config='mmpretrain::t2t_vit/t2t-vit-t-14_8xb64_in1k.py',
                 checkpoint=t2t_checkpoint),
    distill_loss=_base_.laud_distill_loss,
    init_cfg=dict(type='Pretrained', checkpoint=t2t_checkpoint))

optim_wrapper = dict(optimizer=dict(lr=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=5,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=95, eta_min=1e-6, by_epoch=True,
         begin=5, end=100),
]
train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=1)

# mmpretrain's EMA (its recipe's custom_hooks, restated: lists are replaced,
# not merged), and the Gumbel temperature 5 -> 0.1
custom_hooks = [
    dict(type='EMAHook', momentum=4e-5, priority='ABOVE_NORMAL'),
    _base_.laud_gumbel_hook,
]

val_evaluator = _base_.laud_evaluator
test_evaluator = val_evaluator
default_hooks = dict(_base_.laud_default_hooks,
                     checkpoint=_base_.laud_checkpoint_hook)
