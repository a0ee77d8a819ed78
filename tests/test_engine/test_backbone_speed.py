"""BackboneSpeedHook times the backbone as configured against its static
network on the evaluated batches and adds laud/measured_* to the metrics,
leaving the model's outputs and statistics as they were
(laud_mm/engine/hooks/backbone_speed.py)."""
from types import SimpleNamespace

import pytest
import torch

from conftest import load_coco_images
from laud_mm import BackboneSpeedHook, LAUDResNet


def _runner(model):
    return SimpleNamespace(model=model,
                           logger=SimpleNamespace(info=lambda *a: None))


@pytest.mark.parametrize('dynamic', [True, False])
def test_hook_times_and_keeps_outputs(dynamic):
    torch.manual_seed(0)
    # a narrow R50 (base_channels 16): the timing logic, not the speed
    backbone = LAUDResNet(50, paradigm='layer', base_channels=16,
                          dynamic_inference=dynamic).eval()
    backbone.force_gates(torch.tensor([1., 0.]))
    model = SimpleNamespace(backbone=backbone)
    x = load_coco_images(n=2, size=(64, 96))
    with torch.no_grad():
        ref = backbone(x)
    ref_stats = [b.last_stats['flops'].clone() for b in backbone.blocks]
    hook = BackboneSpeedHook(repeats=2)
    hook.before_test_epoch(_runner(model))
    with torch.no_grad():
        out = backbone(x)
        backbone(x)
    for a, b in zip(ref, out):
        assert torch.equal(a, b)
    for b, f in zip(backbone.blocks, ref_stats):
        assert torch.equal(b.last_stats['flops'], f)
    metrics = {'coco/bbox_mAP': 0.1}
    hook.after_test_epoch(_runner(model), metrics)
    assert hook.images == 4
    assert metrics['laud/measured_ms'] > 0
    assert metrics['laud/measured_static_ms'] > 0
    assert metrics['laud/measured_speedup'] == pytest.approx(
        metrics['laud/measured_static_ms'] / metrics['laud/measured_ms'])
    assert metrics['laud/measured_static_layout'] in ('NCHW', 'channels_last')
    # the hook is removed after the epoch: no more timing
    with torch.no_grad():
        backbone(x)
    assert hook.images == 4
    # the static network is the all-on network of the same weights
    backbone.force_gates(1.0)
    with torch.no_grad():
        dense = backbone(x)
        static = backbone.static_forward(x)
    for a, b in zip(dense, static):
        assert (a - b).abs().max() <= 1e-4 * a.abs().max()


def test_static_baseline_is_the_faster_memory_format(monkeypatch):
    """The static network is timed on the batch in NCHW and in
    channels_last, the dynamic backbone on the batch in its
    dynamic_memory_format; the static
    time is that of the format whose sum over the batches is smaller (here
    channels_last: 3 ms a batch against 5 ms; dynamic 2 ms), and it is
    named in the metrics."""
    torch.manual_seed(0)
    backbone = LAUDResNet(50, paradigm='layer', base_channels=16,
                          dynamic_inference=True).eval()
    model = SimpleNamespace(backbone=backbone)
    x = load_coco_images(n=2, size=(64, 96))
    hook = BackboneSpeedHook(repeats=2, warmup=False)
    calls = []

    def fake_time(fn, t):
        cl = not t.is_contiguous()
        calls.append((fn == backbone.static_forward, cl))
        if fn == backbone.static_forward:
            return 0.003 if cl else 0.005
        return 0.002
    monkeypatch.setattr(hook, '_time', fake_time)
    hook.before_test_epoch(_runner(model))
    with torch.no_grad():
        backbone(x)
        backbone(x)
    # per batch: NCHW static x 2, channels_last static x 2, dynamic x 2 in
    # the backbone's own format (channels_last on the fused CPU kernels)
    dyn_cl = backbone.dynamic_memory_format(x) == torch.channels_last
    assert calls == ([(True, False)] * 2 + [(True, True)] * 2 +
                     [(False, dyn_cl)] * 2) * 2
    metrics = {}
    hook.after_test_epoch(_runner(model), metrics)
    assert metrics['laud/measured_static_layout'] == 'channels_last'
    assert metrics['laud/measured_static_ms'] == pytest.approx(3. / 2)
    assert metrics['laud/measured_ms'] == pytest.approx(2. / 2)
    assert metrics['laud/measured_speedup'] == pytest.approx(1.5)


def test_validation_phase_off_by_default_and_errors():
    backbone = LAUDResNet(50, paradigm='layer', base_channels=16).eval()
    hook = BackboneSpeedHook()
    hook.before_val_epoch(_runner(SimpleNamespace(backbone=backbone)))
    metrics = {}
    hook.after_val_epoch(None, metrics)
    assert metrics == {}
    with pytest.raises(ValueError, match='repeats=0'):
        BackboneSpeedHook(repeats=0)
    with pytest.raises(ValueError, match="phases='test'"):
        BackboneSpeedHook(phases='test')
    with pytest.raises(RuntimeError, match='no LAUD backbone'):
        BackboneSpeedHook().before_test_epoch(
            _runner(SimpleNamespace(backbone=torch.nn.Conv2d(3, 3, 1))))
    with pytest.raises(ValueError, match='eval mode'):
        backbone.train().static_forward(torch.zeros(1, 3, 64, 64))
