"""GumbelTemperatureHook and GumbelNoiseHook: the schedules and their
errors (resume: see test_detector_e2e.py)."""
import math
import os.path as osp

import pytest
import torch

import laud_mm  # noqa: F401
from laud_mm import GumbelNoiseHook, GumbelTemperatureHook
from laud_mm.models.layers.gates import gumbel_gate

from conftest import ROOT  # noqa: E402


def test_exponential_schedule_from_5_to_0_1():
    hook = GumbelTemperatureHook(tau0=5.0, tau1=0.1)
    assert hook.tau_at(0, 1000) == pytest.approx(5.0)
    assert hook.tau_at(1000, 1000) == pytest.approx(0.1)
    assert hook.tau_at(500, 1000) == pytest.approx(math.sqrt(5.0 * 0.1))
    taus = [hook.tau_at(i, 100) for i in range(101)]
    assert all(a > b for a, b in zip(taus, taus[1:]))


def test_constant_for_detection():
    hook = GumbelTemperatureHook(tau0=0.1, tau1=0.1)
    assert all(hook.tau_at(i, 50) == pytest.approx(0.1) for i in range(51))


@pytest.mark.parametrize('kwargs,key', [(dict(tau0=0.), 'tau0'),
                                        (dict(tau1=-1.), 'tau1'),
                                        (dict(tau0='5'), 'tau0')])
def test_bad_values(kwargs, key):
    with pytest.raises(ValueError, match=key):
        GumbelTemperatureHook(**kwargs)


# ------------------------------------------------------------ noise scale
def test_noise_schedule():
    hook = GumbelNoiseHook(scale0=1.0, scale1=0.1)
    assert hook.scale_at(0, 100) == pytest.approx(1.0)
    assert hook.scale_at(100, 100) == pytest.approx(0.1)
    assert hook.scale_at(50, 100) == pytest.approx(math.sqrt(0.1))
    assert all(GumbelNoiseHook(0.5, 0.5).scale_at(i, 9) == pytest.approx(0.5)
               for i in range(10))


@pytest.mark.parametrize('kwargs,msg', [
    (dict(scale0=0.), r'scale0=0.0 must be a finite number > 0'),
    (dict(scale1=float('nan')), r'scale1=nan must be a finite number > 0'),
    (dict(scale0=True), r'scale0=True must be a finite number > 0'),
    (dict(scale0=0.1, scale1=1.0), r'scale1=1.0 > scale0=0.1')])
def test_noise_bad_values(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        GumbelNoiseHook(**kwargs)


def test_noise_hook_in_a_runner(tmp_path):
    """Two iterations of the demo detector on real coco_tiny images: every
    masker trains at the scheduled noise scale, which is logged, and
    evaluation gates stay deterministic."""
    from mmengine.runner import Runner

    from laud_mm.models.layers.maskers import MaskerBase
    from reliability_helpers import small_cfg
    cfg = small_cfg(tmp_path / 'run', max_iters=2)
    cfg.custom_hooks.append(dict(type='laud_mm.GumbelNoiseHook', scale0=1.0,
                                 scale1=0.01))
    runner = Runner.from_cfg(cfg)
    runner.train()
    last = 1.0 * 0.01 ** (1 / 2)  # set before iteration 1 of 2
    assert runner.message_hub.get_scalar(
        'train/gumbel_noise').current() == pytest.approx(last)
    maskers = [m for m in runner.model.modules() if isinstance(m, MaskerBase)]
    assert maskers and all(m.noise_scale == pytest.approx(last)
                           for m in maskers)
    # in eval the gate is the deterministic one whatever the noise scale
    m = maskers[0].eval()
    logits = torch.randn(1000, 2)
    assert torch.equal(m._gate(logits), gumbel_gate(logits, 1.0, False))


def test_noise_hook_needs_maskers(tmp_path):
    from mmengine.runner import Runner

    from reliability_helpers import small_cfg
    cfg = small_cfg(tmp_path / 'static', max_iters=1,
                    config=osp.join(ROOT, 'configs/demo/'
                                    'faster-rcnn_r50-static_coco-tiny.py'))
    cfg.custom_hooks = [dict(type='laud_mm.GumbelNoiseHook')]
    with pytest.raises(RuntimeError, match='no maskers'):
        Runner.from_cfg(cfg).train()
