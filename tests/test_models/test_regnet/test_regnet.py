"""LAUD-RegNetY: static equality with torchvision's RegNetY (400MF, 800MF,
block structure), checkpoint key mapping, the SE over the active region,
skipped SE and conv groups, FLOPs, training on real imagenette images, mmdet
integration and the latency predictor. Whole-model dynamic == masked-dense,
gradients, determinism and the checkpoint round trip are clauses of the
family contract (tests/test_models/test_family_contract.py).

Source: paper sec. 4.2 (RegNetY results), docs/method.md sec. 1; issue 7."""
import math
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config

import laud_mm  # noqa: F401  (before torchvision: CPU compat shim)
import torchvision  # noqa: E402
from laud_mm import LAUDRegNetY  # noqa: E402
from laud_mm.latency import LatencyPredictor  # noqa: E402
from laud_mm.models import regnety_geometries  # noqa: E402
from laud_mm.models.regnet.convert import (  # noqa: E402
    TORCHVISION_REGNETY_SCHEME, convert_torchvision_regnety,
    torchvision_regnety_key)
from laud_mm.models.regnet.flops import \
    expected_active_conv_groups  # noqa: E402
from laud_mm.models.layers.masks import expand_spatial_gate  # noqa: E402
from laud_mm.models.regnet.block import (LAUDRegNetYBlock,  # noqa: E402
                                         masked_avg_pool)
from laud_mm.models.regnet.dynamic import \
    static_regnety_forward  # noqa: E402
from laud_mm.ops import policy  # noqa: E402

from conftest import (ROOT, check_channels_last_forward,  # noqa: E402
                      load_coco_images)


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    """One intra-op thread for this module: the results do not depend on
    it, and small convs on a shared 2-core machine run far faster without
    OpenMP barriers (restored afterwards)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def randomize(module: nn.Module, seed: int) -> None:
    """Random BN affine / running statistics and mixed-gate maskers."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, m in module.named_modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g) * 0.6 + 0.2)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            elif isinstance(m, (nn.Conv2d, nn.Linear)) and 'masker' in name:
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) /
                               m.weight[0].numel() ** 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


def tv_model(arch: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = getattr(torchvision.models, arch)()
    randomize(m, seed + 1)
    return m.eval()


def tv_stages(m, x):
    h, outs = m.stem(x), []
    for stage in m.trunk_output:
        h = stage(h)
        outs.append(h)
    return outs


# ------------------------------------------------------------ static model
@pytest.mark.parametrize('arch,tv,hw', [('regnety_400mf', 'regnet_y_400mf',
                                         (97, 75)),
                                        ('regnety_800mf', 'regnet_y_800mf',
                                         (64, 48))])
def test_static_equals_torchvision_exactly(arch, tv, hw):
    ref = tv_model(tv)
    net = LAUDRegNetY(arch).eval()
    net.load_state_dict(convert_torchvision_regnety(ref.state_dict()),
                        strict=True)
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        outs, refs = net(x), tv_stages(ref, x)
    assert net.out_channels == tuple(r.shape[1] for r in refs)
    for a, b in zip(outs, refs):
        assert torch.equal(a, b)
    # structure: widths, depths, group widths, SE squeeze = 0.25 x C_in
    tv_blocks = [b for s in ref.trunk_output for b in s]
    assert len(tv_blocks) == len(net.blocks)
    for ours, theirs in zip(net.blocks, tv_blocks):
        assert ours.conv2.groups == theirs.f.b[0].groups
        assert ours.se.fc1.out_channels == theirs.f.se.fc1.out_channels == \
            round(0.25 * ours.conv1.in_channels)


def test_gates_on_match_static_and_torchvision_classifier_loads(tmp_path):
    """All gates on == static (SE pool over all pixels); the
    torchvision-regnety:// scheme initialises an mmpretrain classifier whose
    logits equal torchvision's."""
    from mmpretrain.registry import MODELS
    ref = tv_model('regnet_y_400mf', 3)
    path = str(tmp_path / 'regnet_y_400mf.pth')
    torch.save(ref.state_dict(), path)
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmpretrain'):  # not mmdet's
        cls = MODELS.build(dict(
            type='ImageClassifier',
            backbone=dict(type='laud_mm.LAUDRegNetY', arch='regnety_400mf',
                          paradigm='spatial', granularity=(4, 4, 2, 1),
                          out_indices=(3, )),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=1000,
                      in_channels=440),
            init_cfg=dict(type='Pretrained',
                          checkpoint=TORCHVISION_REGNETY_SCHEME + path)))
    cls.init_weights()
    cls.eval()
    cls.backbone.force_gates(1.0)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = cls(x, mode='tensor')
        expect = ref(x)
    assert torch.allclose(logits, expect, atol=1e-5, rtol=1e-5)
    # maskers kept their keep-biased init (not in the torchvision weights)
    assert cls.backbone.blocks[0].masker.conv.bias[0].item() == 5.0


