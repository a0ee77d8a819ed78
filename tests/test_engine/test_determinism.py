"""Determinism: two evaluations of the same checkpoint, each in a freshly
built Runner, give identical metrics (COCO mAP and the backbone's activation
rate, GFLOPs and predicted latency), bit for bit. The gates are mixed (equal
keep / skip biases), so any randomness left in evaluation (a Gumbel draw in
eval mode, an order-dependent cache) would change the activation rate."""
import pytest
import torch
from mmengine.runner import Runner

from reliability_helpers import fast_cfg, mixed_gates


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    torch.manual_seed(0)
    model = MODELS.build(fast_cfg('/tmp/unused').model)
    model.init_weights()
    mixed_gates(model.backbone)
    path = tmp_path_factory.mktemp('det') / 'ckpt.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return str(path)


def _evaluate(work_dir, ckpt, seed):
    cfg = fast_cfg(work_dir, n_val=5, val_batch=2)
    cfg.load_from = ckpt
    cfg.randomness = dict(seed=seed)  # evaluation must not depend on it
    return Runner.from_cfg(cfg).test()


def test_two_evaluations_of_a_checkpoint_are_identical(checkpoint, tmp_path):
    a = _evaluate(tmp_path / 'a', checkpoint, seed=0)
    b = _evaluate(tmp_path / 'b', checkpoint, seed=123)
    for key in ('coco/bbox_mAP', 'laud/activation_rate', 'laud/backbone_GFLOPs',
                'laud/latency_ms', 'laud/static_latency_ms', 'laud/speedup'):
        assert key in a
    assert a == b  # exact, latency figures included
    assert 0.05 < a['laud/activation_rate'] < 0.95  # the gates are mixed
