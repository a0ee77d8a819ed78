"""LAUD-T2T-ViT: mmpretrain checkpoint loading, dynamic inference ==
masked-dense per layer and the packed attention, the masked-dense
definitions by hand, statistics and FLOPs, the tau hook, training on real
imagenette images, configuration errors, and the latency predictor's
transformer kernels on hand-computed cases. Equality with mmpretrain's
T2T-ViT, whole-model dynamic == masked-dense, gradients and refused
checkpoints are clauses of the family contract
(tests/test_models/test_family_contract.py).

Small models (embed 64, 2 layers, 64 px: 16 patch tokens + the class token)
keep the module fast. Source: paper sec. 3.2 and "Experiments on vision
Transformers"; issue 7."""
import math
import os.path as osp
import types
import uuid

import pytest
import torch
from mmengine.config import Config

import laud_mm  # noqa: F401  (before mmpretrain: torchvision op schemas)
from mmpretrain.models.backbones import T2T_ViT  # noqa: E402
from mmpretrain.models.backbones.t2t_vit import \
    T2TTransformerLayer  # noqa: E402

from laud_mm import LAUDT2TViT  # noqa: E402
from laud_mm.engine.hooks.gumbel_temperature import \
    model_maskers  # noqa: E402
from laud_mm.latency import HardwareSpec, LatencyPredictor  # noqa: E402
from laud_mm.latency.blocks.t2t_vit import (  # noqa: E402
    attention_ops, fused_attention_op, t2t_stem_ops, transformer_ops,
    vit_layer_ops, vit_op_breakdown)
from laud_mm.models import t2t_vit_geometries  # noqa: E402
from laud_mm.models.t2t_vit import flops as flops_lib  # noqa: E402
from laud_mm.models.t2t_vit.attention import masked_softmax  # noqa: E402
from laud_mm.models.t2t_vit.block import LAUDT2TLayer  # noqa: E402
from laud_mm.models.t2t_vit.dynamic import (  # noqa: E402
    dynamic_t2t_layer_forward, packed_attention)

from conftest import ROOT  # noqa: E402  (the repository root)
TINY = dict(img_size=64, embed_dims=64, num_layers=2,
            t2t_cfg=dict(token_dims=16),
            layer_cfgs=dict(num_heads=4, feedforward_channels=128))
N_PATCH = 16  # 64 px: a 4 x 4 token grid


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    """One intra-op thread (results do not depend on it; small ops on a
    shared 2-core machine run faster without OpenMP barriers)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def tiny(paradigm=None, seed=0, **kw):
    torch.manual_seed(seed)
    net = LAUDT2TViT(paradigm=paradigm, **dict(TINY, **kw))
    net.eval()
    return net


def reference(seed=0, **kw):
    torch.manual_seed(seed)
    ref = T2T_ViT(**dict(TINY, **kw))
    ref.eval()
    return ref


def images(n=3, seed=2):
    return torch.randn(n, 3, 64, 64, generator=torch.Generator()
                       .manual_seed(seed))


# ------------------------------------------------------------------- ckpt
def test_mmpretrain_checkpoint_loads_unchanged(tmp_path):
    """A classifier checkpoint of mmpretrain's T2T-ViT (backbone.*, head.*)
    loads into LAUDT2TViT through mmengine's Pretrained init: static weights
    identical, only the maskers extra (keep-biased)."""
    ref = reference()
    sd = {'backbone.' + k: v for k, v in ref.state_dict().items()}
    sd['head.layers.head.weight'] = torch.zeros(10, 64)
    path = str(tmp_path / 't2t.pth')
    torch.save({'state_dict': sd, 'meta': {}}, path)
    torch.manual_seed(5)
    net = LAUDT2TViT(paradigm='layer', init_cfg=[
        dict(type='TruncNormal', layer='Linear', std=.02),
        dict(type='Pretrained', checkpoint=path, prefix='backbone.')],
        **TINY)
    net.init_weights()
    own = net.state_dict()
    for k, v in ref.state_dict().items():
        assert torch.equal(own[k], v), k
    for lay in net.blocks:
        assert lay.masker.fc.bias.tolist() == [5., 0.]


def test_init_weights_keeps_maskers_keep_biased():
    """mmpretrain's T2T-ViT init_cfg (TruncNormal on every Linear) must not
    reach the maskers' keep bias."""
    net = LAUDT2TViT(paradigm='channel', init_cfg=[
        dict(type='TruncNormal', layer='Linear', std=.02),
        dict(type='Constant', layer='LayerNorm', val=1., bias=0.)], **TINY)
    net.init_weights()
    for lay in net.blocks:
        b = lay.masker.fc2.bias.view(-1, 2)
        assert torch.all(b[:, 0] == 2.) and torch.all(b[:, 1] == -2.)


