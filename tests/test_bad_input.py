"""Invalid configs and inputs: each gets a clear error naming the offending
key and value, or is handled correctly (checked against an independent
computation). One test per row of the table in docs/reliability.md."""
import json
import logging
import os.path as osp

import mmcv
import numpy as np
import pytest
import torch
from mmengine.logging import MMLogger

from conftest import COCO_TINY, load_coco_images
from laud_mm import (BackboneLatencyMetric, BackboneSpeedHook,
                     GumbelTemperatureHook, LAUDResNet, SparsityLoss)
from laud_mm.latency import get_hardware
from laud_mm.models import LAUDRegNetY
from laud_mm.models.resnet.block import LAUDBottleneck
from reliability_helpers import fast_cfg, mixed_gates

torch.set_num_threads(2)

_TINY_REGNET = dict(widths=(8, 16, 24, 32), depths=(1, 1, 1, 1),
                    group_width=8)


def _sgd():
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)


# ------------------------------------------------------------ config rows
@pytest.mark.parametrize('build, match', [
    # wrong granularity lengths / types
    (lambda: LAUDResNet(50, 'spatial', (4, 4, 2)),
     r"granularity=\(4, 4, 2\) must give one S per stage \(4 entries\)"),
    (lambda: LAUDResNet(50, 'spatial', (4, 4, 2, 1, 1)),
     r"granularity=\(4, 4, 2, 1, 1\)"),
    (lambda: LAUDResNet(50, 'channel', 2), r"granularity=2 must give one G"),
    (lambda: LAUDResNet(50, 'spatial', None), r"granularity=None"),
    (lambda: LAUDResNet(50, 'spatial', (4, 4, 2.5, 1)),
     r"granularity=\(4, 4, 2.5, 1\) must hold positive integers"),
    # zero or negative values
    (lambda: LAUDResNet(50, 'spatial', (4, 0, 2, 1)),
     r"granularity=\(4, 0, 2, 1\) must hold positive integers"),
    (lambda: LAUDResNet(50, 'channel', (2, -2, 2, 2)),
     r"granularity=\(2, -2, 2, 2\) must hold positive integers"),
    (lambda: LAUDResNet(50, 'channel', (3, 2, 2, 2)),
     r"G=3 does not divide the stage-0 bottleneck width 64"),
    # a single block (LAUDBottleneck) without its S / G
    (lambda: LAUDBottleneck(256, 64, paradigm='channel'),
     r"granularity=None: paradigm='channel' needs the granularity G"),
    (lambda: LAUDBottleneck(256, 64, paradigm='spatial', granularity=0),
     r"granularity=0: paradigm='spatial' needs the granularity S"),
    (lambda: LAUDResNet(50, 'layer', (4, 4, 2, 1)),
     r"granularity=\(4, 4, 2, 1\) is only used with paradigm"),
    (lambda: GumbelTemperatureHook(tau0=0.0), r"tau0=0.0 must be a finite number > 0"),
    (lambda: GumbelTemperatureHook(tau0=5.0, tau1=-0.1),
     r"tau1=-0.1 must be a finite number > 0"),
    (lambda: GumbelTemperatureHook(tau0=float('inf')),
     r"tau0=inf must be a finite number > 0"),
    (lambda: GumbelTemperatureHook(tau0=float('nan')),
     r"tau0=nan must be a finite number > 0"),
    (lambda: GumbelTemperatureHook(tau0=5.0, tau1=float('inf')),
     r"tau1=inf must be a finite number > 0"),
    (lambda: GumbelTemperatureHook(tau0=0.1, tau1=5.0),
     r"tau1=5.0 > tau0=0.1: the temperature anneals down"),
    # mmdet ResNet options a paradigm does not support (LAUDResNet's table)
    (lambda: LAUDResNet(50, 'spatial', (4, 4, 2, 1), style='caffe'),
     r"style='caffe' is not supported with paradigm='spatial'"),
    (lambda: LAUDResNet(50, 'channel', (2, 2, 2, 2), dcn=dict(
        type='DCNv2', deform_groups=1), stage_with_dcn=(False, True, True,
                                                        True)),
     r"dcn=\{'type': 'DCNv2', 'deform_groups': 1\} is not supported with "
     r"paradigm='channel'"),
    (lambda: LAUDResNet(50, 'spatial', (4, 4, 2, 1), norm_cfg=dict(
        type='GN', num_groups=8), dynamic_inference=True),
     r"norm_cfg=\{'type': 'GN', 'num_groups': 8\} with paradigm='spatial' "
     r"supports masked-dense evaluation only"),
    # gates that would make masked-dense and dynamic evaluation differ
    (lambda: LAUDResNet(50, 'layer').force_gates(0.5),
     r"forced_gate=0.5 must be None, 0 or 1"),
    (lambda: LAUDResNet(50, 'spatial', (4, 4, 2, 1)).force_gates(0.7),
     r"forced_gate=0.7 must be None, 0 or 1"),
    (lambda: LAUDResNet(50, 'channel', (2, 2, 2, 2)).force_gates(
        torch.tensor([[1., 0.5]])), r"got values \[0.5\]"),
    (lambda: LAUDResNet(50, 'layer').set_tau(0), r"tau must be > 0, got 0"),
    (lambda: SparsityLoss(0.5, loss_weight=-1.0), r"loss_weight=-1.0"),
    (lambda: BackboneLatencyMetric('v100', batch_size=0), r"batch_size=0"),
    # target rate outside (0, 1]
    (lambda: SparsityLoss(0.0), r"target_rate=0.0 must lie in \(0, 1\]"),
    (lambda: SparsityLoss(-0.3), r"target_rate=-0.3 must lie in \(0, 1\]"),
    (lambda: SparsityLoss(1.5), r"target_rate=1.5 must lie in \(0, 1\]"),
    (lambda: SparsityLoss('0.5'), r"target_rate='0.5' must lie in \(0, 1\]"),
    # unknown hardware / paradigm / depth / precision
    (lambda: BackboneLatencyMetric('tpu-v9'), r"hardware='tpu-v9'"),
    (lambda: LAUDResNet(50, 'pixel', (4, 4, 2, 1)), r"paradigm='pixel' is unknown"),
    (lambda: LAUDResNet(34, 'layer'), r"depth=34 is not supported"),
    (lambda: __import__('laud_mm').CPUAmpOptimWrapper(
        dtype='int8', optimizer=torch.optim.SGD([torch.nn.Parameter(
            torch.zeros(1))], lr=0.1)), r"dtype='int8'"),
    (lambda: __import__('laud_mm').CPUAmpOptimWrapper(
        dtype=torch.int8, optimizer=_sgd()), r"dtype=torch.int8"),
    # a static loss scale only exists for float16; bad kinds are named
    (lambda: __import__('laud_mm').CPUAmpOptimWrapper(
        loss_scale=512., optimizer=_sgd()),
     r"loss_scale=512.0 applies to dtype='float16' only"),
    (lambda: __import__('laud_mm').CPUAmpOptimWrapper(
        dtype='float16', loss_scale=-1., optimizer=_sgd()),
     r"loss_scale=-1.0 must be 'dynamic', a positive finite float"),
    # mmdet ResNet options that size the network (mmdet asserts without a
    # message, or builds a broken network)
    (lambda: LAUDResNet(50, 'layer', out_indices=(0, 4)),
     r"out_indices=\(0, 4\) must hold stage indices in \[0, 4\)"),
    (lambda: LAUDResNet(50, 'layer', num_stages=5),
     r"num_stages=5 must be an integer in \[1, 4\]"),
    (lambda: LAUDResNet(50, 'layer', frozen_stages=7),
     r"frozen_stages=7 must be an integer in \[-1, 4\]"),
    (lambda: LAUDResNet(50, 'layer', base_channels=0),
     r"base_channels=0 must be an integer >= 1"),
    (lambda: LAUDBottleneck(256, 64, paradigm='layer', granularity=4),
     r"granularity=4 is only used with paradigm spatial/channel"),
    (lambda: LAUDResNet(50, 'layer', dynamic_inference='no'),
     r"dynamic_inference='no' must be True or False"),
    # the channel maskers' gradient scale: a bool, on channel maskers only
    (lambda: LAUDResNet(50, 'channel', (2, 2, 2, 2), group_grad_scale=0),
     r"group_grad_scale=0 must be True or False"),
    (lambda: LAUDResNet(50, 'spatial', (4, 4, 2, 1),
                        group_grad_scale=False),
     r"group_grad_scale=False applies to the channel maskers of "
     r"paradigm='channel' only; paradigm='spatial' has none"),
    (lambda: LAUDRegNetY(_TINY_REGNET, 'layer', group_grad_scale=False),
     r"group_grad_scale=False applies .* paradigm='layer' has none"),
    # RegNetY arch dicts
    (lambda: LAUDRegNetY(dict(_TINY_REGNET, depths=(1, 0, 1, 1))),
     r"arch depths=\(1, 0, 1, 1\) must hold positive integers"),
    (lambda: LAUDRegNetY(dict(_TINY_REGNET, group_width=0)),
     r"arch group_width=0 must be an integer >= 1"),
    (lambda: LAUDRegNetY(dict(_TINY_REGNET, widths=(8, 16, 24, -32))),
     r"arch widths=\(8, 16, 24, -32\) must hold positive integers"),
    (lambda: LAUDRegNetY(dict(_TINY_REGNET, se_ratio=-1)),
     r"arch se_ratio=-1 must be a finite number >= 0"),
    (lambda: LAUDRegNetY(dict(_TINY_REGNET, stem_channels=0)),
     r"arch stem_channels=0 must be an integer >= 1"),
    # SparsityLoss: bools, infinity and strings are not numbers
    (lambda: SparsityLoss(True), r"target_rate=True must lie in \(0, 1\]"),
    (lambda: SparsityLoss(0.5, loss_weight=float('inf')),
     r"loss_weight=inf must be a finite number >= 0"),
    (lambda: SparsityLoss(0.5, loss_weight=True), r"loss_weight=True"),
    (lambda: SparsityLoss(0.5, warmup_fraction='0.3'),
     r"warmup_fraction='0.3' must be a finite number >= 0"),
    (lambda: SparsityLoss(0.5, block_bounds='no'),
     r"block_bounds='no' must be True or False"),
    # BackboneSpeedHook: a hook that would never time anything
    (lambda: BackboneSpeedHook(phases=()),
     r"phases=\(\) must be a non-empty subset of \('val', 'test'\)"),
    (lambda: BackboneSpeedHook(phases=None), r"phases=None"),
    (lambda: BackboneSpeedHook(warmup='no'),
     r"warmup='no' must be True or False"),
    # a hardware spec with an infinite field priced every model finite
    (lambda: get_hardware('v100').replace(bandwidth_gbs=float('inf')),
     r"bandwidth_gbs=inf must be a positive finite number"),
    (lambda: get_hardware('v100').replace(num_pe=float('inf')),
     r"num_pe=inf must be a positive finite number"),
], ids=lambda v: v if isinstance(v, str) else '')
def test_invalid_config_raises_naming_key_and_value(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def _refused(module, work, call, match, monkeypatch):
    """``call()`` raises ValueError matching ``match`` before it reaches
    ``module.work`` (replaced by a function that fails the test)."""
    def reached(*a, **k):
        raise AssertionError(f'{work} ran: the option was not checked first')
    monkeypatch.setattr(module, work, reached)
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize('case', [
    'block_rate', 'quick_depths', 'depths', 'gpu_repeats', 'gpu_warmup',
    't2t_tiny_size', 'detector_scale', 'seeds', 'calibrate_out',
    'reuse_quick', 'reuse_layout', 'overlays'])
def test_tool_option_refused_before_any_work(case, monkeypatch, tmp_path):
    """Command-line options out of range, combined with one that makes them
    moot, or checked only after the work: refused at the start, naming the
    option and value."""
    from laud_mm.analysis import load_balance, validation, visualization
    from laud_mm.analysis.benchmark import detector, gpu, resnet, t2t_vit
    from laud_mm.latency import calibration
    if case in ('block_rate', 'quick_depths', 'depths'):
        kw, match = dict(
            block_rate=(dict(quick=True, block_rate=1.5),
                        r'--block-rate=1.5 must lie in \[0, 1\]'),
            quick_depths=(dict(quick=True, depths=[101], sizes=['det']),
                          r'--quick \(R50, 224 px\) cannot be combined '
                          r'with --depths=\[101\]'),
            depths=(dict(depths=[50, 34]),
                    r'--depths=\[50, 34\]: each must be one of '
                    r'\[50, 101, 152\]'))[case]
        _refused(resnet, '_benchmark',
                 lambda: resnet.benchmark_resnet(**kw), match, monkeypatch)
    elif case.startswith('gpu_'):
        kw = dict(repeats=0) if case == 'gpu_repeats' else dict(warmup=-3)
        _refused(gpu, 'require_gpu', lambda: gpu.run(device='cuda', **kw),
                 r'--repeats=0 must be an integer >= 1' if kw.get(
                     'repeats') == 0 else r'--warmup=-3 must be an integer '
                 r'>= 0', monkeypatch)
    elif case == 't2t_tiny_size':
        _refused(t2t_vit, 'timing_table', lambda: t2t_vit.benchmark_t2t_vit(
            tiny=True, size=128), r'--arch=None / --size=128 cannot be '
            r'used with --tiny', monkeypatch)
    elif case == 'detector_scale':
        _refused(detector, 'time_training', lambda: detector.
                 benchmark_detector(scale=(0, -5)), r'--scale=\(0, -5\) '
                 r'must be two positive sides', monkeypatch)
    elif case == 'seeds':
        _refused(load_balance, 'block_work',
                 lambda: load_balance.simulate(seeds=0),
                 r'--seeds=0 must be an integer >= 1', monkeypatch)
    elif case == 'overlays':
        _refused(visualization, 'list_images',
                 lambda: visualization.visualize_masks(
                     'cfg.py', 'none', ['img.jpg'], max_overlays=-1),
                 r'--max-overlays=-1 must be >= 0', monkeypatch)
    elif case == 'calibrate_out':
        _refused(calibration, 'dynamic_path_terms',
                 lambda: calibration.calibrate_hardware(
                     threads=2, out=str(tmp_path / 'spec.txt')),
                 r"--out='.*spec.txt' must end in .yaml, .yml or .json",
                 monkeypatch)
    else:
        reuse = tmp_path / 'results.json'
        reuse.write_text(json.dumps(dict(cases=[], layout='channels_last')))
        spec = get_hardware('v100').replace(name='cpu2', num_pe=2)
        kw, match = (dict(quick=True, min_time=5.), r'--quick/--min-time do '
                     r'not apply with --reuse') if case == 'reuse_quick' \
            else (dict(layout='NCHW'), r"--layout='NCHW': the cases of "
                  r"--reuse=.* were measured in 'channels_last'")
        _refused(validation, 'predict_cases', lambda: validation.
                 validate_predictor(hardware=spec, threads=2,
                                    reuse=str(reuse),
                                    out_dir=str(tmp_path / 'v'), **kw),
                 match, monkeypatch)


def test_train_amp_options_are_not_dropped(tmp_path):
    """``--amp-dtype`` needs ``--amp``; ``--amp`` keeps the config's own
    mixed-precision dtype and loss scale (it replaced both)."""
    import importlib.util
    from laud_mm.engine.amp import amp_optim_wrapper
    spec = importlib.util.spec_from_file_location(
        'train_tool', osp.join(osp.dirname(osp.dirname(__file__)), 'tools',
                               'train.py'))
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    cfg = osp.join(osp.dirname(osp.dirname(__file__)),
                   'configs/demo/faster-rcnn_laud-r50-spatial_coco-tiny.py')
    with pytest.raises(ValueError, match=r"--amp-dtype='float16' needs --amp"):
        train.build_cfg(train.parse_args([cfg, '--amp-dtype', 'float16',
                                          '--work-dir', str(tmp_path)]))
    opt = dict(type='SGD', lr=0.01)
    own = amp_optim_wrapper(dict(type='AmpOptimWrapper', dtype='float16',
                                 loss_scale=512., optimizer=opt))
    assert own['dtype'] == 'float16' and own['loss_scale'] == 512.
    assert amp_optim_wrapper(dict(type='AmpOptimWrapper', dtype='float16',
                                  optimizer=opt), 'bfloat16')['dtype'] == \
        'bfloat16'   # the command line wins
    # mmdet's usual AMP config: a static scale and no dtype is float16 (what
    # mmengine's AmpOptimWrapper runs), and the CPU wrapper builds from it
    mm = amp_optim_wrapper(dict(type='AmpOptimWrapper', loss_scale=512.,
                                optimizer=opt))
    assert mm['dtype'] == 'float16' and mm['loss_scale'] == 512.
    assert amp_optim_wrapper(dict(optimizer=opt))['dtype'] == (
        'float16' if torch.cuda.is_available() else 'bfloat16')
    assert __import__('laud_mm').CPUAmpOptimWrapper(
        dtype=None, optimizer=_sgd()).cast_dtype == torch.bfloat16
    # the CPU wrapper runs the config's static scale as mmengine's does
    w = __import__('laud_mm').CPUAmpOptimWrapper(
        dtype='float16', loss_scale=512., optimizer=_sgd())
    assert w.loss_scaler.get_scale() == 512. and w._scale_update_param == 512.


def test_target_rate_one_is_valid_and_gives_zero_loss_for_dense_net():
    """Boundary: t = 1 is allowed; the all-on network has zero loss."""
    net = LAUDResNet(50, 'spatial', (4, 4, 2, 1)).eval()
    net.force_gates(1.0)
    with torch.no_grad():
        net(load_coco_images(n=1, size=(96, 128)))
    loss = SparsityLoss(1.0)(net.activation_stats(), progress=1.0)
    assert float(loss['loss_sparsity']) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize('dynamic', [False, True])
@pytest.mark.parametrize('block', [0, 3])
def test_forced_gate_of_wrong_shape_is_refused(dynamic, block):
    """Masked-dense and dynamic inference, a stride-1 block and the first
    stride-2 block (whose dynamic path computes the masker on its own on
    every CPU: ``spatial_gate``)."""
    net = LAUDResNet(50, 'spatial', (4, 4, 2, 1)).eval()
    net.dynamic_inference = dynamic
    net.blocks[block].masker.forced_gate = torch.ones(1, 9, 9)
    with torch.no_grad(), pytest.raises(
            ValueError, match=r'forced_gate has shape \(1, 9, 9\)'):
        net(load_coco_images(n=1, size=(96, 128)))


def test_forced_gate_tensor_keeps_the_masker_in_the_graph():
    """A tensor gate override (benchmarks, tests) must not detach the masker:
    DDP with find_unused_parameters=False needs every parameter used."""
    net = LAUDResNet(50, 'spatial', (4, 4, 2, 1)).train()
    x = load_coco_images(n=1, size=(96, 128))
    masker = net.blocks[3].masker
    geom = net.block_geometries((96, 128))[3]
    masker.forced_gate = torch.zeros(1, *geom.patch_grid)
    sum(o.sum() for o in net(x)).backward()
    assert masker.conv.weight.grad is not None
    assert masker.conv.weight.grad.abs().sum() == 0  # connected, no effect


# ------------------------------------------------ S larger than the map
def test_patch_larger_than_feature_map_covers_the_whole_map():
    x = load_coco_images(n=2, size=(160, 256))
    big = LAUDResNet(50, 'spatial', (64, 64, 64, 64)).eval()
    ref = LAUDResNet(50, 'spatial', (4, 4, 2, 1)).eval()
    # the same weights (maskers have the same shapes for every S); the
    # record of the granularity is each model's own
    ref.load_state_dict(dict(big.state_dict(),
                             laud_paradigm=ref.laud_paradigm))
    # one gate per block and sample: per block, on or off on the whole map
    on = [1.0 if i % 3 else 0.0 for i in range(16)]
    for b, g in zip(big.blocks, on):
        b.masker.forced_gate = g
    for b, g in zip(ref.blocks, on):
        b.masker.forced_gate = g
    with torch.no_grad():
        out_big, out_ref = big(x), ref(x)
    for b in big.blocks:
        assert b.last_stats['gate'].shape == (2, 1, 1)
    for a, r in zip(out_big, out_ref):
        torch.testing.assert_close(a, r, rtol=0, atol=0)
    sa, sr = big.activation_stats(), ref.activation_stats()
    # FLOPs differ only by the maskers' own cost: a 1 x 1 grid (C_in x 2
    # MACs) instead of ceil(H/S) x ceil(W/S) cells
    def masker(net):
        return sum(b.op_flops(b.last_stats['geometry'].in_hw)['masker']
                   for b in net.blocks)
    for b in big.blocks:
        assert b.op_flops(b.last_stats['geometry'].in_hw)['masker'] == \
            b.conv1.in_channels * 2 + b.conv1.in_channels * np.prod(
                b.last_stats['geometry'].in_hw)  # pool + 1x1 conv on 1 cell
    torch.testing.assert_close(sa['flops'] - sr['flops'], torch.full_like(
        sa['flops'], float(masker(big) - masker(ref))), rtol=0, atol=1e3)
    # (float32 FLOPs of ~2e9: a few ulps of 256)
    assert [float(d[0]) for d in sa['block_density']] == on
    # learned gates: the dynamic path and the latency predictor agree too
    for b in big.blocks:
        b.masker.forced_gate = None
    mixed_gates(big)
    with torch.no_grad():
        dense = big(x)
        big.dynamic_inference = True
        dyn = big(x)
    for a, r in zip(dense, dyn):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-4)
    metric = BackboneLatencyMetric('v100')
    geoms = big.block_geometries((160, 256))
    dens = [float(d.mean()) for d in big.activation_stats()['block_density']]
    pred = metric.predictor.predict_backbone(
        geoms, dens, 8, stem=big.stem_geometry((160, 256))).per_image_ms
    static = metric.predictor.predict_static(
        geoms, 8, stem=big.stem_geometry((160, 256))).per_image_ms
    assert 0 < pred <= static * (1 + 1e-6) and np.isfinite(pred)