def test_key_mapping_and_bad_checkpoints():
    assert torchvision_regnety_key('stem.0.weight') == 'conv1.weight'
    assert torchvision_regnety_key(
        'trunk_output.block3.block3-4.f.se.fc2.bias') == 'layer3.4.se.fc2.bias'
    assert torchvision_regnety_key(
        'trunk_output.block2.block2-0.proj.1.running_var') == \
        'layer2.0.downsample.1.running_var'
    assert torchvision_regnety_key('fc.weight') is None
    with pytest.raises(ValueError, match='not a torchvision RegNetY key'):
        torchvision_regnety_key('layer1.0.conv1.weight')
    with pytest.raises(ValueError, match='not a torchvision RegNetY'):
        convert_torchvision_regnety({'conv1.weight': torch.zeros(1)})
    with pytest.raises(ValueError, match='layout'):
        convert_torchvision_regnety({}, layout='detector')
    sd = convert_torchvision_regnety(tv_model('regnet_y_400mf').state_dict())
    with pytest.raises(ValueError, match='another architecture'):
        LAUDRegNetY('regnety_800mf').load_state_dict(sd, strict=False)


@pytest.mark.parametrize('kwargs,key', [
    (dict(arch='regnety_600mf'), 'arch'),
    (dict(paradigm='token'), 'paradigm'),
    (dict(paradigm='spatial', granularity=(4, 4, 2)), 'granularity'),
    (dict(paradigm='spatial', granularity=(4, 4, 0, 1)), 'granularity'),
    (dict(paradigm='layer', granularity=(1, 1, 1, 1)), 'granularity'),
    (dict(paradigm='channel', granularity=(5, 2, 2, 2)), 'granularity'),
    (dict(out_indices=(4, )), 'out_indices'),
    (dict(frozen_stages=7), 'frozen_stages'),
    (dict(arch=dict(widths=(48, 100), depths=(1, 1), group_width=8)),
     'group_width'),
])
def test_bad_config_raises_value_error_naming_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        LAUDRegNetY(**kwargs)


# ------------------------------------------------------- masked-dense blocks
def test_spatial_se_squeezes_over_kept_pixels_only():
    """The masked-dense spatial block equals a hand computation whose SE
    squeeze is the mean over the kept output pixels, and differs from the
    plain global mean (so the definition matters)."""
    torch.manual_seed(0)
    blk = LAUDRegNetYBlock(16, 24, stride=2, group_width=8,
                           paradigm='spatial', granularity=2)
    randomize(blk, 2)
    with torch.no_grad():  # a strong SE, so that the squeeze matters
        blk.se.fc1.weight.normal_(0., 1.)
        blk.se.fc2.weight.normal_(0., 1.)
    blk.eval()
    x = torch.randn(2, 16, 13, 11)
    geom = blk.geometry((13, 11))
    gate = torch.zeros(2, *geom.patch_grid)
    gate[0, 0, 0] = gate[0, 2, 1] = gate[1, 3, 2] = 1.  # (3, 2) is partial
    blk.masker.forced_gate = gate
    with torch.no_grad():
        out = blk(x)
        m = expand_spatial_gate(gate, 2, geom.out_hw)
        h = F.relu(blk.bn2(blk.conv2(F.relu(blk.bn1(blk.conv1(x))))))
        z = torch.stack([h[i][:, m[i, 0] > 0].mean(1) for i in range(2)])
        s = blk.se.scale(z[:, :, None, None])
        y = blk.bn3(blk.conv3(h * s)) * m
        expect = F.relu(y + blk.downsample(x))
        s_plain = blk.se.scale(F.adaptive_avg_pool2d(h, 1))
        plain = F.relu(blk.bn3(blk.conv3(h * s_plain)) * m +
                       blk.downsample(x))
        blk.dynamic_inference = True
        dyn = blk(x)
    assert torch.allclose(out, expect, atol=1e-6)
    assert torch.allclose(dyn, expect, atol=1e-5)
    assert (plain - expect).abs().max() > 1e-3
    assert torch.equal(masked_avg_pool(h, None), F.adaptive_avg_pool2d(h, 1))