# ---------------------------------------------------------------- exactness
def test_dynamic_layer_by_layer_and_both_attention_paths():
    """Per layer on random tokens: unequal kept counts (per-sample
    attention) and equal counts (one batched call)."""
    torch.manual_seed(0)
    lay = LAUDT2TLayer(32, 4, 64, paradigm='spatial')
    lay.eval()
    x = torch.randn(3, 9, 32)
    for gate in (torch.tensor([[1, 0, 0, 1, 1, 0, 1, 0.],
                               [0, 0, 0, 0, 0, 0, 0, 0],
                               [1, 1, 1, 1, 1, 1, 1, 0]]),
                 torch.tensor([[1, 0, 0, 1, 0, 0, 1, 0.],
                               [0, 1, 1, 0, 0, 0, 0, 1],
                               [0, 0, 0, 0, 1, 1, 1, 0]])):
        lay.masker.forced_gate = gate
        with torch.no_grad():
            md = lay.masked_dense(x, gate)
            dy, g = dynamic_t2t_layer_forward(lay, x, lay.geometry(9))
        assert torch.equal(g, gate)
        assert (md - dy).abs().max() <= 1e-5


def test_packed_attention_matches_per_sample_softmax():
    torch.manual_seed(0)
    counts = torch.tensor([2, 5, 1])
    qkv = torch.randn(8, 3 * 8)
    out = packed_attention(qkv, counts, 2, 2.0)
    start = 0
    for c in counts.tolist():
        q, k, v = qkv[start:start + c].view(c, 3, 2, 4).permute(1, 2, 0, 3)
        ref = torch.softmax(q @ k.transpose(-2, -1) / 2.0, -1) @ v
        assert torch.allclose(out[start:start + c],
                              ref.transpose(0, 1).reshape(c, 8), atol=1e-6)
        start += c


# ------------------------------------------------- masked-dense definitions
def test_token_skipping_definition_by_hand():
    """Skipped tokens are neither updated nor used as keys / values: their
    output is their input, and changing them leaves the kept outputs
    unchanged."""
    torch.manual_seed(0)
    lay = LAUDT2TLayer(32, 4, 64, paradigm='spatial')
    lay.eval()
    x = torch.randn(2, 7, 32)
    gate = torch.tensor([[1, 0, 1, 0, 0, 1.], [0, 0, 0, 0, 0, 0]])
    keep = torch.cat([torch.ones(2, 1), gate], 1).bool()
    with torch.no_grad():
        y = lay.masked_dense(x, gate)
        x2 = x.clone()
        x2[~keep] = torch.randn(int((~keep).sum()), 32) * 10
        y2 = lay.masked_dense(x2, gate)
        # the kept tokens alone through mmpretrain's dense layer
        alone = T2TTransformerLayer.forward(lay, x[0:1, keep[0]])
    assert torch.equal(y[~keep], x[~keep])
    assert torch.allclose(y[keep], y2[keep], atol=1e-6)
    assert torch.allclose(y[0, keep[0]], alone[0], atol=1e-5)


