# LAUD-ResNet-50, spatial skipping (S = 4-4-2-1), target rate 0.5,
# Mask2Former instance segmentation on COCO (mmdet layout data/coco/): large
# scale jitter at 1024 x 1024, 50 epochs (368750 iterations at batch 8 x 2,
# mmdet's schedule), AdamW 1e-4, backbone lr multiplier 0.1, tau fixed at 0.1,
# sparsity term (F_dyn / F_static - t)^2 with weight 1 (docs/method.md
# sec. 3). Reports box and mask AP.
_base_ = [
    'mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco.py',
    '../_base_/laud_detection_runtime.py',
]
target_rate = 0.5
# LAUD ImageNet checkpoint of the same backbone (configs/imagenet/); override
# with --cfg-options model.backbone.init_cfg.checkpoint=PATH
laud_pretrained = 'work_dirs/laud-r50-spatial-s4421_8xb128_in1k/epoch_100.pth'
model = dict(
    type='laud_mm.LAUDDetector',
    detector='Mask2Former',
    sparsity_loss=dict(type='laud_mm.SparsityLoss', target_rate=target_rate,
                       loss_weight=1.0, block_bounds=False),
    backbone=dict(type='laud_mm.LAUDResNet', paradigm='spatial',
                  granularity=(4, 4, 2, 1),
                  init_cfg=dict(type='Pretrained', prefix='backbone.',
                                checkpoint=laud_pretrained)))
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1,
                                                     decay_mult=1.0)}))
val_evaluator = [
    dict(type='CocoMetric',
         ann_file='data/coco/annotations/instances_val2017.json',
         metric=['bbox', 'segm'], format_only=False, backend_args=None),
    dict(type='laud_mm.BackboneLatencyMetric', hardware='v100'),
]
test_evaluator = val_evaluator