def test_skipped_layer_skips_se_and_channel_conv_groups():
    torch.manual_seed(0)
    blk = LAUDRegNetYBlock(16, 32, stride=2, group_width=8, paradigm='layer')
    randomize(blk, 3)
    blk.eval()
    x = torch.randn(2, 16, 9, 9)
    blk.masker.forced_gate = torch.tensor([0., 1.])
    with torch.no_grad():
        out = blk(x)
    assert torch.allclose(out[0], F.relu(blk.downsample(x[:1]))[0])
    ops_f = blk.op_flops((9, 9))
    skipped = blk.last_stats['flops'][0].item()
    assert skipped == ops_f['masker'] + ops_f['downsample']  # no SE, no conv
    assert blk.last_stats['flops'][1].item() == sum(ops_f.values())
    # channel: G=2 < group width 8 -> conv2 runs whole active conv groups
    cb = LAUDRegNetYBlock(16, 32, group_width=8, paradigm='channel',
                          granularity=2)
    cb.eval()
    gate = torch.zeros(1, 16)
    gate[0, [0, 1, 5]] = 1.  # channels 0-3 (conv group 0), 10-11 (group 1)
    cb.masker.forced_gate = gate
    with torch.no_grad():
        cb(torch.randn(1, 16, 5, 5))
    f = cb.op_flops((5, 5))
    d, a = 3 / 16, 2 / 4
    expect = f['masker'] + f['downsample'] + a * f['conv2'] + \
        d * (f['conv1'] + f['se_pool'] + f['se_fc'] + f['conv3'])
    assert math.isclose(cb.last_stats['flops'].item(), expect, rel_tol=1e-6)
    assert math.isclose(expected_active_conv_groups(
        cb.geometry((5, 5)), 0.5), 1 - 0.5 ** 4)


@pytest.mark.parametrize('paradigm,gran', [('channel', (2, 2, 2, 2)),
                                           ('spatial', (4, 4, 2, 1)),
                                           ('layer', None)])
def test_dynamic_inference_runs_channels_last(paradigm, gran, monkeypatch):
    """Fed channels_last (the backbone's dynamic_memory_format on the CPU;
    the policy switch turns that advice off), the dynamic forward runs in
    NHWC and returns channels_last features equal to the NCHW forward's and
    to masked-dense evaluation, with the same gates; fed NCHW it returns
    NCHW (what mmcv's CPU RoIAlign reads)."""
    from laud_mm.analysis.forced_gates import force_random_gates
    from laud_mm.ops import policy
    torch.manual_seed(0)
    net = LAUDRegNetY('regnety_400mf', paradigm=paradigm, granularity=gran,
                      dynamic_inference=True)
    randomize(net, 2)
    net.eval()
    x = load_coco_images(n=3, size=(96, 128))
    cl = torch.channels_last
    assert net.dynamic_memory_format(x) == cl
    monkeypatch.setattr(policy, 'CHANNELS_LAST_CPU', False)
    assert net.dynamic_memory_format(x) == torch.contiguous_format
    monkeypatch.setattr(policy, 'CHANNELS_LAST_CPU', True)
    for rate in (0.3, 0.7):
        force_random_gates(net, rate, 3, (96, 128), seed=1)
        check_channels_last_forward(net, x)
        assert any(0 < float(b.last_stats['gate'].mean()) < 1
                   for b in net.blocks)