def test_head_and_layer_skipping_definitions_by_hand():
    torch.manual_seed(0)
    lay = LAUDT2TLayer(32, 4, 64, paradigm='channel')
    lay.eval()
    x = torch.randn(2, 5, 32)
    gate = torch.tensor([[1., 0, 1, 1], [1, 1, 1, 1]])
    with torch.no_grad():
        y = lay.masked_dense(x, gate)
        # head 1 off == its proj input columns zeroed, all gates on
        lay.attn.proj.weight[:, 8:16] = 0
        y_zero = lay.masked_dense(x, torch.ones(2, 4))
    assert torch.allclose(y[0], y_zero[0], atol=1e-6)
    lay = LAUDT2TLayer(32, 4, 64, paradigm='layer')
    lay.eval()
    with torch.no_grad():
        y = lay.masked_dense(x, torch.tensor([0., 1.]))
        full = T2TTransformerLayer.forward(lay, x)
    assert torch.equal(y[0], x[0]) and torch.allclose(y[1], full[1])


def test_masked_softmax():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 5)
    logits[0, :, :, 3] = 1e4  # a skipped key far above the kept ones
    mask = torch.tensor([[1., 1, 0, 0, 1], [1, 0, 1, 1, 1]],
                        requires_grad=True)
    w = masked_softmax(logits, mask)
    for i in range(2):
        kept = mask[i].bool()
        ref = torch.softmax(logits[i][..., kept], -1)
        assert torch.allclose(w[i][..., kept], ref, atol=1e-6)
        assert torch.all(w[i][..., ~kept] == 0)
    (w * torch.randn_like(w)).sum().backward()
    assert torch.isfinite(mask.grad).all() and mask.grad.abs().sum() > 0


# ----------------------------------------------------------- stats, FLOPs
def test_flops_and_statistics():
    net = tiny('spatial')
    gate = torch.zeros(2, N_PATCH)
    gate[0, :4] = 1
    gate[1, :12] = 1
    for lay in net.blocks:
        lay.masker.forced_gate = gate
    with torch.no_grad():
        net(images(2))
    st = net.activation_stats()
    lay = net.blocks[0]
    f = lay.op_flops(17)
    for i, k in enumerate((5, 13)):  # kept tokens incl. the class token
        t = k / 17
        expect = f['masker'] + t * (f['qkv'] + f['proj'] + f['fc1'] +
                                    f['fc2']) + t * t * (f['attn_qk'] +
                                                         f['attn_av'])
        assert math.isclose(float(lay.last_stats['flops'][i]), expect,
                            rel_tol=1e-6)
    assert st['block_density'][0].tolist() == [0.25, 0.75]
    geoms = net.block_geometries((64, 64))
    ref_g, ref_s = t2t_vit_geometries('t2t-vit-t-14', (64, 64), 'spatial')
    assert geoms[0].num_tokens == ref_g[0].num_tokens == 17
    assert st['stem_flops'] == flops_lib.t2t_stem_flops(
        net.stem_geometry((64, 64)))
    # dense T2T-ViT-t-14 at 224 px: 6.1 GFLOPs (official count, QK^T and
    # AV included), T2T module ~26 %
    g, s = t2t_vit_geometries('t2t-vit-t-14', (224, 224))
    dense = flops_lib.t2t_stem_flops(s) + sum(
        sum(flops_lib.vit_layer_op_flops(x).values()) for x in g)
    assert abs(dense / 1e9 - 6.1) < 0.1 and g[0].num_tokens == 197


def test_tau_hook_and_metric_see_the_vit():
    from laud_mm import BackboneLatencyMetric, LAUDImageClassifier
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        clf = LAUDImageClassifier(
            backbone=dict(type='laud_mm.LAUDT2TViT', paradigm='layer',
                          **TINY),
            head=dict(type='VisionTransformerClsHead', num_classes=5,
                      in_channels=64),
            sparsity_loss=dict(type='laud_mm.SparsityLoss', target_rate=0.7))
    runner = types.SimpleNamespace(model=clf)
    maskers = model_maskers(runner)
    assert len(maskers) == 2
    clf.eval()
    from mmpretrain.structures import DataSample
    samples = [DataSample().set_gt_label(0) for _ in range(2)]
    with torch.no_grad():
        res = clf.predict(images(2), samples)
    metric = BackboneLatencyMetric(hardware='tx2')
    metric.process(None, res)
    out = metric.compute_metrics(metric.results)
    assert out['speedup'] > 0 and 0 < out['activation_rate'] <= 1.01


