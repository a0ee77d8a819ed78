"""LAUD-ResNet: shapes at odd sizes, skipped blocks, checkpoint loading,
config errors, masker initialisation. Equality with mmdet's ResNet,
gradients, determinism and the checkpoint round trip are clauses of the
family contract (tests/test_models/test_family_contract.py)."""
import copy

import pytest
import torch
from conftest import check_channels_last_forward, load_coco_images
from mmdet.models.backbones import ResNet

import laud_mm  # noqa: F401
from laud_mm.models import LAUDResNet
from laud_mm.models.layers.maskers import MaskerBase

PARADIGMS = [('spatial', (4, 4, 2, 1)), ('channel', (2, 2, 2, 2)),
             ('layer', None)]


@pytest.mark.parametrize('paradigm,gran', PARADIGMS)
@pytest.mark.parametrize('hw', [(97, 75), (65, 129), (33, 33)])
def test_output_shapes_match_resnet_at_odd_sizes(paradigm, gran, hw):
    ref = ResNet(50, out_indices=(0, 1, 2, 3))
    ref.eval()  # mmdet's ResNet.train returns None: no chaining
    net = LAUDResNet(50, paradigm=paradigm, granularity=gran,
                     out_indices=(0, 1, 2, 3)).eval()
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        outs, refs = net(x), ref(x)
    assert [o.shape for o in outs] == [r.shape for r in refs]
    stats = net.activation_stats()
    assert stats['flops'].shape == (2,)
    assert len(stats['block_flops']) == 16
    # geometry used by the predictor agrees with the real forward
    geoms = net.block_geometries(hw)
    assert geoms[-1].out_hw == tuple(outs[-1].shape[-2:])
    assert [g.in_hw for g in geoms] == [g.in_hw for g in stats['geometries']]


def test_gates_off_gives_the_shortcut_and_rate_below_one():
    net = LAUDResNet(50, paradigm='layer', out_indices=(0, 1, 2, 3)).eval()
    net.force_gates(0.0)
    x = load_coco_images(n=1, size=(64, 64))
    with torch.no_grad():
        net(x)
    st = net.activation_stats()
    # only stem, maskers and the 4 downsample convs remain
    assert 0 < float(st['activation_rate']) < 0.15
    block = net.layer1[1]  # identity shortcut: skipped block is the identity
    y = torch.relu(torch.randn(1, 256, 16, 16))
    with torch.no_grad():
        assert torch.equal(block(y), y)


def test_loads_torchvision_and_mmpretrain_checkpoints(tmp_path):
    from mmengine.runner import load_checkpoint
    torch.manual_seed(3)
    ref = ResNet(50)
    ref.init_weights()
    sd = copy.deepcopy(ref.state_dict())
    # torchvision layout: the same names plus the classifier head
    tv = dict(sd, **{'fc.weight': torch.randn(1000, 2048),
                     'fc.bias': torch.randn(1000)})
    torch.save(tv, tmp_path / 'tv.pth')
    net = LAUDResNet(50, paradigm='channel', granularity=(2, 2, 2, 2),
                     init_cfg=dict(type='Pretrained',
                                   checkpoint=str(tmp_path / 'tv.pth')))
    net.init_weights()
    for k, v in sd.items():
        assert torch.equal(net.state_dict()[k], v), k
    # mmpretrain / Runner layout: {'state_dict': {'backbone.*', 'head.*'}, 'meta'}
    ckpt = {'state_dict': {**{'backbone.' + k: v for k, v in sd.items()},
                           'head.fc.weight': torch.randn(10, 2048)},
            'meta': {'epoch': 3}}
    torch.save(ckpt, tmp_path / 'mmpretrain.pth')
    net2 = LAUDResNet(50, paradigm='spatial', granularity=(4, 4, 2, 1))
    masker_before = copy.deepcopy(net2.layer1[0].masker.state_dict())
    load_checkpoint(net2, str(tmp_path / 'mmpretrain.pth'),
                    revise_keys=[(r'^backbone\.', '')])
    for k, v in sd.items():
        assert torch.equal(net2.state_dict()[k], v), k
    for k, v in masker_before.items():  # maskers untouched
        assert torch.equal(net2.layer1[0].masker.state_dict()[k], v)


def test_resnet101_has_33_blocks_and_registry_builds_it():
    from mmdet.registry import MODELS as DET
    from mmpretrain.registry import MODELS as CLS
    for reg in (DET, CLS):
        net = reg.build(dict(type='laud_mm.LAUDResNet', depth=101,
                             paradigm='layer'))
        assert isinstance(net, LAUDResNet) and len(net.blocks) == 33