@pytest.mark.parametrize('layout', ['nchw', 'channels_last'])
@pytest.mark.parametrize('stride,cin', [(1, 32), (2, 16)])
def test_channel_path_batches_samples_keeping_none_some_all(layout, stride,
                                                            cin):
    """The batched channel path (one GEMM per 1x1 conv for the batch, kept
    lists padded to the longest): a batch whose samples keep no channel,
    every channel, or some (in conv groups partly kept) equals masked-dense
    evaluation in fp32, and under bfloat16 autocast within bfloat16's
    rounding, in the output dtype of the masked-dense block."""
    torch.manual_seed(0)
    blk = LAUDRegNetYBlock(cin, 32, stride=stride, group_width=8,
                           paradigm='channel', granularity=2)
    randomize(blk, 4)
    blk.eval()
    blk.dynamic_inference = True
    gate = torch.zeros(4, 16)
    gate[1] = 1.
    gate[2, [1, 5, 9, 15]] = 1.  # conv groups 0 - 3 each in part
    gate[3, [7, 14]] = 1.  # group 3 in part: its dropped channels read 0
    blk.masker.forced_gate = gate
    x = load_coco_images(n=4, size=(13, 11)).repeat(1, 11, 1, 1)[:, :cin]
    if layout == 'channels_last':
        x = x.contiguous(memory_format=torch.channels_last)
    geom = blk.geometry((13, 11))
    with torch.no_grad():
        out = blk(x)
        ref = blk._masked_dense(x, gate, geom)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out16 = blk(x)
            ref16 = blk._masked_dense(x, gate, geom)
    assert (out.is_contiguous(memory_format=torch.channels_last) ==
            (layout == 'channels_last'))
    scale = float(ref.abs().max())
    assert float((out - ref).abs().max()) <= 1e-5 * scale
    assert out16.dtype == ref16.dtype
    assert float((out16.float() - ref16.float()).abs().max()) <= \
        0.05 * scale


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('threads', [1, 2])
def test_gather_rows_is_index_select(dtype, threads):
    """The layer path's row gather gives exactly index_select's rows: real
    image samples as (N, L) rows in NCHW and channels_last, kept sets of
    every size, rows longer than ATen's grain (one torch.gather at two
    threads) and shorter (index_select itself: that case and one thread
    check the dispatch's result, not another algorithm)."""
    from laud_mm.models.regnet.dynamic import _gather_rows, _sample_rows
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for size in ((96, 128), (24, 20)):
            x = load_coco_images(n=5, size=size).to(dtype)
            long_rows = x[0].numel() > policy.ATEN_GRAIN_SIZE
            assert long_rows == (size == (96, 128))
            for fmt in (torch.contiguous_format, torch.channels_last):
                rows = _sample_rows(x.contiguous(memory_format=fmt), fmt)
                for idx in ([], [3], [0, 2, 4], [0, 1, 2, 3, 4]):
                    idx = torch.tensor(idx, dtype=torch.long)
                    got = _gather_rows(rows, idx)
                    assert got.dtype == dtype and got.is_contiguous()
                    assert torch.equal(got, rows.index_select(0, idx))
    finally:
        torch.set_num_threads(prev)


@pytest.mark.parametrize('paradigm,layout,stride', [
    ('channel', 'nchw', 1), ('channel', 'channels_last', 1),
    ('channel', 'channels_last', 2), ('spatial', 'channels_last', 1),
    ('spatial', 'channels_last', 2), ('layer', 'nchw', 1),
    ('layer', 'nchw', 2), ('layer', 'channels_last', 1),
    ('layer', 'channels_last', 2)])
