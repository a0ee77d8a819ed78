# Demo (docs/segmentation.md): LAUD-R50 (spatial, S = 4-4-2-1, t = 0.5) at
# output stride 16 (stage 4 dilated: strides 1-2-2-1, dilations 1-1-1-2, its
# first block at dilation 1, contract_dilation) in DeepLabV3+ (mmseg's d16
# setting; the full-scale config has output stride 8), trained and evaluated on
# the real coco_tiny images as semantic segmentation (background + 80 COCO
# thing classes, crowd regions ignored; label maps written into
# work_dirs/coco_tiny_semantic/ on first use), sized for a 2-core CPU.
#
# The backbone starts from the stage-1 ImageNet-subset checkpoint of the main
# demo (the LAUD-R50 spatial classifier trained on imagenette, keys
# 'backbone.*' with its maskers) through the weights route `laud_weights`
# (docs/model_zoo.md, "Backbone weights"; Gumbel temperature fixed at 0.1):
# the dilated network has the classifier's weights (dilation changes no
# tensor shape). Evaluation prints mIoU with the backbone's activation rate,
# GFLOPs and predicted latency on one line.
_base_ = [
    '../segmentation/deeplabv3plus/'
    'deeplabv3plus_laud-r50-d8-spatial-s4421_t0.5_4xb4-160k_ade20k-512x512.py',
    '../_base_/datasets/coco_tiny_semantic.py',
]
# the stage-1 checkpoint (tools/run_demo.sh writes it); None: a backbone from
# scratch with the temperature annealed (no ImageNet weights offline)
laud_weights = 'work_dirs/demo/stage1_spatial_t0.5.pth'
# one CPU process: plain BN instead of the recipe's SyncBN
norm_cfg = dict(type='BN', requires_grad=True)
crop = {{_base_.tiny_sem_crop}}
num_classes = {{_base_.tiny_sem_num_classes}}
model = dict(
    laud_weights=laud_weights,
    data_preprocessor=dict(size=crop),
    # CPU budget: output stride 16 (a third of the backbone FLOPs of output
    # stride 8 at these sizes)
    backbone=dict(strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2),
                  norm_cfg=norm_cfg, init_cfg=None),
    # CPU budget: 128 decoder channels (mmseg: 512) and a 64-channel
    # auxiliary head (mmseg: 256); ASPP dilations 1-2-4-6 for the 8 x 8 to
    # 12 x 16 maps of 128 px crops and 192 px test images at stride 16
    # (mmseg: 1-12-24-36 for the 64 x 64 maps of 512 px crops at stride 8)
    decode_head=dict(num_classes=num_classes, channels=128,
                     dilations=(1, 2, 4, 6), norm_cfg=norm_cfg),
    auxiliary_head=dict(num_classes=num_classes, channels=64,
                        norm_cfg=norm_cfg))
train_dataloader = {{_base_.tiny_sem_train_dataloader}}
val_dataloader = {{_base_.tiny_sem_val_dataloader}}
# (not `= val_dataloader`: each key must drop the recipe's ADE20K data set)
test_dataloader = {{_base_.tiny_sem_val_dataloader}}

# 2-core CPU budget (train + test <= 15 min, docs/segmentation.md has the
# measured time): 320 iterations of 4 crops (16 passes over the 80 images),
# long enough for the gates to settle at the target rate
max_iters = 320
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
optim_wrapper = dict(optimizer=dict(lr=0.01),
                     clip_grad=dict(_delete_=True, max_norm=10.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=20, end=max_iters,
         by_epoch=False),
]
default_hooks = dict(logger=dict(interval=20),
                     checkpoint=dict(interval=max_iters))
# the test (tools/test.py) adds the backbone speed-up measured on the
# evaluated images (dynamic kernels against the static network)
custom_hooks = [_base_.laud_gumbel_hook,
                dict(type='laud_mm.BackboneSpeedHook', phases=('test', ))]
