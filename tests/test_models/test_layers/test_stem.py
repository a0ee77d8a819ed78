"""The BN-folded stem (laud_mm/models/layers/stem.py): where BN is folded
(dynamic inference, static_forward) the stem's norms do not run and the
backbone's features equal masked-dense evaluation's; the fold follows a
changed BN statistic; masked-dense evaluation, training and a stem that
cannot be folded run the upstream modules."""
import pytest
import torch
import torch.nn as nn

from conftest import load_coco_images
from laud_mm import LAUDRegNetY, LAUDResNet

SMALL_REGNET = dict(widths=(8, 16, 24, 32), depths=(1, 1, 1, 1),
                    group_width=8)


def _nets():
    return {
        'resnet': LAUDResNet(50, 'spatial', (4, 4, 2, 1), base_channels=16),
        'resnet-deep-stem': LAUDResNet(50, 'layer', base_channels=16,
                                       deep_stem=True, stem_channels=16),
        'regnety': LAUDRegNetY(SMALL_REGNET, 'channel', (2, 2, 2, 2)),
    }


def _stem_norms(net):
    if isinstance(net, LAUDRegNetY):
        return [net.bn1]
    if net.deep_stem:
        return [m for m in net.stem if isinstance(m, nn.BatchNorm2d)]
    return [net.norm1]


def _count_calls(modules):
    calls = []
    handles = [m.register_forward_hook(lambda *_: calls.append(1))
               for m in modules]
    return calls, handles


@pytest.mark.parametrize('name', ['resnet', 'resnet-deep-stem', 'regnety'])
def test_stem_folded_where_bn_folds(name):
    torch.manual_seed(0)
    net = _nets()[name]
    # non-trivial BN statistics, so that a missing fold would show
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    net.eval()
    x = load_coco_images(n=2, size=(96, 128))
    norms = _stem_norms(net)
    calls, handles = _count_calls(norms)
    with torch.no_grad():
        ref = net(x)  # masked-dense evaluation: the upstream stem
        assert len(calls) == len(norms)
        net.dynamic_inference = True
        gates = [b.masker.forced_gate for b in net.blocks]
        net.force_gates(1.0)
        del calls[:]
        out = net(x)
        assert calls == []  # folded: no BN pass over the stem output
        for a, b in zip(out, ref):
            assert (a - b).abs().max() <= 1e-4 * b.abs().max()
        st = net.static_forward(x)
        assert calls == []
        for a, b in zip(st, ref):
            assert (a - b).abs().max() <= 1e-4 * b.abs().max()
        # a statistic written through torch refreshes the fold
        # (a stale fold would stay at ``out``, 1e-2 or more away)
        norms[0].running_mean.add_(1.0)
        net.dynamic_inference = False
        ref2 = net(x)
        net.dynamic_inference = True
        out2 = net(x)
        assert (ref2[0] - ref[0]).abs().max() > 1e-2 * ref[0].abs().max()
        assert (out2[0] - ref2[0]).abs().max() <= 1e-4 * ref2[0].abs().max()
    for m, g in zip([b.masker for b in net.blocks], gates):
        m.forced_gate = g
    # with gradients (training or not) the upstream modules run
    del calls[:]
    net.dynamic_inference = False
    net(x)
    assert len(calls) == len(norms)
    net.train()
    net(x)
    assert len(calls) == 2 * len(norms)
    for h in handles:
        h.remove()


def test_unfoldable_stem_runs_upstream():
    """A GN stem (layer skipping supports any norm in dynamic inference)
    cannot be folded: its norm runs, and the features equal masked-dense
    evaluation's."""
    torch.manual_seed(0)
    net = LAUDResNet(50, 'layer', base_channels=16,
                     norm_cfg=dict(type='GN', num_groups=4)).eval()
    x = load_coco_images(n=2, size=(96, 128))
    calls, handles = _count_calls([net.norm1])
    with torch.no_grad():
        ref = net(x)
        net.dynamic_inference = True
        out = net(x)
    assert len(calls) == 2
    for a, b in zip(out, ref):
        assert (a - b).abs().max() <= 1e-4 * b.abs().max()
    for h in handles:
        h.remove()


@pytest.mark.parametrize('paradigm,granularity,recorded', [
    ('layer', None, True), ('channel', (2, 2, 2, 2), True),
    ('spatial', (4, 4, 2, 1), False)])
def test_regnety_stem_hands_its_means_to_the_first_masker(
        paradigm, granularity, recorded, monkeypatch):
    """In dynamic inference the folded RegNetY stem's ReLU pass records its
    output's channel means for the first block's layer / channel masker
    (relu_pooled_), which takes them instead of pooling; they equal the
    output's means; a spatial masker reads no means, and none are
    recorded; under inference_mode nothing is recorded and the features
    are the same."""
    from laud_mm.models.layers import maskers
    from laud_mm.models.layers.channel_mean import recorded_channel_mean
    pooled = []  # per masker call: whether its input carried a record
    real = maskers.channel_mean
    monkeypatch.setattr(maskers, 'channel_mean', lambda x: (
        pooled.append(recorded_channel_mean(x) is not None), real(x))[1])
    torch.manual_seed(0)
    net = LAUDRegNetY(SMALL_REGNET, paradigm, granularity,
                      dynamic_inference=True).eval()
    seen = []
    handle = net.blocks[0].register_forward_pre_hook(
        lambda m, args: seen.append((args[0],
                                     recorded_channel_mean(args[0]))))
    x = load_coco_images(n=2, size=(96, 128))
    with torch.no_grad():
        out = net(x)
        (stem_out, mean), = seen
        if recorded:
            assert mean is not None
            assert torch.allclose(mean, stem_out.mean(dim=(2, 3)),
                                  rtol=1e-5, atol=1e-6)
            assert pooled[0] is True  # the first masker took the record
        else:
            assert mean is None and pooled == []
        del seen[:]
        net.static_forward(x)  # no masker: nothing recorded
        assert seen[0][1] is None
    del seen[:]
    with torch.inference_mode():
        out_inf = net(x)
    assert seen[0][1] is None
    for a, b in zip(out_inf, out):
        assert torch.equal(a, b)
    handle.remove()
