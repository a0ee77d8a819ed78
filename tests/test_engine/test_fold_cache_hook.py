"""FoldCacheResetHook: dynamic inference after mmengine's EMAHook swaps the
averaged weights in (through ``.data``, which bumps no version counter, so
the BN-fold cache cannot see it) computes with the swapped-in weights."""
from types import SimpleNamespace

import torch
from mmengine.hooks import EMAHook

import laud_mm  # noqa: F401
from laud_mm import FoldCacheResetHook
from laud_mm.models import LAUDResNet

from conftest import load_coco_images


def test_dynamic_eval_after_an_ema_swap_uses_the_swapped_weights():
    torch.manual_seed(0)
    net = LAUDResNet(50, paradigm='layer', dynamic_inference=True).eval()
    runner = SimpleNamespace(model=net)
    ema, reset = EMAHook(), FoldCacheResetHook()
    ema.before_run(runner)
    with torch.no_grad():  # averaged weights that differ from the model's
        for p in ema.ema_model.module.parameters():
            p.mul_(0.9)
        for b in ema.ema_model.module.buffers():
            if b.is_floating_point():
                b.mul_(0.9)
    x = load_coco_images(n=2, size=(64, 96))

    def dynamic_and_dense():
        with torch.no_grad():
            net.dynamic_inference = True
            dyn = net(x)
            net.dynamic_inference = False
            ref = net(x)
            net.dynamic_inference = True
        return max(float((a - r).abs().max()) / max(1., float(r.abs().max()))
                   for a, r in zip(dyn, ref))

    assert dynamic_and_dense() <= 1e-4  # folds cached for these weights
    ema.before_val_epoch(runner)  # the averaged weights swapped in
    assert dynamic_and_dense() > 1e-2  # stale folds: the defect
    reset.before_val_epoch(runner)
    assert dynamic_and_dense() <= 1e-4
    ema.after_val_epoch(runner)  # swapped back
    ema.before_test_epoch(runner)
    reset.before_test_epoch(runner)
    assert dynamic_and_dense() <= 1e-4


def test_laud_configs_name_the_hook():
    """Every task runtime of the LAUD configs passes the hook to mmengine's
    Runner (default_hooks.fold_cache), after any weight-swapping hook."""
    import os.path as osp
    from mmengine.config import Config
    from conftest import ROOT
    for cfg in ['configs/demo/retinanet_laud-r50-layer_coco-tiny.py',
                'configs/imagenet/laud-r50-spatial-s4421_8xb128_in1k.py']:
        hooks = Config.fromfile(osp.join(ROOT, cfg)).default_hooks
        assert hooks.fold_cache.type == 'laud_mm.FoldCacheResetHook', cfg
    assert FoldCacheResetHook.priority == 'LOWEST'
