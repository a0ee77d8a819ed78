"""Sparsity loss (docs/method.md sec. 2) on hand-computed cases and on a
real backbone forward."""
import math

import pytest
import torch
from conftest import load_coco_images
from mmengine.logging import MessageHub

import laud_mm  # noqa: F401
from laud_mm.models import LAUDResNet, SparsityLoss
from laud_mm.models.losses import train_progress


def test_bounds_relax_over_the_warmup():
    loss = SparsityLoss(target_rate=0.4, warmup_fraction=0.33)
    assert loss.bounds(0.0) == pytest.approx((0.4, 0.4))
    lo, up = loss.bounds(0.165)  # p = 0.5 -> prog = cos^2(pi/4) = 0.5
    assert lo == pytest.approx(0.2) and up == pytest.approx(0.7)
    assert loss.bounds(0.33) == pytest.approx((0.0, 1.0), abs=1e-12)
    assert loss.bounds(1.0) == pytest.approx((0.0, 1.0), abs=1e-12)


def test_loss_value_by_hand():
    stats = dict(
        block_flops=[torch.tensor([80., 100.]), torch.tensor([10., 30.])],
        block_dense_flops=[100., 100.], dense_flops=300.,
        flops=torch.tensor([190., 230.]))
    loss = SparsityLoss(target_rate=0.5, loss_weight=10.)
    # progress 0: bounds [0.5, 0.5]; r = (0.9, 0.2); global = 210 / 300 = 0.7
    out = loss(stats, progress=0.0)['loss_sparsity']
    block = ((0.9 - 0.5) ** 2 + (0.5 - 0.2) ** 2) / 2
    assert out.item() == pytest.approx(10 * (block + (0.7 - 0.5) ** 2))
    # after warm-up only the global term remains
    out = loss(stats, progress=0.5)['loss_sparsity']
    assert out.item() == pytest.approx(10 * 0.2 ** 2)
    glob = SparsityLoss(target_rate=0.5, block_bounds=False)
    assert glob(stats, progress=0.)['loss_sparsity'].item() == \
        pytest.approx(0.2 ** 2)


def test_progress_comes_from_the_message_hub():
    hub = MessageHub.get_instance('test_sparsity_progress')
    hub.update_info('iter', 25)
    hub.update_info('max_iters', 100)
    assert train_progress() == pytest.approx(0.25)


@pytest.mark.parametrize('paradigm,gran', [('spatial', (4, 4, 2, 1)),
                                           ('channel', (2, 2, 2, 2)),
                                           ('layer', None)])
def test_loss_pushes_maskers_on_a_real_forward(paradigm, gran):
    torch.manual_seed(0)
    net = LAUDResNet(50, paradigm=paradigm, granularity=gran,
                     zero_init_residual=False).train()
    net.set_tau(1.0)
    net(load_coco_images(n=2, size=(64, 64)))
    stats = net.activation_stats()
    # keep-biased start: the rate is near 1, far above the target
    assert float(stats['activation_rate'].mean()) > 0.9
    out = SparsityLoss(target_rate=0.3)(stats, progress=0.5)['loss_sparsity']
    assert out.item() > 0.3
    out.backward()
    grads = [p.grad for m in net.maskers() for p in m.parameters()]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize('kwargs,key', [
    (dict(target_rate=0.), 'target_rate'), (dict(target_rate=1.5), 'target_rate'),
    (dict(target_rate=-0.2), 'target_rate'),
    (dict(target_rate=0.5, loss_weight=-1.), 'loss_weight'),
    (dict(target_rate=0.5, warmup_fraction=2.), 'warmup_fraction')])
def test_bad_values_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        SparsityLoss(**kwargs)


def test_target_rate_one_is_allowed():
    assert SparsityLoss(target_rate=1.0).bounds(0.) == (1.0, 1.0)
    assert math.isclose(SparsityLoss(target_rate=1.0).bounds(1.)[1], 1.0)