# --------------------------------------------------------------- training
DEMO = osp.join(ROOT, 'configs/demo/laud-t2t-vit-layer_imagenette.py')


@pytest.mark.parametrize('paradigm', ['layer', 'spatial'])
def test_training_iterations_on_imagenette(imagenette, tmp_path, paradigm):
    from mmengine.runner import Runner
    cfg = Config.fromfile(DEMO)
    cfg.model.backbone.paradigm = paradigm
    cfg.model.backbone.update(embed_dims=32, num_layers=2,
                              t2t_cfg=dict(token_dims=16),
                              layer_cfgs=dict(num_heads=2,
                                              feedforward_channels=64))
    cfg.model.head.in_channels = 32
    cfg.model.teacher.config.backbone.update(cfg.model.backbone,
                                             paradigm=None)
    cfg.model.teacher.config.head.in_channels = 32
    cfg.work_dir = str(tmp_path)
    cfg.experiment_name = f't2t_{paradigm}_{uuid.uuid4().hex}'
    if cfg.get('visualizer') is not None:
        cfg.visualizer.name = cfg.experiment_name
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
    assert isinstance(bb, LAUDT2TViT) and bb.paradigm == paradigm
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    runner.train()
    hub = runner.message_hub
    for key in ('train/loss', 'train/loss_sparsity', 'train/loss_distill',
                'train/act_rate'):
        assert math.isfinite(hub.get_scalar(key).current()), key
    assert hub.get_scalar('train/loss_sparsity').current() >= 0
    assert hub.get_scalar('train/gumbel_tau').current() < 5.0
    after = bb.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any('masker' in k for k in changed)  # the gates learn
    assert any('attn.qkv' in k for k in changed)


def test_configs_parse():
    for p in ('spatial', 'channel', 'layer'):
        cfg = Config.fromfile(osp.join(
            ROOT, f'configs/imagenet/laud-t2t-vit-14-{p}_8xb64_in1k.py'))
        assert cfg.model.type == 'laud_mm.LAUDImageClassifier'
        assert cfg.model.backbone.type == 'laud_mm.LAUDT2TViT'
        assert cfg.model.backbone.paradigm == p
        assert cfg.model.backbone.num_layers == 14
        assert cfg.model.teacher.config.startswith('mmpretrain::t2t_vit/')
        assert [h['type'] for h in cfg.custom_hooks][-1] == \
            'laud_mm.GumbelTemperatureHook'


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize('kw,match', [
    (dict(paradigm='token'), 'paradigm'),
    (dict(paradigm='channel', layer_cfgs=dict(num_heads=5)), 'num_heads'),
    (dict(out_indices=5), 'out_indices'),
    (dict(out_indices=[0, 'a']), 'out_indices'),
    (dict(num_layers=0), 'num_layers'),
    (dict(paradigm='spatial', with_cls_token=False,
          out_type='avg_featmap'), 'with_cls_token'),
    (dict(layer_cfgs=[dict(), dict(), dict()]), 'layer_cfgs'),
    (dict(paradigm='layer', layer_cfgs=dict(num_heads=4, input_dims=32)),
     'input_dims'),
])
def test_bad_config_values(kw, match):
    args = dict(TINY, **kw)
    with pytest.raises(ValueError, match=match):
        LAUDT2TViT(**args)


