"""Dilated LAUD-ResNets, as semantic segmentation builds them: mmseg's
ResNetV1c settings (deep stem, ``strides=(1, 2, 1, 1)``, ``dilations=(1, 1,
2, 4)``, ``contract_dilation=True``: output stride 8).

- the blocks are mmseg's ``ResNetV1c`` block for block (same dilations,
  same parameter names: its state dict loads strictly, outputs bit for bit);
- the geometry, FLOPs and predicted latency follow the network as built
  (the stem and block FLOPs equal a count of the real modules' MACs, the
  predictor's operators carry the dilations and the larger maps);
- config errors name the key.

Dynamic inference == masked-dense for these settings in all three
paradigms is a case of the family contract's exactness clause
(tests/test_models/test_family_contract.py, variants 'v1c-d8').
Source: Chen et al. 2017 (DeepLab, output stride 8), mmseg ``ResNetV1c``.
"""
import dataclasses

import pytest
import torch
import torch.nn as nn

import laud_mm  # noqa: F401
from laud_mm.latency import LatencyPredictor
from laud_mm.models.resnet import resnet_geometries, stage_block_settings
from laud_mm.registry import MODELS
from laud_mm.structures import (DeepStemGeometry, StemGeometry,
                                block_op_flops, stem_flops)

D8 = dict(strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4),
          contract_dilation=True)
PARADIGMS = [('spatial', (4, 4, 2, 1)), ('channel', (2, 2, 2, 2)),
             ('layer', None)]


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def _v1c(paradigm=None, gran=None, **kw):
    torch.manual_seed(0)
    return MODELS.build(dict(type='laud_mm.LAUDResNetV1c', depth=50,
                             paradigm=paradigm, granularity=gran,
                             out_indices=(0, 1, 2, 3), norm_eval=False,
                             **D8, **kw))


def test_blocks_and_outputs_are_mmseg_resnetv1c():
    from mmseg.models.backbones import ResNetV1c
    ref = ResNetV1c(depth=50, out_indices=(0, 1, 2, 3), **D8)
    ref.init_weights()
    ref_dil = [b.conv2.dilation[0] for n in ref.res_layers
               for b in getattr(ref, n)]
    # contract_dilation: the first block of stages 3 and 4 at 1 and 2
    assert ref_dil == [1] * 7 + [1] + [2] * 5 + [2] + [4] * 2
    x = torch.randn(2, 3, 61, 47)
    ref.eval()
    with torch.no_grad():
        want = ref(x)
    for paradigm, gran in [(None, None)] + PARADIGMS:
        net = _v1c(paradigm, gran)
        assert [b.conv2.dilation[0] for b in net.blocks] == ref_dil
        assert [b.conv2.padding[0] for b in net.blocks] == ref_dil
        assert [b.dilation for b in net.blocks] == ref_dil
        missing, unexpected = net.load_state_dict(ref.state_dict(),
                                                  strict=False)
        assert not unexpected and all('masker' in k for k in missing)
        net.eval()
        net.force_gates(None if paradigm is None else 1.0)
        with torch.no_grad():
            got = net(x)
        for a, b in zip(got, want):
            assert torch.equal(a, b), paradigm
    assert [tuple(o.shape[-2:]) for o in got] == [(16, 12), (8, 6), (8, 6),
                                                  (8, 6)]


def _conv_pool_macs(module: nn.Module, x: torch.Tensor) -> float:
    """Multiply-accumulates per sample of every Conv2d / Linear (and one
    operation per input element of every max-pool) in a forward of x,
    counted with hooks on the real modules."""
    total = [0.]

    def conv(m, inp, out):
        k = m.kernel_size[0] * m.kernel_size[1]
        total[0] += out.numel() / out.shape[0] * m.in_channels / m.groups * k

    def linear(m, inp, out):
        total[0] += out.numel() / out.shape[0] * m.in_features

    def pool(m, inp, out):
        total[0] += inp[0].numel() / inp[0].shape[0]

    hooks = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear))
        elif isinstance(m, nn.MaxPool2d):
            hooks.append(m.register_forward_hook(pool))
    with torch.no_grad():
        module(x)
    for h in hooks:
        h.remove()
    return total[0]


@pytest.mark.parametrize('deep_stem', [True, False])
@pytest.mark.parametrize('hw', [(61, 47), (96, 128)])
def test_stem_and_backbone_flops_equal_a_count_of_the_real_modules(
        deep_stem, hw):
    torch.manual_seed(0)
    net = MODELS.build(dict(type='laud_mm.LAUDResNet', depth=50,
                            deep_stem=deep_stem, out_indices=(0, 1, 2, 3),
                            **D8)).eval()
    stem_mods = net.stem if deep_stem else nn.Sequential(
        net.conv1, net.norm1, net.relu)
    x = torch.randn(1, 3, *hw)
    stem = net.stem_geometry(hw)
    assert isinstance(stem, DeepStemGeometry if deep_stem else StemGeometry)
    counted = _conv_pool_macs(nn.Sequential(stem_mods, net.maxpool), x)
    assert stem_flops(stem) == counted
    with torch.no_grad():
        out = stem_mods(x)
        assert tuple(out.shape[-2:]) == stem.conv_hw
        assert tuple(net.maxpool(out).shape[-2:]) == stem.out_hw
    # the whole static backbone, dilated stages included
    net(x)
    assert net.activation_stats()['dense_flops'] == _conv_pool_macs(net, x)


