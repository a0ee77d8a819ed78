"""LAUD-ResNet: shapes at odd sizes, skipped blocks, checkpoint loading,
config errors, masker initialisation. Equality with mmdet's ResNet,
gradients, determinism and the checkpoint round trip are clauses of the
family contract (tests/test_models/test_family_contract.py)."""
import copy

import pytest
import torch
from conftest import load_coco_images
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
