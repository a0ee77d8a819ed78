"""Refold the BN-folded weights of dynamic inference before every
validation and test epoch.

Dynamic inference runs on BN-folded weights cached on each block
(:func:`laud_mm.models.layers.folding.cached_fold`); the cache follows
every in-place write through torch, which bumps a tensor's version
counter, but not a write through ``.data``. mmengine's ``EMAHook`` swaps
the averaged weights in and out with ``p.data.copy_`` around every
validation and test epoch, so without a refold the dynamic model would be
evaluated with the weights of the previous swap. Refolding costs one fold
per block per epoch (well under a second for a ResNet-50).

Source: engineering of the paper's sec. 3.4 dynamic operators (BN folded
into the convolutions) inside mmengine's training loop.
"""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from ...models.layers.folding import clear_folds
from ...registry import HOOKS


@HOOKS.register_module()
class FoldCacheResetHook(Hook):
    """Drop the cached BN folds of the runner's model before each
    validation and test epoch (priority ``LOWEST``: after any hook that
    swaps weights in then, such as ``EMAHook``). The LAUD base configs
    name it (``default_hooks.fold_cache``)."""

    priority = 'LOWEST'

    def _reset(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        clear_folds(model)

    def before_val_epoch(self, runner) -> None:
        """Drop the folds (the weights may have been swapped since)."""
        self._reset(runner)

    def before_test_epoch(self, runner) -> None:
        """Drop the folds (the weights may have been swapped since)."""
        self._reset(runner)