def test_geometry_of_the_network_as_built():
    for deep in (True, False):
        net = _v1c() if deep else MODELS.build(dict(
            type='laud_mm.LAUDResNet', depth=50, **D8))
        for hw in ((512, 512), (61, 47)):
            geoms, stem = resnet_geometries(50, hw, **D8, deep_stem=deep)
            assert net.block_geometries(hw) == geoms
            assert net.stem_geometry(hw) == stem
    geoms, _ = resnet_geometries(50, (512, 512), **D8)
    assert [g.dilation for g in geoms] == [1] * 7 + [1] + [2] * 5 + \
        [2] + [4] * 2
    # output stride 8: stages 2-4 all at 64 x 64
    assert {g.out_hw for g in geoms[3:]} == {(64, 64)}
    assert [g.has_downsample for g in geoms] == \
        [g.index == 0 for g in geoms]


@pytest.mark.parametrize('paradigm,gran', PARADIGMS)
def test_predictor_prices_the_dilated_network(paradigm, gran):
    pred = LatencyPredictor('v100')
    hw = (512, 512)
    g8, st8 = resnet_geometries(50, hw, paradigm, gran, **D8,
                                deep_stem=True)
    g32, st32 = resnet_geometries(50, hw, paradigm, gran)
    static8 = pred.predict_static(g8, 8, st8)
    static32 = pred.predict_static(g32, 8, st32)
    # the classification network's stages 3 and 4 run at 1/16 and 1/32;
    # at output stride 8 they run at 1/8: 4x and 16x the FLOPs
    assert static8.per_stage_ms[2] > 2.5 * static32.per_stage_ms[2]
    assert static8.per_stage_ms[3] > 8 * static32.per_stage_ms[3]
    # the deep stem is priced (three 3x3 convs), not the 7x7 conv
    assert [o.name for o in static8.stem_ops] == \
        ['stem_conv1', 'stem_conv2', 'stem_conv3', 'stem_pool']
    # the operators priced are the network's: per block, the MACs of its
    # convolutions are the FLOPs count of the static block as built (batch 8)
    for g, ops in zip(g8, static8.block_ops):
        convs = sum(o.macs for o in ops if o.name.startswith(
            ('conv', 'downsample')))
        static = dataclasses.replace(g, paradigm=None, granularity=None)
        assert convs == pytest.approx(
            8 * sum(block_op_flops(static).values()))
    assert sum(o.macs for o in static8.stem_ops if o.name.startswith(
        'stem_conv')) == pytest.approx(8 * (stem_flops(st8) - 64 * 256 * 256))
    # skipping half the work is predicted faster in the undilated stages;
    # channel and layer skipping also in the whole network. Spatial
    # skipping gathers each active pixel's whole dilated window ((2d + 1)^2
    # pixels for S = 1: 81 at d = 4), so at output stride 8 its dilated
    # stages are predicted slower than static (docs/segmentation.md)
    half = pred.predict_backbone(g8, [0.5] * len(g8), 8, st8)
    assert all(half.per_stage_ms[i] < static8.per_stage_ms[i]
               for i in (0, 1))
    if paradigm == 'spatial':
        assert half.per_stage_ms[3] > static8.per_stage_ms[3]
    else:
        assert half.total_ms < static8.total_ms


def test_stage_block_settings_and_config_errors():
    assert stage_block_settings((3, 4, 6, 3), (1, 2, 1, 1), (1, 1, 2, 4),
                                True)[2] == [(1, 1)] + [(1, 2)] * 5
    assert stage_block_settings((3, 4, 6, 3), (1, 2, 1, 1), (1, 1, 2, 4),
                                False)[3] == [(1, 4)] * 3
    with pytest.raises(ValueError, match=r'contract_dilation=1 must be'):
        MODELS.build(dict(type='laud_mm.LAUDResNet', depth=50,
                          contract_dilation=1))
    with pytest.raises(ValueError, match=r'dilations=\(1, 2\) must give'):
        MODELS.build(dict(type='laud_mm.LAUDResNet', depth=50,
                          dilations=(1, 2)))
    with pytest.raises(ValueError, match=r'LAUDResNetV1c: deep_stem=False'):
        MODELS.build(dict(type='laud_mm.LAUDResNetV1c', depth=50,
                          deep_stem=False))
