# LAUD-ResNet-50, layer skipping, target rate 0.5, Mask2Former (semantic) on
# ADE20K (mmseg layout data/ade/ADEChallengeData2016, 150 classes): mmseg's
# recipe (160k iterations at batch 8 x 2, 512 x 512 crops, AdamW 1e-4, poly
# decay, frozen BN affine; output stride 32), the backbone replaced by the LAUD
# one.
# From ../../_base_/laud_segmentation_runtime.py: the sparsity term
# (F_dyn / F_static - t)^2 with weight 1, tau by the weights route, the
# laud_mm hooks and mIoU + latency on one line (docs/segmentation.md,
# docs/method.md sec. 3).
_base_ = [
    'mmseg::mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py',
    '../../_base_/laud_segmentation_runtime.py',
]
# mmseg's recipe imports mmdet's models (its pixel decoder); laud_mm too
custom_imports = dict(_base_.laud_custom_imports,
                      imports=['mmdet.models', 'laud_mm'])
target_rate = 0.5
# Backbone weights (docs/model_zoo.md, "Backbone weights"): a LAUD ImageNet
# checkpoint (configs/imagenet/, maskers included; the temperature stays
# at 0.1), e.g.
#   laud_weights = 'work_dirs/laud-r50-layer_8xb128_in1k/epoch_100.pth'
# or None: static ImageNet weights (the backbone's init_cfg) with the
# temperature annealed 5 -> 0.1 while the gates leave the dense start.
laud_weights = None
model = dict(
    laud_weights=laud_weights,
    type='laud_mm.LAUDSegmentor',
    segmentor='EncoderDecoder',
    sparsity_loss=dict(_base_.laud_sparsity_loss, target_rate=target_rate),
    backbone=dict(_base_.laud_layer, type='laud_mm.LAUDResNet',
                  # mmseg's ResNet default (mmdet's, LAUDResNet's, is True)
                  norm_eval=False,
                  # the static route's weights (laud_weights=None); a LAUD
                  # checkpoint in laud_weights replaces this init_cfg
                  init_cfg=dict(type='Pretrained',
                                checkpoint='torchvision://resnet50')))
# mmseg's recipe: backbone lr multiplier 0.1 (also the paper's for
# Mask2Former, appendix B.3), kept
val_evaluator = _base_.laud_miou_evaluator
test_evaluator = val_evaluator
default_hooks = _base_.laud_default_hooks
