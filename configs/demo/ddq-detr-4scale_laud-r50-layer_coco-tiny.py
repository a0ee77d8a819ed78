# Demo: LAUD-R50 (layer skipping, t = 0.5) DDQ-DETR 4-scale on the real
# coco_tiny images, multi-scale training at short sides 256-320 px (mmdet's
# 480-800 scaled down), backbone from the demo's stage-1 LAUD-R50
# (imagenette_subset): expect a very low mAP after a CPU-sized run. mmdet's recipe otherwise
# (AdamW 2e-4, backbone lr x 0.1, 900 queries, 6 + 6 layers).
_base_ = [
    '../ddq/ddq-detr-4scale_laud-r50-layer_t0.5_8xb2-12e_coco.py',
    '../_base_/datasets/coco_tiny.py',
]
# the stage-1 checkpoint of this paradigm (tools/run_detection_demos.sh
# writes it: configs/demo/laud-r50-layer_imagenette.py); None: a backbone
# from scratch with the temperature annealed
laud_weights = 'work_dirs/demo/stage1_layer_t0.5.pth'
# a short pretraining: train every stage and the BN layers (mmdet freezes
# them for ImageNet-initialised backbones)
model = dict(laud_weights=laud_weights,
             backbone=dict(init_cfg=None, frozen_stages=-1,
                           norm_cfg=dict(type='BN', requires_grad=True)))
train_dataloader = {{_base_.tiny_detr_train_dataloader}}
val_dataloader = {{_base_.tiny_val_dataloader}}
test_dataloader = val_dataloader
val_evaluator = {{_base_.tiny_val_evaluator}}
test_evaluator = val_evaluator
custom_hooks = [_base_.laud_gumbel_hook, _base_.laud_gumbel_noise_hook,
                dict(type='laud_mm.BackboneSpeedHook', phases=('test', ))]

max_epochs = 4
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=40),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[3], gamma=0.1),
]
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(interval=max_epochs))
