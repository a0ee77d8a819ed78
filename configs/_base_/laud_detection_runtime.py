# The LAUD settings of every detection / instance-segmentation config: the
# backbone fine-tuned on COCO with the sparsity term (F_dyn / F_static - t)^2
# at weight 1 (the authors' detection recipe: no per-block bounds, no
# distillation). The Gumbel temperature follows the config's weights route
# (`laud_weights`, laud_mm/models/layers/weights.py): fixed at 0.1 from a
# LAUD ImageNet checkpoint (paper sec. 4.5 and appendix B.3), annealed
# 5 -> 0.1 from static ImageNet weights (docs/method.md sec. 2-3).
#
# custom_hooks is set here (no mmdet recipe sets it); the other settings are
# variables, bound by the configs that join this file with an mmdet recipe:
#   default_hooks = _base_.laud_default_hooks
#   sparsity_loss=dict(_base_.laud_sparsity_loss, target_rate=target_rate)
#   val_evaluator = _base_.laud_bbox_evaluator
_base_ = ['./laud_runtime.py']

custom_imports = _base_.laud_custom_imports

# tau0 = tau1 = None: the schedule of the model's weights route
laud_gumbel_hook = dict(type='laud_mm.GumbelTemperatureHook', tau0=None,
                        tau1=None)
custom_hooks = [laud_gumbel_hook]
# Training gates annealed to the inference gates (Gumbel noise scale 1 ->
# 0.1, docs/method.md sec. 2 "Training gates and inference gates"): for
# short fine-tunings, whose gate logits stay near 0 (the coco_tiny demos
# name it); the full configs keep the paper's Gumbel noise (scale 1).
laud_gumbel_noise_hook = dict(type='laud_mm.GumbelNoiseHook', scale0=1.0,
                              scale1=0.1)

laud_sparsity_loss = dict(type='laud_mm.SparsityLoss', loss_weight=1.0,
                          block_bounds=False)

# COCO val2017 AP (mmdet layout data/coco/) with the backbone's activation
# rate, GFLOPs and predicted latency
laud_coco_ann_file = 'data/coco/annotations/instances_val2017.json'
laud_bbox_evaluator = [
    dict(type='CocoMetric', ann_file=laud_coco_ann_file, metric='bbox',
         format_only=False, backend_args=None),
    _base_.laud_latency_metric,
]
laud_instance_evaluator = [
    dict(type='CocoMetric', ann_file=laud_coco_ann_file,
         metric=['bbox', 'segm'], format_only=False, backend_args=None),
    _base_.laud_latency_metric,
]
