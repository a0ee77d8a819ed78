# Demo: LAUD-R50 (spatial skipping, S = 4-4-2-1, t = 0.5) Mask2Former instance
# segmentation on the real coco_tiny images, large scale jitter at 320 x 320
# (mmdet's 1024 scaled down), backbone from scratch (no ImageNet weights
# offline): expect a very low mAP after a CPU-sized run. Evaluation prints
# box and mask mAP with the predicted backbone latency.
_base_ = [
    '../mask2former/mask2former_laud-r50-spatial-s4421_t0.5_8xb2-lsj-50e_coco.py',
    '../_base_/datasets/coco_tiny.py',
]
# the stage-1 checkpoint of this paradigm (tools/run_detection_demos.sh
# writes it: configs/demo/laud-r50-spatial_imagenette.py); None: a backbone
# from scratch with the temperature annealed
laud_weights = 'work_dirs/demo/stage1_spatial_t0.5.pth'
model = dict(
    laud_weights=laud_weights,
    data_preprocessor=dict(batch_augments={{_base_.tiny_lsj_batch_augments}}),
    backbone=dict(init_cfg=None, frozen_stages=-1,
                  norm_cfg=dict(type='BN', requires_grad=True)))
train_dataloader = {{_base_.tiny_lsj_train_dataloader}}
val_dataloader = {{_base_.tiny_val_dataloader}}
test_dataloader = val_dataloader
val_evaluator = {{_base_.tiny_instance_val_evaluator}}
test_evaluator = val_evaluator
custom_hooks = [_base_.laud_gumbel_hook, _base_.laud_gumbel_noise_hook,
                dict(type='laud_mm.BackboneSpeedHook', phases=('test', ))]

max_iters = 200
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop',
                 max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=40),
    dict(type='MultiStepLR', begin=0, end=max_iters, by_epoch=False,
         milestones=[160], gamma=0.1),
]
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(interval=max_iters))