def test_bad_inputs_and_gates():
    net = tiny('spatial')
    with pytest.raises(ValueError, match=r'input of shape \(3, 64, 64\), '
                       r'expected \(N, 3, H, W\)'):
        net(torch.zeros(3, 64, 64))
    net.blocks[0].masker.forced_gate = torch.ones(2, 5)
    with pytest.raises(ValueError, match='forced_gate'):
        with torch.no_grad():
            net(images(2))
    lay = LAUDT2TLayer(32, 4, 64, paradigm='layer')
    with pytest.raises(ValueError, match='eval'):
        dynamic_t2t_layer_forward(lay, torch.zeros(1, 3, 32), None)
    lay.eval()
    with pytest.raises(ValueError, match=r'\(N, L, D\)'):
        lay(torch.zeros(1, 3, 4, 32))
    with pytest.raises(ValueError, match='too small'):
        net.block_geometries((2, 2))


# --------------------------------------------------------- latency model
TOY = HardwareSpec(name='toy', num_pe=1, fp32_per_pe=1, clock_mhz=1,
                   bandwidth_gbs=1, l2_factor=1, cycles_per_op=1,
                   launch_us=0., transaction_bytes=4)


def test_softmax_and_attention_kernels_hand_computed():
    """1 (sample, head) pair, 2 tokens, head_dims 1 on a toy device (1 PE,
    1 MAC per cycle at 1 MHz, 1 GB/s, no launch cost)."""
    qk, sm, av = attention_ops(TOY, 1, 2, 1)
    # softmax: 4 elements, 4 ops each at 1e6 op/s = 16 us; 4 B read + 4 B
    # written per element from DRAM at 1 GB/s: 32 B / 1e9 = 32 ns (a
    # streaming kernel: no on-chip term beyond the off-chip pass)
    assert math.isclose(sm.ms, (16e-6 + 32e-9) * 1e3, rel_tol=1e-9)
    assert qk.macs == 4 and av.macs == 4  # L^2 x dh each
    # QK^T on 1 PE with P = 1: 4 outputs x 1 MAC, 1 cycle each at 1 MHz
    assert math.isclose(qk.compute_ms, 4e-3, rel_tol=1e-9)


def test_fused_attention_kernel_keeps_the_logits_on_chip():
    """The fused attention (the T2T module in inference) on the toy
    device: the unfused kernels' compute and MACs, one launch, and off-chip
    only q, k, v and the output (4 x 2 tokens x 1 dim x 4 B = 32 B, not the
    2 x 2 logits twice); the T2T module's two layers are priced so."""
    parts = attention_ops(TOY, 1, 2, 1)
    (op,) = fused_attention_op(TOY, 1, 2, 1)
    assert op.name == 'attn_fused' and op.macs == 8
    assert math.isclose(op.compute_ms, sum(o.compute_ms for o in parts),
                        rel_tol=1e-12)
    assert op.offchip_bytes == 32
    assert math.isclose(op.memory_ms, 32e-9 * 1e3, rel_tol=1e-9)
    assert fused_attention_op(TOY, 0, 2, 1) == []
    pred = LatencyPredictor('v100')
    _, stem = t2t_vit_geometries('t2t-vit-t-14', (224, 224))
    names = [o.name for o in t2t_stem_ops(pred, stem, 8)]
    assert {'t2t1.attn_fused', 't2t2.attn_fused'} <= set(names)
    assert not [n for n in names if n.endswith(('attn_qk', 'softmax',
                                                'attn_av'))]


