# Demo: LAUD-R50 (channel skipping, G = 2-2-2-2, t = 0.5) Mask R-CNN trained
# and evaluated on the 80 + 80 real COCO images of ../shared/data/coco_tiny at
# a CPU-friendly scale (short side 320 px), backbone from the demo's stage-1 LAUD-R50
# (imagenette_subset, maskers included): a low mAP after a CPU-sized run. Evaluation prints box and mask mAP with
# the backbone's activation rate, GFLOPs and predicted latency on one line.
_base_ = [
    '../mask_rcnn/mask-rcnn_laud-r50-channel-g2_t0.5_fpn_1x_coco.py',
    '../_base_/datasets/coco_tiny.py',
]
# the stage-1 checkpoint of this paradigm (tools/run_detection_demos.sh
# writes it: configs/demo/laud-r50-channel_imagenette.py); None: a backbone
# from scratch with the temperature annealed
laud_weights = 'work_dirs/demo/stage1_channel_t0.5.pth'
# Keep every box in evaluation (mmdet: score_thr=0.05): a short run from
# scratch scores below 0.05, and CocoMetric prints no mAP without detections.
model = dict(laud_weights=laud_weights,
             backbone=dict(init_cfg=None, frozen_stages=-1),
             test_cfg=dict(rcnn=dict(score_thr=0.0, max_per_img=50)))
train_dataloader = {{_base_.tiny_train_dataloader}}
val_dataloader = {{_base_.tiny_val_dataloader}}
test_dataloader = val_dataloader
val_evaluator = {{_base_.tiny_instance_val_evaluator}}
test_evaluator = val_evaluator

custom_hooks = [_base_.laud_gumbel_hook, _base_.laud_gumbel_noise_hook,
                dict(type='laud_mm.BackboneSpeedHook', phases=('test', ))]

# the demo scale of tools/run_demo.sh: 4 epochs of the 80 images
max_epochs = 4
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=0.01), clip_grad=dict(max_norm=10.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=40),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[3], gamma=0.1),
]
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(interval=max_epochs))
