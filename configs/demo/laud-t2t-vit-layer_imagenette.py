# Demo: a tiny LAUD-T2T-ViT (embed 128, 6 layers, 4 heads, T2T tokens 32),
# layer skipping, target rate 0.8, on ../shared/data/imagenette_subset (128 px,
# 2-core CPU), with the paper's objective CE + 10 x sparsity + 0.5 x 4^2 x
# KL(teacher || student) and tau 5 -> 0.1 (paper sec. 3.5 and "Experiments on
# vision Transformers"). The T2T module (58 % of this model's FLOPs at
# 128 px) is always dense, so the reachable backbone FLOPs rate is ~0.6-1.
#
# No ImageNet weights offline and no pretrained tiny T2T-ViT exist: the
# teacher is the same architecture, static (paradigm=None), with
# teacher.checkpoint=None (random, a warning says so); give trained weights
# with --cfg-options model.teacher.checkpoint=PATH load_from=PATH.
# Token / head skipping: --cfg-options model.backbone.paradigm=spatial
# (or channel). Run from the repository root (data_root is relative to it).
_base_ = ['./resnet50_static_imagenette.py']

img_size = 128
embed_dims = 128
target_rate = 0.8
tiny_t2t = dict(type='laud_mm.LAUDT2TViT', img_size=img_size,
                embed_dims=embed_dims, num_layers=6,
                t2t_cfg=dict(token_dims=32),
                layer_cfgs=dict(num_heads=4,
                                feedforward_channels=3 * embed_dims),
                drop_path_rate=0.1)
head = dict(type='VisionTransformerClsHead', num_classes=10,
            in_channels=embed_dims,
            loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
            topk=(1, 5))
static_model = dict(
    type='laud_mm.LAUDImageClassifier',
    backbone=dict(tiny_t2t, paradigm=None),
    neck=None, head=head)
model = dict(
    _delete_=True,
    type='laud_mm.LAUDImageClassifier',
    data_preprocessor=dict(num_classes=10, mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], to_rgb=True),
    backbone=dict(tiny_t2t, paradigm='layer'),
    neck=None, head=head,
    sparsity_loss=dict(_base_.laud_sparsity_loss, target_rate=target_rate),
    teacher=dict(config=static_model, checkpoint=None),
    distill_loss=_base_.laud_distill_loss)
custom_hooks = [_base_.laud_gumbel_hook]

# a vision transformer from scratch: AdamW (as mmpretrain's T2T-ViT recipe)
max_epochs = 2
optim_wrapper = dict(
    _delete_=True,
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0,
                       custom_keys={'cls_token': dict(decay_mult=0.0)}),
    clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=10),
    dict(type='CosineAnnealingLR', T_max=max_epochs, by_epoch=True, begin=0,
         end=max_epochs),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(checkpoint=dict(type='CheckpointHook',
                                     interval=max_epochs))