def test_block_writes_into_owned_input(paradigm, layout, stride):
    """Inside owned_block_inputs (what the backbone's forward uses) an
    identity channel or layer block, and a channels_last spatial block
    whose conv3 runs on the active pixels (under a third of the patches
    active), write their output into their (non-negative) input; a channel
    or layer block records the output's channel means for the next masker
    (a layer block: its kept samples' rows written, the skipped ones left
    as they are). The output equals the
    masked-dense block, alone and owned; outside the context the input is
    untouched and the output a new tensor. Stride 2: the downsample's
    output is the target (the input is never written)."""
    from laud_mm.models.layers.channel_mean import recorded_channel_mean
    from laud_mm.models.layers.dynamic import owned_block_inputs
    torch.manual_seed(0)
    cin = 32 if stride == 1 else 16
    blk = LAUDRegNetYBlock(cin, 32, stride=stride, group_width=8,
                           paradigm=paradigm,
                           granularity=None if paradigm == 'layer' else 2)
    randomize(blk, 5)
    blk.eval()
    blk.dynamic_inference = True
    n = 4
    geom = blk.geometry((13, 11))
    g = torch.Generator().manual_seed(2)
    if paradigm == 'channel':
        gate = (torch.rand(n, 16, generator=g) < 0.6).float()
        gate[0] = 0.  # keeps nothing: relu(input + bn3 shift)
    elif paradigm == 'layer':
        gate = torch.tensor([0., 1., 0., 1.])  # skipped: relu(shortcut)
    else:
        gate = (torch.rand(n, *geom.patch_grid, generator=g) < 0.3).float()
        gate[0] = 0.  # no active patch: relu(shortcut)
        assert float(gate.mean()) < \
            policy.REGNETY_SPATIAL_NHWC_CONV3_THRESHOLD
    blk.masker.forced_gate = gate
    # alone: real images of both signs (the block must rectify what it
    # does not compute); owned: non-negative, like a block output (what
    # the context promises)
    signed = load_coco_images(n=n, size=(13, 11)).repeat(1, 11, 1, 1)
    signed = signed[:, :cin]
    x = signed.relu()
    if layout == 'channels_last':
        x = x.contiguous(memory_format=torch.channels_last)
        signed = signed.contiguous(memory_format=torch.channels_last)
    assert float(signed.min()) < 0
    with torch.no_grad():
        ref = blk._masked_dense(x, gate, geom)
        ref_signed = blk._masked_dense(signed, gate, geom)
        kept = signed.clone(memory_format=torch.preserve_format)
        alone = blk(kept)
        assert alone.data_ptr() != kept.data_ptr()
        assert torch.equal(kept, signed)
        owned = x.clone(memory_format=torch.preserve_format)
        with owned_block_inputs([blk]):
            out = blk(owned)
    for o, r in ((alone, ref_signed), (out, ref)):
        assert float((o - r).abs().max()) <= 1e-5 * float(r.abs().max())
        assert o.is_contiguous(memory_format=torch.channels_last) == \
            (layout == 'channels_last')
    if stride == 1:
        assert out.data_ptr() == owned.data_ptr()
    else:
        assert torch.equal(owned, x)
    if paradigm in ('channel', 'layer'):
        means = recorded_channel_mean(out)
        assert means is not None
        assert torch.allclose(means, out.mean(dim=(2, 3)), atol=1e-6)


@pytest.mark.parametrize('paradigm,gran,rate', [
    ('channel', (2, 2, 2, 2), 0.5), ('layer', None, 0.5),
    ('spatial', (4, 4, 2, 1), 0.25)])
def test_backbone_forward_keeps_caller_input(paradigm, gran, rate,
                                             monkeypatch):
    """LAUD-RegNetY's dynamic forward fed channels_last (identity blocks
    writing into their inputs; spatial at r = 0.25: conv3 on the active
    pixels, written into owned inputs block after block) leaves the image
    tensor it is given intact, and its stage outputs equal the
    masked-dense backbone's."""
    from laud_mm.analysis.forced_gates import force_random_gates
    from laud_mm.models.regnet import dynamic
    calls = []
    active_pixels = dynamic._conv3_active_pixels
    monkeypatch.setattr(dynamic, '_conv3_active_pixels',
                        lambda *a: calls.append(1) or active_pixels(*a))
    torch.manual_seed(0)
    net = LAUDRegNetY('regnety_400mf', paradigm=paradigm, granularity=gran,
                      out_indices=(0, 1, 2, 3))
    randomize(net, 2)
    net.eval()
    x = load_coco_images(n=2, size=(64, 96))
    xc = x.contiguous(memory_format=torch.channels_last)
    x0 = xc.clone(memory_format=torch.preserve_format)
    force_random_gates(net, rate, 2, (64, 96), seed=1)
    with torch.no_grad():
        net.dynamic_inference = False
        ref = net(x)
        net.dynamic_inference = True
        out = net(xc)
    assert torch.equal(xc, x0)
    # the active-pixel conv3 ran (spatial blocks below the threshold)
    assert bool(calls) == (paradigm == 'spatial')
    for o, r in zip(out, ref):
        assert float((o - r).abs().max()) <= \
            1e-4 * max(1., float(r.abs().max()))


def test_flops_match_torchvision_model_sizes():
    """Dense FLOPs at 224 px: RegNetY-400MF ~0.40 G, 800MF ~0.83 G
    (torchvision's reported GFLOPS)."""
    for arch, gflops in (('regnety_400mf', 0.40), ('regnety_800mf', 0.83)):
        net = LAUDRegNetY(arch).eval()
        with torch.no_grad():
            net(torch.zeros(1, 3, 224, 224))
        dense = net.activation_stats()['dense_flops'] / 1e9
        assert abs(dense - gflops) / gflops < 0.03, (arch, dense)