def test_layer_kernels_count_the_flops():
    """The GEMM MACs of every paradigm's kernels equal the FLOPs count of
    :mod:`laud_mm.structures.flops` (batch x per-sample FLOPs x density)."""
    pred = LatencyPredictor('v100')
    names = ('qkv', 'proj', 'fc1', 'fc2')
    g, _ = t2t_vit_geometries('t2t-vit-t-14', (224, 224))
    f = flops_lib.vit_layer_op_flops(g[0])
    attn = f['attn_qk'] + f['attn_av']
    ops = vit_layer_ops(pred, g[0], 4, None)
    macs = {o.name: o.macs for o in ops}
    for k in names:
        assert macs[k] == 4 * f[k], k
    # the attention as inference runs it: one fused kernel, no logits
    assert macs['attn_fused'] == 4 * attn
    assert not set(macs) & {'attn_qk', 'softmax', 'attn_av'}
    # token skipping: 197 = 1 + 196 tokens, d = 0.5 -> 99 kept tokens
    gs, _ = t2t_vit_geometries('t2t-vit-t-14', (224, 224), 'spatial')
    ops = vit_layer_ops(pred, gs[0], 4, 0.5)
    macs = {o.name: o.macs for o in ops}
    assert macs['attn_fused'] == 2 * 4 * 6 * 99 * 99 * 64
    assert macs['qkv'] == 4 * 99 * 384 * 1152
    assert {'masker', 'gather', 'scatter'} <= set(macs)
    # head skipping: half the heads, the FFN dense, nothing at d = 0
    gc, _ = t2t_vit_geometries('t2t-vit-t-14', (224, 224), 'channel')
    for eager in (False, True):
        p = LatencyPredictor('v100', implementation='eager') if eager \
            else pred
        macs = {o.name: o.macs for o in vit_layer_ops(p, gc[0], 4, 0.5)}
        assert macs['qkv'] == 2 * f['qkv'] and macs['fc1'] == 4 * f['fc1']
        assert macs['attn_fused'] == 2 * attn
        off = {o.name for o in vit_layer_ops(p, gc[0], 4, 0.)}
        assert not off & {'qkv', 'attn_fused', 'proj'}
        if eager:  # the weight gathers, and a group per kept-head count
            ms = {o.name: o.ms for o in vit_layer_ops(p, gc[0], 4, 0.5)}
            assert ms['weight_gather'] > 0 and ms['head_groups'] > 0
            one = {o.name for o in vit_layer_ops(p, gc[0], 1, 0.5)}
            assert 'head_groups' not in one  # one sample: one group
    # layer skipping at d = 0.5 on 2 samples: the masker + one sample
    gl, _ = t2t_vit_geometries('t2t-vit-t-14', (224, 224), 'layer')
    ops = vit_layer_ops(pred, gl[0], 2, 0.5)
    one = transformer_ops(pred.hw, 1, 197, 384, 384, 6, 64, 1152,
                          fused_attention=True)
    assert math.isclose(sum(o.ms for o in ops[1:]), sum(o.ms for o in one))


def test_predictor_whole_t2t_vit():
    pred = LatencyPredictor('v100')
    from laud_mm.models.t2t_vit import t2t_vit_arch_kwargs
    net = LAUDT2TViT(paradigm='channel',
                     **t2t_vit_arch_kwargs('t2t-vit-t-14'))
    g, s = t2t_vit_geometries('t2t-vit-t-14', (224, 240), 'channel')
    assert net.block_geometries((224, 240)) == g
    assert net.stem_geometry((224, 240)) == s
    del net
    for par in ('spatial', 'channel', 'layer'):
        g, s = t2t_vit_geometries('t2t-vit-t-14', (224, 224), par)
        static = pred.predict_static(g, 128, s)
        ms = [pred.predict_backbone(g, [d] * len(g), 128, s).total_ms
              for d in (0., 0.25, 0.5, 1.)]
        assert ms[0] < ms[1] < ms[2] < ms[3]
        assert ms[2] < static.total_ms < ms[3] * 1.05
        rep = pred.predict_backbone(g, [0.5] * len(g), 128, s)
        assert len(rep.per_stage_ms) == 1 and rep.block_names[0] == 'layer0'
        br = vit_op_breakdown(rep)
        assert math.isclose(sum(br.values()), rep.total_ms, rel_tol=1e-9)
        assert br['other'] == 0.
    # paper, Fig. 10 (c): layer skipping beats head skipping in latency
    gl, s = t2t_vit_geometries('t2t-vit-t-14', (224, 224), 'layer')
    gc, _ = t2t_vit_geometries('t2t-vit-t-14', (224, 224), 'channel')
    for dev in ('v100', 'tx2'):
        p = LatencyPredictor(dev)
        b = p.hw.default_batch
        assert p.predict_backbone(gl, [0.5] * 14, b, s).total_ms < \
            p.predict_backbone(gc, [0.5] * 14, b, s).total_ms