@pytest.mark.parametrize('kwargs,key', [
    (dict(paradigm='pixel'), 'paradigm'),
    (dict(paradigm='spatial', granularity=(4, 4, 2)), 'granularity'),
    (dict(paradigm='spatial', granularity=(4, 4, 0, 1)), 'granularity'),
    (dict(paradigm='channel', granularity=(2, -2, 2, 2)), 'granularity'),
    (dict(paradigm='channel', granularity=None), 'granularity'),
    (dict(paradigm='channel', granularity=(3, 2, 2, 2)), 'granularity'),
    (dict(paradigm='layer', granularity=(1, 1, 1, 1)), 'granularity'),
    (dict(depth=34, paradigm='layer'), 'depth'),
])
def test_bad_config_values_name_the_key(kwargs, key):
    kwargs = dict(kwargs)
    depth = kwargs.pop('depth', 50)
    with pytest.raises(ValueError, match=key):
        LAUDResNet(depth, **kwargs)


def test_masker_init_is_keep_biased():
    net = LAUDResNet(50, paradigm='spatial', granularity=(4, 4, 2, 1)).eval()
    x = load_coco_images(n=2, size=(128, 128))
    with torch.no_grad():
        net(x)
    dens = torch.stack(net.activation_stats()['block_density'])
    assert dens.min() == 1.0  # the network starts full
    assert all(isinstance(m, MaskerBase) for m in net.maskers())


def test_init_weights_keeps_the_keep_bias_of_maskers():
    net = LAUDResNet(50, paradigm='spatial', granularity=(4, 4, 2, 1))
    net.init_weights()  # mmdet's Kaiming init touches every Conv2d first
    for m in net.maskers():
        assert m.conv.bias.tolist() == [5.0, 0.0]


# ------------------------------------------ mmdet ResNet options by paradigm
#: the options of LAUDResNet's table that are not on for every paradigm
DCN = dict(dcn=dict(type='DCNv2', deform_groups=1, fallback_on_stride=False),
           stage_with_dcn=(False, True, True, True))
PLUGINS = dict(plugins=[dict(cfg=dict(type='ContextBlock', ratio=1. / 4),
                             stages=(False, True, True, True),
                             position='after_conv3')])
GN = dict(norm_cfg=dict(type='GN', num_groups=4, requires_grad=True))
#: weight standardisation, with GN as mmdet's GN+WS configs use it (with BN
#: at its initial statistics the standardised activations overflow)
CONV_WS = dict(conv_cfg=dict(type='ConvWS'), **GN)


def _random_layer_gates(net, x):
    with torch.no_grad():
        net(x)
    g = torch.Generator().manual_seed(0)
    for b in net.blocks:
        b.masker.forced_gate = (torch.rand(x.shape[0], generator=g) <
                                0.5).float()


@pytest.mark.parametrize('label,options', [
    ('dcn', DCN), ('plugins', PLUGINS), ('gn', GN), ('conv_ws', CONV_WS),
    ('all', dict(**DCN, **PLUGINS, **GN))])
def test_layer_paradigm_supports_dcn_plugins_and_any_norm(label, options):
    """The layer paradigm computes a block whole or skips it: with mmdet's
    DCN, plugins, GN or weight-standardised convs its dynamic inference runs
    the block's own modules on the kept samples (no BN folding) and equals
    the masked-dense model; the masked-dense model with every gate on is
    mmdet's ResNet with the same options, bit for bit."""
    torch.manual_seed(0)
    ref = ResNet(50, base_channels=16, **copy.deepcopy(options))
    net = LAUDResNet(50, 'layer', base_channels=16, dynamic_inference=True,
                     **copy.deepcopy(options))
    net.load_state_dict(ref.state_dict(), strict=False)
    net.eval()
    ref.eval()
    x = load_coco_images(n=3, size=(64, 64))
    # the blocks' own modules run on NCHW (mmcv's DCN takes nothing else)
    assert net.dynamic_memory_format(x) == torch.contiguous_format
    net.force_gates(1.0)
    with torch.no_grad():
        net.dynamic_inference = False
        assert all(torch.equal(a, b) for a, b in zip(net(x), ref(x)))
    _random_layer_gates(net, x)
    with torch.no_grad():
        dense = net(x)
        net.dynamic_inference = True
        dyn = net(x)
    assert 0 < float(torch.cat([b.last_stats['gate']
                                for b in net.blocks]).mean()) < 1
    for a, b in zip(dyn, dense):
        assert (a - b).abs().max() <= 1e-5 * max(1., b.abs().max())


