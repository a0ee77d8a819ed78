# Demo stage 2 (tools/run_demo.sh): the stage-1 LAUD-R50 (spatial,
# S = 4-4-2-1, t = 0.5; configs/demo/laud-r50-spatial_imagenette.py), maskers
# included, fine-tuned as the backbone of Faster R-CNN on the 80 real COCO
# train2017 images of ../shared/data/coco_tiny and evaluated on its 80 val2017
# images, at a CPU-friendly scale (long side 320 px). The recipe is the
# paper's (appendix B.3): sparsity term (F_dyn / F_static - t)^2 with weight 1,
# Gumbel temperature fixed at 0.1 (the route of a LAUD ImageNet checkpoint),
# backbone lr multiplier 0.5. The test (stage 3) adds the measured backbone
# speed-up on the evaluated images (laud_mm.BackboneSpeedHook).
_base_ = [
    '../faster_rcnn/faster-rcnn_laud-r50-spatial-s4421_t0.5_fpn_1x_coco.py',
    '../_base_/datasets/coco_tiny.py',
]
# the stage-1 checkpoint (tools/run_demo.sh writes it); None: a backbone from
# scratch with the temperature annealed (no ImageNet weights offline)
laud_weights = 'work_dirs/demo/stage1_spatial_t0.5.pth'
# a short schedule from a short pretraining: keep low-score boxes so that COCO
# evaluation has detections to score (mmdet's threshold is 0.05). CPU budget:
# 128 sampled RoIs per image (mmdet: 512), 300 proposals (mmdet: 1000).
model = dict(
    laud_weights=laud_weights,
    backbone=dict(init_cfg=None, frozen_stages=-1),
    train_cfg=dict(rpn_proposal=dict(max_per_img=300),
                   rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(max_per_img=300), rcnn=dict(score_thr=0.001)))
train_dataloader = {{_base_.tiny_train_dataloader}}
val_dataloader = {{_base_.tiny_val_dataloader}}
test_dataloader = val_dataloader
val_evaluator = {{_base_.tiny_val_evaluator}}
test_evaluator = val_evaluator
custom_hooks = [_base_.laud_gumbel_hook, _base_.laud_gumbel_noise_hook,
                dict(type='laud_mm.BackboneSpeedHook', phases=('test', ))]

max_epochs = 4
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=0.01), clip_grad=dict(max_norm=10.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=40),
]
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(interval=max_epochs))