def test_predict_latency_tool_and_benchmark_smoke(capsys):
    """The prediction and the benchmark behind
    tools/analysis_tools/{predict_latency,benchmark_t2t_vit}.py."""
    from laud_mm.analysis import prediction
    from laud_mm.analysis.benchmark import t2t_vit as t2t_bench
    prediction.predict_latency(osp.join(
        ROOT, 'configs/imagenet/laud-t2t-vit-14-layer_8xb64_in1k.py'),
        hardware='tx2')
    out = capsys.readouterr().out
    assert 'layer13' in out and 'T2T module' in out and 'stage' in out
    prediction.predict_latency('t2t-vit-t-14', paradigm='spatial',
                               target=0.6)
    assert 'spatial' in capsys.readouterr().out
    rows = t2t_bench.benchmark_t2t_vit(tiny=True, rates=[0.5, 1.0],
                                       repeats=1, warmup=0,
                                       paradigms=['spatial'], threads=1)
    assert len(rows) == 2 and rows[0]['flops_rate'] < 1.


@pytest.mark.parametrize('paradigm', ['layer', 'spatial', 'channel'])
def test_inference_attention_fused_only_in_inference(paradigm, monkeypatch):
    """Every attention of the backbone (the Tokens-to-Token module's two,
    each encoder layer's) runs torch's fused scaled_dot_product_attention
    exactly where speed is the point (dynamic inference of a LAUD model,
    all gates on or learned, and static_forward, its baseline) and
    mmpretrain's own operators elsewhere (training, masked-dense
    evaluation, the static network); the modules' function is put back
    after every forward, also when it raises; on real images the fused
    backbone gives the output of masked-dense evaluation within float32
    rounding."""
    from conftest import load_coco_images
    from mmpretrain.models.utils.attention import \
        scaled_dot_product_attention_pyimpl as pyimpl
    sdpa = torch.nn.functional.scaled_dot_product_attention
    calls = []

    def spy(*a, **k):
        calls.append(a[0].shape[-2])  # query tokens
        return sdpa(*a, **k)
    monkeypatch.setattr(torch.nn.functional, 'scaled_dot_product_attention',
                        spy)
    x = load_coco_images(n=2, size=(64, 64))
    net = tiny(paradigm)
    net.force_gates(1.0)
    attns = net.attention_modules()
    assert len(attns) == 2 + len(net.blocks)

    def run(mode):
        calls.clear()
        net.train(mode == 'train')
        net.dynamic_inference = mode == 'dynamic'
        with torch.no_grad():
            out = net.static_forward(x) if mode == 'static_forward' \
                else net(x)
        for a in attns:  # mmpretrain's own function is back
            assert a.scaled_dot_product_attention.func is pyimpl
        return out[-1], list(calls)

    ref, n = run('masked-dense')
    assert n == []
    assert run('train')[1] == []
    for mode in ('dynamic', 'static_forward'):
        out, n = run(mode)
        # 64 px: 16 x 16 tokens after the 7 x 7 / 4 split, 8 x 8 after the
        # 3 x 3 / 2 one, then 4 x 4 + the class token in every layer
        assert n == [256, 64] + [17] * len(net.blocks), mode
        assert (out - ref).abs().max() <= 1e-5 * ref.abs().max(), mode
    # random gates: the dynamic paths' own attention is fused too
    g = torch.Generator().manual_seed(0)
    for b in net.blocks:
        shape = b.last_stats['gate'].shape
        b.masker.forced_gate = (torch.rand(shape, generator=g) < 0.5).float()
        b.masker.forced_gate.view(-1)[0] = 1.  # some attention in each
    ref, _ = run('masked-dense')
    out, n = run('dynamic')
    assert n[:2] == [256, 64] and len(n) >= 2 + len(net.blocks)
    assert max(n[2:]) <= 17
    assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()
    net.force_gates(1.0)
    static = tiny(None)
    static.dynamic_inference = True
    calls.clear()
    with torch.no_grad():
        static(x)
    assert calls == []  # paradigm=None: mmpretrain's network, bit for bit

    def boom(*a, **k):
        raise RuntimeError('boom')
    monkeypatch.setattr(torch.nn.functional, 'scaled_dot_product_attention',
                        boom)
    net.dynamic_inference = True
    with torch.no_grad(), pytest.raises(RuntimeError, match='boom'):
        net(x)
    for a in attns:
        assert a.scaled_dot_product_attention.func is pyimpl


