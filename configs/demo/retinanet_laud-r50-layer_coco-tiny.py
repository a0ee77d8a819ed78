# Demo: LAUD-R50 (layer skipping, t = 0.5) RetinaNet on the real coco_tiny
# images at a CPU-friendly scale, backbone from the demo's stage-1 LAUD-R50.
_base_ = [
    '../retinanet/retinanet_laud-r50-layer_t0.5_fpn_1x_coco.py',
    '../_base_/datasets/coco_tiny.py',
]
# the stage-1 checkpoint of this paradigm (tools/run_detection_demos.sh
# writes it: configs/demo/laud-r50-layer_imagenette.py); None: a backbone
# from scratch with the temperature annealed
laud_weights = 'work_dirs/demo/stage1_layer_t0.5.pth'
# from scratch, the focal-loss scores stay near the 0.01 prior for long: keep
# low-score boxes so that COCO evaluation has detections to score (mmdet's
# default threshold is 0.05)
model = dict(laud_weights=laud_weights,
             backbone=dict(init_cfg=None, frozen_stages=-1),
             test_cfg=dict(score_thr=0.001))
train_dataloader = {{_base_.tiny_train_dataloader}}
val_dataloader = {{_base_.tiny_val_dataloader}}
test_dataloader = val_dataloader
val_evaluator = {{_base_.tiny_val_evaluator}}
test_evaluator = val_evaluator
custom_hooks = [_base_.laud_gumbel_hook, _base_.laud_gumbel_noise_hook,
                dict(type='laud_mm.BackboneSpeedHook', phases=('test', ))]

# the demo scale of tools/run_demo.sh: 4 epochs of the 80 images
max_epochs = 4
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=0.005), clip_grad=dict(max_norm=10.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=40),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[3], gamma=0.1),
]
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(interval=max_epochs))