@pytest.mark.parametrize('paradigm,gran', PARADIGMS[:2])
@pytest.mark.parametrize('label,options,key', [
    ('dcn', DCN, r'dcn=\{.*DCNv2.*\} is not supported with paradigm='),
    ('plugins', PLUGINS, r'plugins=\[.*ContextBlock.*\] is not supported '
     r'with paradigm=')])
def test_spatial_channel_refuse_dcn_and_plugins(paradigm, gran, label,
                                                options, key):
    with pytest.raises(ValueError, match=key + repr(paradigm)):
        LAUDResNet(50, paradigm, gran, **copy.deepcopy(options))


@pytest.mark.parametrize('paradigm,gran', PARADIGMS[:2])
@pytest.mark.parametrize('label,options,key', [
    ('gn', GN, r"norm_cfg=\{'type': 'GN'"),
    ('conv_ws', dict(conv_cfg=dict(type='ConvWS')),
     r"conv_cfg=\{'type': 'ConvWS'\}")])
def test_unfoldable_options_are_masked_dense_only(paradigm, gran, label,
                                                  options, key):
    """GN or weight standardisation with spatial / channel skipping: trains
    and evaluates masked-dense; dynamic inference (BN folded into plain
    convolutions) is refused when built or switched on, naming the option
    (it used to fail at the first dynamic forward with a BN-folding
    message)."""
    match = key + r'.* supports masked-dense evaluation only'
    with pytest.raises(ValueError, match=match):
        LAUDResNet(50, paradigm, gran, base_channels=16,
                   dynamic_inference=True, **copy.deepcopy(options))
    net = LAUDResNet(50, paradigm, gran, base_channels=16,
                     **copy.deepcopy(options))
    net.eval()
    with torch.no_grad():
        outs = net(load_coco_images(n=1, size=(64, 64)))
    assert all(torch.isfinite(o).all() for o in outs)
    with pytest.raises(ValueError, match=match):
        net.dynamic_inference = True
    assert net.dynamic_inference is False


@pytest.mark.parametrize('paradigm,gran', PARADIGMS)
def test_caffe_style_is_refused_by_every_paradigm(paradigm, gran):
    """style='caffe' puts the stride on conv1, which the FLOPs count and the
    latency model do not describe: refused when built; static (paradigm
    None) it is mmdet's ResNet."""
    with pytest.raises(ValueError, match=r"style='caffe' is not supported "
                       r'with paradigm=' + repr(paradigm)):
        LAUDResNet(50, paradigm, gran, style='caffe')
    torch.manual_seed(0)
    ref = ResNet(50, base_channels=16, style='caffe')
    net = LAUDResNet(50, None, base_channels=16, style='caffe')
    net.load_state_dict(ref.state_dict())
    net.eval()
    ref.eval()
    x = load_coco_images(n=1, size=(64, 64))
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(net(x), ref(x)))


@pytest.mark.parametrize('paradigm,gran', [('channel', (2, 2, 2, 2)),
                                           ('spatial', (4, 4, 2, 1)),
                                           ('layer', None)])
def test_dynamic_inference_runs_channels_last(paradigm, gran, monkeypatch):
    """The dynamic forward runs in its input's memory format: fed NCHW it
    returns NCHW features (what every consumer reads: mmcv's CPU RoIAlign
    reads channels_last maps wrongly), fed channels_last (the backbone's
    dynamic_memory_format where the fused CPU kernels run; the policy
    switch turns that advice off) it runs the kernels and the maskers'
    kernels on NHWC without transposing and returns channels_last features
    equal to the NCHW forward's and to masked-dense evaluation, with the
    same gates."""
    from laud_mm import ops
    from laud_mm.analysis.forced_gates import force_random_gates
    from laud_mm.ops import policy
    torch.manual_seed(0)
    net = LAUDResNet(50, paradigm=paradigm, granularity=gran,
                     dynamic_inference=True).eval()
    x = load_coco_images(n=2, size=(96, 128))
    force_random_gates(net, 0.5, 2, (96, 128), seed=1)
    cl = torch.channels_last
    fast = ops.fast_channel_branch(x)
    assert (net.dynamic_memory_format(x) == cl) == fast
    monkeypatch.setattr(policy, 'CHANNELS_LAST_CPU', False)
    assert net.dynamic_memory_format(x) == torch.contiguous_format
    monkeypatch.setattr(policy, 'CHANNELS_LAST_CPU', True)
    check_channels_last_forward(net, x)
    with torch.no_grad():
        assert all(s.is_contiguous() for s in net.static_forward(x))