# ----------------------------------------------- checkpoints of other depth
@pytest.fixture(scope='module')
def r101_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp('ck') / 'laud_r101.pth'
    net = LAUDResNet(101, 'spatial', (4, 4, 2, 1))
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in
                               net.state_dict().items()},
                'meta': {}}, path)
    return str(path)


def test_other_depth_checkpoint_via_pretrained_init_is_refused(r101_ckpt):
    net = LAUDResNet(50, 'spatial', (4, 4, 2, 1), init_cfg=dict(
        type='Pretrained', prefix='backbone.', checkpoint=r101_ckpt))
    with pytest.raises(ValueError, match=r'depth=50.*\(3, 4, 23, 3\).*'
                       r'\(3, 4, 6, 3\).*layer3.*depth=101'):
        net.init_weights()


def test_other_depth_checkpoint_via_load_from_is_refused(r101_ckpt):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.runner.checkpoint import load_checkpoint
    register_all_modules()
    cfg = fast_cfg('/tmp/unused')
    model = MODELS.build(cfg.model)
    with pytest.raises(ValueError, match=r"key prefix 'backbone.'.*depth=101"):
        load_checkpoint(model, r101_ckpt, map_location='cpu')  # = load_from


def test_other_granularity_and_static_checkpoints(tmp_path):
    """A channel checkpoint of another G: refused by the recorded paradigm
    and granularity, naming both. A static mmdet ResNet-50 checkpoint loads
    (maskers stay initialised)."""
    from mmdet.models.backbones import ResNet
    from mmengine.runner.checkpoint import load_checkpoint
    p = tmp_path / 'g4.pth'
    torch.save({'state_dict': LAUDResNet(50, 'channel', (4, 4, 4, 4))
                .state_dict()}, p)
    with pytest.raises(ValueError, match=r"granularity=\(2, 2, 2, 2\)\): "
                       r"the checkpoint was saved with paradigm='channel', "
                       r"granularity=\(4, 4, 4, 4\)"):
        load_checkpoint(LAUDResNet(50, 'channel', (2, 2, 2, 2)), str(p))
    # without the record (a checkpoint saved before laud_mm wrote it) the
    # masker shapes still tell the G apart
    sd = LAUDResNet(50, 'channel', (4, 4, 4, 4)).state_dict()
    del sd['laud_paradigm']
    with pytest.raises(ValueError, match=r'layer1.0.masker.fc2.weight has '
                       r'shape \(32, 16\), the model \(64, 16\)'):
        LAUDResNet(50, 'channel', (2, 2, 2, 2)).load_state_dict(sd, False)
    static = ResNet(50)
    p2 = tmp_path / 'static.pth'
    torch.save({'state_dict': static.state_dict()}, p2)
    net = LAUDResNet(50, 'spatial', (4, 4, 2, 1))
    bias = net.blocks[0].masker.conv.bias.clone()
    load_checkpoint(net, str(p2))
    torch.testing.assert_close(net.layer3[5].conv2.weight,
                               static.layer3[5].conv2.weight)
    torch.testing.assert_close(net.blocks[0].masker.conv.bias, bias)