# ------------------------------------------------------- training, mmdet
DEMO = osp.join(ROOT, 'configs/demo/laud-regnety-400mf-layer_imagenette.py')


@pytest.mark.parametrize('paradigm,gran', [('layer', None),
                                           ('spatial', (4, 4, 2, 1))])
def test_training_iterations_on_imagenette(imagenette, tmp_path, paradigm,
                                           gran):
    from mmengine.runner import Runner
    cfg = Config.fromfile(DEMO)
    cfg.model.backbone.paradigm = paradigm
    cfg.model.backbone.granularity = gran
    cfg.work_dir = str(tmp_path)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=3,
                         val_interval=10 ** 6)
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=100,
                                        by_epoch=False)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    dl = cfg.train_dataloader
    dl.batch_size, dl.num_workers, dl.persistent_workers = 2, 0, False
    dl.dataset.indices = [0, 50, 100, 150]
    for t in dl.dataset.pipeline:
        if t['type'] == 'RandomResizedCrop':
            t['scale'] = 64
    cfg.val_dataloader = cfg.test_dataloader = cfg.val_evaluator = \
        cfg.test_evaluator = cfg.val_cfg = cfg.test_cfg = None
    cfg.randomness = dict(seed=0)
    runner = Runner.from_cfg(cfg)
    bb = runner.model.backbone
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    runner.train()
    hub = runner.message_hub
    for key in ('train/loss', 'train/loss_sparsity', 'train/loss_distill',
                'train/act_rate'):
        assert math.isfinite(hub.get_scalar(key).current()), key
    after = bb.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any('masker' in k for k in changed)  # the gates learn
    assert any('se.fc1' in k for k in changed)


@pytest.mark.parametrize('cfg_name,det_type,widths', [
    ('retinanet/retinanet_laud-regnety-800mf-channel-g2_t0.5_fpn_1x_coco.py',
     'LAUDRetinaNet', [16, 8, 4, 2, 1]),  # P3-P7
    ('faster_rcnn/faster-rcnn_laud-regnety-400mf-layer_t0.5_fpn_1x_coco.py',
     'LAUDFasterRCNN', [32, 16, 8, 4, 2])])  # P2-P6
def test_detection_configs_build_and_feed_fpn(cfg_name, det_type, widths):
    from mmdet.registry import MODELS
    cfg = Config.fromfile(osp.join(ROOT, 'configs', cfg_name))
    cfg.model.backbone.init_cfg = None
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'):
        det = MODELS.build(cfg.model)
    assert type(det).__name__ == det_type
    assert list(det.backbone.out_channels) == cfg.model.neck.in_channels
    det.eval()
    with torch.no_grad():
        feats = det.extract_feat(torch.randn(1, 3, 96, 128))
    assert [f.shape[-1] for f in feats] == widths
    assert det.backbone.activation_stats()['flops'].shape == (1, )


# -------------------------------------------------------- latency predictor
def test_latency_predictor_covers_regnety_blocks():
    pred = LatencyPredictor('v100')
    for par, gran in (('layer', None), ('channel', (2, 2, 2, 2)),
                      ('spatial', (4, 4, 2, 1))):
        net = LAUDRegNetY('regnety_800mf', paradigm=par, granularity=gran)
        geoms = net.block_geometries((224, 224))
        ref_geoms, stem = regnety_geometries('regnety_800mf', (224, 224),
                                             par, gran)
        assert geoms == ref_geoms
        static = pred.predict_static(geoms, 128, stem)
        names = {o.name for o in static.block_ops[1]}
        assert {'conv2', 'se_pool', 'se_fc', 'se_scale'} <= names
        ms = [pred.predict_backbone(geoms, [d] * len(geoms), 128,
                                    stem).total_ms for d in (0.25, 0.5, 1.)]
        assert ms[0] < ms[1] < ms[2]
        if par == 'layer':
            assert ms[1] < static.total_ms
            off = pred.predict_backbone(geoms, [0.] * len(geoms), 128, stem)
            assert not any(o.name.startswith('se') for o in off.block_ops[1])


def test_static_folded_block_equals_module():
    torch.manual_seed(0)
    blk = LAUDRegNetYBlock(24, 24, group_width=8)
    randomize(blk, 4)
    blk.eval()
    x = torch.randn(2, 24, 7, 9)
    with torch.no_grad():
        assert torch.allclose(static_regnety_forward(blk, x), blk(x),
                              atol=1e-5)
