# The LAUD settings of the classification configs (configs/imagenet and the
# imagenette demos): the paper's objective
#   L = CE + alpha * L_sparse + beta * T^2 * KL(teacher || student)
# with alpha = 10, beta = 0.5, T = 4 and tau 5 -> 0.1 (paper sec. 3.5 and
# appendix B.2, docs/method.md sec. 2). Variables only, bound by the configs:
#   sparsity_loss=dict(_base_.laud_sparsity_loss, target_rate=target_rate)
#   distill_loss=_base_.laud_distill_loss
#   custom_hooks = [_base_.laud_gumbel_hook]
# (custom_hooks is not set here: mmpretrain's T2T-ViT recipe has its own,
# which a sibling base could not repeat.)
_base_ = ['./laud_runtime.py']

custom_imports = _base_.laud_custom_imports

# alpha = 10; per-block bounds relaxing to [0, 1] over the first third of
# training while the whole-network FLOPs ratio is pulled to the target
laud_sparsity_loss = dict(type='laud_mm.SparsityLoss', loss_weight=10.0,
                          warmup_fraction=0.33, block_bounds=True)
# beta = 0.5, T = 4: KL to the frozen static teacher
laud_distill_loss = dict(type='laud_mm.DistillationLoss', temperature=4.0,
                         loss_weight=0.5)
# Gumbel temperature 5 -> 0.1, exponentially, every iteration
laud_gumbel_hook = dict(type='laud_mm.GumbelTemperatureHook', tau0=5.0,
                        tau1=0.1)
# top-1 / top-5 with the backbone's activation rate and predicted latency,
# priced at the paper's classification batch of 128 images
laud_evaluator = [dict(type='Accuracy', topk=(1, 5)),
                  dict(_base_.laud_latency_metric, batch_size=128)]
# the ImageNet runs keep the best top-1 and the last three epochs
laud_checkpoint_hook = dict(type='CheckpointHook', interval=1,
                            max_keep_ckpts=3, save_best='accuracy/top1',
                            rule='greater')