# -------------------------------------------------- detector-level inputs
@pytest.fixture(scope='module')
def detector():
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    cfg = fast_cfg('/tmp/unused')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    mixed_gates(model.backbone)
    return model, cfg


def _dataset(cfg, ann_file, img_dir, pipeline_key='train_dataloader', **kw):
    from mmdet.registry import DATASETS
    ds_cfg = cfg[pipeline_key].dataset.copy()
    ds_cfg.update(data_root='', ann_file=ann_file,
                  data_prefix=dict(img=img_dir), indices=None, **kw)
    return DATASETS.build(ds_cfg)


def _empty_ann_file(tmp_path):
    """A COCO annotation file with 2 real coco_tiny images, the first one
    without any annotation."""
    src = json.load(open(osp.join(COCO_TINY,
                                  'annotations/instances_train2017.json')))
    imgs = src['images'][:2]
    anns = [a for a in src['annotations'] if a['image_id'] == imgs[1]['id']]
    out = dict(src, images=imgs, annotations=anns)
    p = tmp_path / 'empty.json'
    json.dump(out, open(p, 'w'))
    return str(p), imgs[0]['id']


def test_image_without_annotations_trains(detector, tmp_path):
    from mmengine.dataset import pseudo_collate
    model, cfg = detector
    ann, empty_id = _empty_ann_file(tmp_path)
    ds = _dataset(cfg, ann, osp.join(COCO_TINY, 'train2017') + '/',
                  filter_cfg=dict(filter_empty_gt=False))
    assert len(ds) == 2
    item = ds[0]
    assert item['data_samples'].img_id == empty_id
    assert len(item['data_samples'].gt_instances) == 0
    model.train()
    torch.manual_seed(0)
    data = model.data_preprocessor(pseudo_collate([item, ds[1]]), True)
    losses = model(**data, mode='loss')
    total, log_vars = model.parse_losses(losses)
    assert torch.isfinite(total)
    assert torch.isfinite(losses['loss_sparsity'])
    total.backward()
    grads = [p.grad for p in model.backbone.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # with the empty image alone: only background terms, still finite
    model.zero_grad()
    data = model.data_preprocessor(pseudo_collate([item]), True)
    total, log_vars = model.parse_losses(model(**data, mode='loss'))
    assert float(log_vars['loss_bbox']) == 0.0  # no positive box
    assert float(log_vars['loss_rpn_bbox']) == 0.0
    assert torch.isfinite(total) and float(log_vars['loss_rpn_cls']) > 0


def _predict(model, cfg, img_path, scale=(256, 160), color_type='color'):
    from mmcv.transforms import Compose
    from mmengine.dataset import pseudo_collate
    pipe = [dict(type='LoadImageFromFile', color_type=color_type),
            dict(type='Resize', scale=scale, keep_ratio=True),
            dict(type='PackDetInputs', meta_keys=(
                'img_id', 'img_path', 'ori_shape', 'img_shape',
                'scale_factor'))]
    from mmdet.utils import register_all_modules
    register_all_modules()
    data = Compose(pipe)(dict(img_path=img_path, img_id=0))
    model.eval()
    with torch.no_grad():
        return model.test_step(pseudo_collate([data]))


def _first_image(split='val2017'):
    import os
    return osp.join(COCO_TINY, split, sorted(os.listdir(
        osp.join(COCO_TINY, split)))[0])


def test_image_smaller_than_the_stride(detector, tmp_path):
    """A 20 x 20 image (backbone stride 32): the preprocessor pads it to
    32 x 32; every block has at least one output pixel, the statistics
    describe the image at its own size (not the padding: the paper's
    per-image latency), and the metric is finite."""
    model, cfg = detector
    img = mmcv.imread(_first_image())
    small = tmp_path / 'small.jpg'
    mmcv.imwrite(mmcv.imresize(img, (20, 20)), str(small))
    out = _predict(model, cfg, str(small), scale=(20, 20))
    st = out[0].metainfo['laud_stats']
    assert st['stem'].in_hw == (20, 20)
    feats = model.backbone(torch.zeros(1, 3, 32, 32))
    assert [tuple(f.shape[-2:]) for f in feats] == [(8, 8), (4, 4), (2, 2),
                                                    (1, 1)]
    assert st['geometries'][-1].out_hw == (1, 1)
    assert 0 < st['flops'] <= st['dense_flops']
    metric = BackboneLatencyMetric('v100')
    metric.process(None, out)
    res = metric.compute_metrics(metric.results)
    numbers = {k: v for k, v in res.items() if not isinstance(v, str)}
    assert numbers and all(np.isfinite(v) and v > 0
                           for v in numbers.values())
    assert res['pred_input'].startswith('20x20')
    # below the preprocessor: the bare backbone on 20 x 20 and 1 x 1 inputs
    for hw in ((20, 20), (1, 1)):
        feats = model.backbone(torch.zeros(1, 3, *hw))
        geoms = model.backbone.block_geometries(hw)
        assert tuple(feats[-1].shape[-2:]) == geoms[-1].out_hw


def test_grayscale_image(detector, tmp_path):
    """A grayscale JPEG: loaded as color by default (3 equal channels), it
    gives the prediction of the same gray image stored as RGB. Loaded with
    color_type='grayscale' it is a clear error."""
    model, cfg = detector
    img = mmcv.imread(_first_image())
    gray = mmcv.bgr2gray(img)
    p_gray, p_rgb = tmp_path / 'gray.png', tmp_path / 'gray_rgb.png'
    mmcv.imwrite(gray, str(p_gray))
    mmcv.imwrite(np.stack([gray] * 3, -1), str(p_rgb))
    assert mmcv.imread(str(p_gray), flag='unchanged').ndim == 2
    a = _predict(model, cfg, str(p_gray))[0]
    b = _predict(model, cfg, str(p_rgb))[0]
    torch.testing.assert_close(a.pred_instances.bboxes, b.pred_instances.bboxes)
    assert a.metainfo['laud_stats']['flops'] == b.metainfo['laud_stats']['flops']
    with pytest.raises(ValueError, match=r'image 0 of the batch has shape '
                       r'\(1, \d+, \d+\), expected \(3, H, W\)'):
        _predict(model, cfg, str(p_gray), color_type='grayscale')
    with pytest.raises(ValueError, match=r'input of shape \(1, 1, 64, 64\), '
                       r'expected \(N, 3, H, W\)'):
        model.backbone(torch.zeros(1, 1, 64, 64))


def test_metric_on_no_images_and_on_non_laud_samples():
    metric = BackboneLatencyMetric('v100')
    with pytest.raises(ValueError, match='no images were evaluated'):
        metric.compute_metrics([])
    from mmdet.structures import DetDataSample
    with pytest.raises(KeyError, match="no 'laud_stats'"):
        metric.process(None, [DetDataSample()])


# ------------------------------------------------------ unknown config keys
@pytest.mark.parametrize('cfg,match', [
    (dict(type='laud_mm.LAUDResNet', depth=50),
     r"LAUDResNet: unknown config key paradim='spatial'; did you mean "
     r"'paradigm'\?"),
    (dict(type='laud_mm.LAUDRegNetY', arch='regnety_400mf'),
     r"unexpected keyword argument 'paradim'"),
    (dict(type='laud_mm.LAUDT2TViT', img_size=64, embed_dims=32,
          num_layers=1), r"unexpected keyword argument 'paradim'")])
def test_unknown_key_is_named_before_granularity(cfg, match):
    """A typo ``paradim=`` beside ``granularity=`` names the unknown key
    (it reported a granularity problem: granularity with no paradigm)."""
    from laud_mm.registry import MODELS
    with pytest.raises(TypeError, match=match):
        MODELS.build(dict(cfg, paradim='spatial', granularity=(4, 4, 2, 1)))


# ------------------------------------------------------------- bad inputs
def _families():
    from laud_mm import LAUDRegNetY, LAUDT2TViT
    return [LAUDResNet(50, 'spatial', (4, 4, 2, 1), base_channels=8),
            LAUDRegNetY(dict(widths=(8, 16, 24, 32), depths=(1, 1, 1, 1),
                             group_width=8), 'channel', (2, 2, 2, 2)),
            LAUDT2TViT(img_size=64, embed_dims=32, num_layers=1,
                       t2t_cfg=dict(token_dims=8), paradigm='layer',
                       layer_cfgs=dict(num_heads=2,
                                       feedforward_channels=64))]


@pytest.mark.parametrize('dynamic', [False, True])
def test_non_finite_uint8_and_wrong_channel_inputs_are_refused(dynamic):
    """Every family refuses, in masked-dense and dynamic evaluation alike: a
    NaN or inf pixel (a masked-out NaN is 0 in dynamic inference and NaN in
    masked-dense evaluation, so the two would differ for that sample; a
    sample of finite values whose sum overflows is accepted), a
    uint8 image (not normalised), and a 1-channel image (e.g. grayscale
    into T2T-ViT, which failed inside its unfold)."""
    x = load_coco_images(n=2, size=(64, 64))
    nan, inf = x.clone(), x.clone()
    nan[1, 0, 5, 5] = float('nan')
    inf[0, 2, 0, 0] = float('inf')
    u8 = (x * 50 + 120).clamp(0, 255).to(torch.uint8)
    # finite values whose per-sample sum overflows float32 (the cheap
    # screen's false alarm): refused only for the sample that holds a NaN
    huge = x.clone()
    huge[0] = 3e38
    huge[1, 0, 5, 5] = float('nan')
    for net in _families():
        net.eval()
        net.dynamic_inference = dynamic
        name = type(net).__name__
        with torch.no_grad():
            with pytest.raises(ValueError, match=name + r': input samples '
                               r'\[1\] hold NaN / inf'):
                net(nan)
            with pytest.raises(ValueError, match=r'input samples \[0\]'):
                net(inf)
            with pytest.raises(ValueError, match=name + r': input samples '
                               r'\[1\] hold'):
                net(huge)
            net.check_input(huge[:1], 3)  # finite: accepted
            with pytest.raises(ValueError, match=name + r': input of dtype '
                               r'torch.uint8, expected floating point'):
                net(u8)
            with pytest.raises(ValueError, match=name + r': input of shape '
                               r'\(2, 1, 64, 64\), expected \(N, 3, H, W\)'):
                net(x[:, :1])
            assert all(torch.isfinite(o).all() for o in net(x))


def test_dynamic_inference_under_grad_is_refused():
    """Dynamic inference computes no gradients: called with gradients
    enabled (the parameters require them) it raises instead of returning
    tensors without grad_fn; under no_grad it runs, and masked-dense
    evaluation under grad keeps its graph."""
    x = load_coco_images(n=1, size=(64, 64))
    for net in _families():
        net.eval()
        out = net(x)  # masked-dense: differentiable
        assert all(o.grad_fn is not None for o in out)
        net.dynamic_inference = True
        with pytest.raises(RuntimeError, match='computes no gradients'):
            net(x)
        with torch.no_grad():
            net(x)
        with torch.inference_mode():
            net(x)


# ------------------------------------------ paradigm / granularity records
def test_checkpoint_of_another_paradigm_or_granularity(tmp_path):
    """The backbone's paradigm and granularity are recorded in its state
    dict (``laud_paradigm``): a channel G = 2 checkpoint into a spatial
    model (it only warned about mismatched keys) and a spatial checkpoint
    of another S (it loaded silently: same masker tensors) are refused
    naming both; static weights load into a dynamic model (LAUD models
    start from them); a LAUD checkpoint without the record loads with a
    warning that its maskers were not checked."""
    from mmengine.runner.checkpoint import load_checkpoint
    spatial = LAUDResNet(50, 'spatial', (4, 4, 2, 1))
    for other, match in (
            (LAUDResNet(50, 'channel', (2, 2, 2, 2)),
             r"saved with paradigm='channel', granularity=\(2, 2, 2, 2\)"),
            (LAUDResNet(50, 'spatial', (2, 2, 2, 2)),
             r"saved with paradigm='spatial', granularity=\(2, 2, 2, 2\)")):
        p = tmp_path / 'other.pth'
        torch.save({'state_dict': other.state_dict()}, p)
        with pytest.raises(ValueError, match=r"LAUDResNet\(paradigm="
                           r"'spatial', granularity=\(4, 4, 2, 1\)\): the "
                           r"checkpoint was " + match):
            load_checkpoint(spatial, str(p))
    static = LAUDResNet(50, None)
    assert spatial.load_state_dict(static.state_dict(), strict=False)
    with pytest.raises(ValueError, match=r"LAUDResNet\(paradigm=None.*saved "
                       r"with paradigm='spatial'"):
        static.load_state_dict(spatial.state_dict(), strict=False)
    old = LAUDResNet(50, 'spatial', (4, 4, 2, 1)).state_dict()
    del old['laud_paradigm']
    # mmengine's logger keeps the stream it was created with: listen to it
    records = []
    handler = logging.Handler()
    handler.emit = lambda r: records.append(r.getMessage())
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        spatial.load_state_dict(old, strict=True)
    finally:
        logger.removeHandler(handler)
    assert any('records no paradigm / granularity' in m for m in records)
    torch.testing.assert_close(spatial.blocks[0].masker.conv.weight,
                               old['layer1.0.masker.conv.weight'])


# ------------------------------------------------------- checkpoint files
@pytest.mark.parametrize('content,what', [
    (bytes(range(7, 250)) * 9, 'random bytes'),
    (b'{"not": "a checkpoint"}\n', 'a text file')])
def test_files_that_are_not_checkpoints(tmp_path, content, what):
    """Random bytes (torch: an IndexError, or a ``weights_only`` message
    suggesting ``weights_only=False``) and a text file (torch: ``KeyError:
    101``) are refused before anything unpickles them, naming the argument
    and the path: reading a state dict, ``tools/test.py CHECKPOINT`` and a
    config's ``load_from`` (WeightsOnlyCheckpointHook.before_run)."""
    import types

    from laud_mm import WeightsOnlyCheckpointHook
    from laud_mm.models.layers.checkpoint import load_state_dict_file
    p = tmp_path / 'model.pth'
    p.write_bytes(content)
    msg = r'is not a PyTorch checkpoint \(neither a torch.save zip archive ' \
        r'nor a pickle'
    with pytest.raises(ValueError, match=r"checkpoint='.*model.pth' " + msg):
        load_state_dict_file(str(p))
    with pytest.raises(ValueError, match=r"load_from='.*model.pth' " + msg):
        WeightsOnlyCheckpointHook().before_run(
            types.SimpleNamespace(_load_from=str(p)))
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'laud_test_tool', osp.join(osp.dirname(osp.dirname(
            osp.abspath(__file__))), 'tools', 'test.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    cfg = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                   'configs/demo/laud-r50-layer_imagenette.py')
    with pytest.raises(ValueError, match=r"CHECKPOINT='.*model.pth' " + msg):
        tool.main([cfg, str(p), '--work-dir', str(tmp_path)])