@pytest.mark.parametrize('shape,k,s,p', [
    ((2, 3, 64, 64), 7, 4, 2),      # the image split at 64 px
    ((2, 3, 61, 58), 7, 4, 2),      # sides that leave a remainder
    ((1, 5, 9, 11), (3, 2), (2, 1), (1, 0)),  # pairs, no padding on W
    ((2, 4, 7, 7), 3, 2, 1)])
def test_soft_split_tokens_equals_unfold(shape, k, s, p):
    """The token-major soft split moves the same floats as nn.Unfold and its
    transpose: equal element for element, contiguous token rows, on real
    image values and on a strided (non-contiguous) input; sizes it cannot
    split are refused by name."""
    from conftest import load_coco_images
    from laud_mm.models.t2t_vit.soft_split import soft_split_tokens
    n, c, h, w = shape
    x = load_coco_images(n=n, size=(h, w)) if c == 3 else \
        torch.randn(shape, generator=torch.Generator().manual_seed(0))
    ref = torch.nn.functional.unfold(x, k, stride=s, padding=p)
    for inp in (x, x.contiguous(memory_format=torch.channels_last),
                x.transpose(2, 3).contiguous().transpose(2, 3)):
        got = soft_split_tokens(inp, k, s, p)
        assert got.is_contiguous()
        assert torch.equal(got, ref.transpose(1, 2))
    with pytest.raises(ValueError, match='must be .N, C, H, W.'):
        soft_split_tokens(x[0], k, s, p)
    with pytest.raises(ValueError, match='smaller than the'):
        soft_split_tokens(x[..., :1, :1], 9, 1, 0)
    for bad in (1.5, True, (3, 3, 3)):
        with pytest.raises(ValueError, match='kernel_size=.*pair of ints'):
            soft_split_tokens(x, bad, s, p)


def test_image_split_token_major_only_in_inference():
    """Where the attention runs fused (dynamic inference, static_forward)
    the T2T module's image split hands its first layer contiguous token
    rows (no im2col, no transposing copy), the same values as mmpretrain's
    nn.Unfold; everywhere else it is mmpretrain's module, and its own
    forward is back after every forward, also one that raises."""
    from conftest import load_coco_images
    x = load_coco_images(n=2, size=(64, 64))
    net = tiny('spatial')
    net.force_gates(1.0)
    split = net.tokens_to_token.soft_split0
    seen = []
    split.register_forward_hook(
        lambda m, a, out: seen.append(out.transpose(1, 2)))

    def run(mode):
        seen.clear()
        net.train(mode == 'train')
        net.dynamic_inference = mode == 'dynamic'
        with torch.no_grad():
            net.static_forward(x) if mode == 'static_forward' else net(x)
        assert 'forward' not in split.__dict__, mode  # its own is back
        return seen[0]
    ref = run('masked-dense')
    assert not ref.is_contiguous()  # mmpretrain's: a transposed view
    assert not run('train').is_contiguous()
    for mode in ('dynamic', 'static_forward'):
        got = run(mode)
        assert got.is_contiguous() and torch.equal(got, ref), mode
    net.eval()
    net.dynamic_inference = True
    split.register_forward_hook(
        lambda m, a, out: (_ for _ in ()).throw(RuntimeError('boom')))
    with torch.no_grad(), pytest.raises(RuntimeError, match='boom'):
        net(x)
    assert 'forward' not in split.__dict__
