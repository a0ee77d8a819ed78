# The LAUD settings of every semantic segmentation config (mmseg UPerNet,
# DeepLabV3+, Mask2Former): the LAUD backbone replaces the segmentor's ResNet
# and is fine-tuned with the sparsity term (F_dyn / F_static - t)^2 at weight
# 1, the recipe the authors use for detection and instance segmentation
# (paper sec. 4.5 and appendix B.3, docs/method.md sec. 3; semantic
# segmentation is this repository's addition, docs/segmentation.md). The
# Gumbel temperature follows the config's weights route (`laud_weights`,
# laud_mm/models/layers/weights.py), as for detection: fixed at 0.1 from a
# LAUD ImageNet checkpoint, annealed 5 -> 0.1 from static ImageNet weights.
#
# custom_hooks is set here (no mmseg recipe sets it); the other settings are
# variables, bound by the configs that join this file with an mmseg recipe
# (custom_imports too: mmseg's Mask2Former recipe sets its own):
#   custom_imports = _base_.laud_custom_imports
#   default_hooks = _base_.laud_default_hooks
#   sparsity_loss=dict(_base_.laud_sparsity_loss, target_rate=target_rate)
#   val_evaluator = _base_.laud_miou_evaluator
_base_ = ['./laud_runtime.py']

# tau0 = tau1 = None: the schedule of the model's weights route
laud_gumbel_hook = dict(type='laud_mm.GumbelTemperatureHook', tau0=None,
                        tau1=None)
custom_hooks = [laud_gumbel_hook]

laud_sparsity_loss = dict(type='laud_mm.SparsityLoss', loss_weight=1.0,
                          block_bounds=False)

# mIoU (mmseg's IoUMetric) with the backbone's activation rate, GFLOPs and
# predicted latency, reported on one line
laud_miou_evaluator = [dict(type='IoUMetric', iou_metrics=['mIoU']),
                       _base_.laud_latency_metric]

# the output-stride-8 ResNet of DeepLab (dilated stages 3 and 4, the first
# block of each at half the dilation, as mmseg's ResNetV1c-d8 backbones)
laud_dilated_d8 = dict(strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4),
                       contract_dilation=True)
