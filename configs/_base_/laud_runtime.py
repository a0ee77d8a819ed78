# What every LAUD config shares, whatever the task: the import of laud_mm,
# the laud_mm hooks and metric, and the paradigm variables of
# models/laud_paradigms.py.
#
# Variables only, no config key: mmengine refuses a key defined by two bases
# of one `_base_` list, and lists replace rather than merge, so this file can
# sit beside any upstream base (mmseg's Mask2Former sets `custom_imports`
# itself) while the config (or task runtime) that joins them binds the
# variables, e.g.
#   custom_imports = _base_.laud_custom_imports
#   default_hooks = _base_.laud_default_hooks
# A dict assigned to `default_hooks` merges into the upstream runtime's, so
# the logger keeps the upstream interval and type changes only; mmengine's
# Runner registers the extra keys (rng_state, weights_only_checkpoint) as
# hooks too. To leave one out, remove its key (cfg.default_hooks.pop(...)):
# mmengine accepts None only for its own default-hook names.
_base_ = ['./models/laud_paradigms.py']

laud_custom_imports = dict(imports=['laud_mm'], allow_failed_imports=False)

laud_default_hooks = dict(
    # mmengine's LoggerHook, but the test-metrics json is written by the
    # main process only (all ranks wrote one file under dist_test.sh)
    logger=dict(type='laud_mm.MainProcessLoggerHook'),
    # random-generator states saved in checkpoints and restored on --resume,
    # so a resumed run draws the Gumbel noise of an uninterrupted one
    rng_state=dict(type='laud_mm.RNGStateHook'),
    # checkpoints that load with torch.load(weights_only=True)
    weights_only_checkpoint=dict(type='laud_mm.WeightsOnlyCheckpointHook'),
    # dynamic inference's BN folds refolded before every val / test epoch
    # (EMAHook swaps weights through .data, which the fold cache cannot see)
    fold_cache=dict(type='laud_mm.FoldCacheResetHook'))

# backbone activation rate, GFLOPs and predicted latency on a V100
# (docs/method.md sec. 4), evaluated beside the task metric: per image at
# the input sizes evaluated (batch 1; classification configs: 128)
laud_latency_metric = dict(type='laud_mm.BackboneLatencyMetric',
                           hardware='v100', batch_size=1)
