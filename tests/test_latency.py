"""Tests of the latency predictor (laud_mm.latency): hand-computed operator
cases, the spec loader and its errors, whole-backbone predictions against the
paper's figures (METHOD_NOTES sections 4-5) and the prediction speed."""
import json
import os.path as osp
import time

import pytest
import torch

from laud_mm.latency import (BackboneLatency, ConvOp, HardwareSpec,
                             LatencyPredictor, conv_latency, get_hardware,
                             resnet_geometries, save_hardware)
from laud_mm.latency.operators import (access_efficiency, elementwise_latency,
                                       tile_candidates)
from laud_mm.latency.search import format_search, search_granularity
from laud_mm.models.gates import KEEP

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

# A toy device for hand computation: 1 PE of 4 FP32 units at 1 MHz,
# 1 GB/s off-chip, L2 4 GB/s, 4-cycle FMA, 32-byte transactions, 8 us launch.
TOY = HardwareSpec('toy', num_pe=1, fp32_per_pe=4, clock_mhz=1,
                   bandwidth_gbs=1, l2_factor=4)


# ------------------------------------------------------------- operators
def test_tile_candidates_and_efficiency():
    assert tile_candidates(56) == (1, 2, 3, 4, 5, 6, 7, 8, 12, 14, 16, 28,
                                   32, 56)
    assert tile_candidates(1) == (1,)
    assert tile_candidates(10) == (1, 2, 3, 4, 5, 6, 7, 8, 10)
    # aligned: 16 B of a 32 B transaction are useful
    assert access_efficiency(16, 32, True) == pytest.approx(0.5)
    assert access_efficiency(64, 32, True) == pytest.approx(1.0)
    # unaligned 12-byte run: 1 + 8/32 transactions on average
    assert access_efficiency(12, 32, False) == pytest.approx(12 / 40)
    with pytest.raises(ValueError, match='dim=0'):
        tile_candidates(0)


def test_single_tile_hand_computed():
    """1x1 conv, 8 -> 4 channels on a 2x2 map: one tile of 16 outputs.

    compute: 16 outputs / 4 units = 4 per unit = the 4-cycle pipeline, so
    K = 8 steps x 4 cycles = 32 cycles at 1 MHz = 32 us (utilisation 1).
    off-chip: (input 32 + weights 32 + output 16) x 4 B = 320 B at 1 GB/s
    = 0.32 us. on-chip: the input window (8 ch x 2 x 2, one 16-byte run per
    channel plane = half a transaction) costs 64 elements, weights 32,
    output (16-byte runs) 32: 128 x 4 B = 512 B at 4 GB/s = 0.128 us.
    launch 8 us. Total 40.448 us.
    """
    r = conv_latency(TOY, ConvOp(1, 8, 4, 2, 2, 2, 2))
    assert r.tile == (1, 4, 2, 2)
    assert r.n_tiles == 1
    assert r.utilisation == pytest.approx(1.0)
    assert r.compute_ms == pytest.approx(0.032)
    assert r.offchip_bytes == pytest.approx(320)
    assert r.onchip_bytes == pytest.approx(512)
    assert r.memory_ms == pytest.approx(0.00032 + 0.000128)
    assert r.ms == pytest.approx(0.040448)
    assert r.macs == 8 * 4 * 4


def test_pipeline_underfilled_tile():
    """Same conv with 4 outputs only (1 channel, 2x2): one output per unit,
    but the 4-cycle FMA latency still costs 4 cycles per reduction step:
    utilisation 1/4, compute 8 x 4 cycles = 32 us for a quarter of the work.
    """
    r = conv_latency(TOY, ConvOp(1, 8, 1, 2, 2, 2, 2))
    assert r.utilisation == pytest.approx(0.25)
    assert r.compute_ms == pytest.approx(0.032)


def test_compute_bound_op_hand_computed():
    """1x1 conv 64 -> 4 on a 2x2 map: 1024 MACs, 4 per unit and step:
    64 steps x 4 cycles = 256 us of compute against ~2.6 us of memory.
    off-chip: (256 + 256 + 16) x 4 B = 2112 B -> 2.112 us; on-chip: input
    64 planes of 16 B runs (2 x 256 elements) + 256 weights + 32 output
    = 800 elements x 4 B = 3200 B at 4 GB/s = 0.8 us."""
    r = conv_latency(TOY, ConvOp(1, 64, 4, 2, 2, 2, 2))
    assert r.compute_ms == pytest.approx(0.256)
    assert r.memory_ms == pytest.approx(0.002112 + 0.0008)
    assert r.ms == pytest.approx(0.256 + 0.002912 + 0.008)
    assert r.compute_ms > 50 * r.memory_ms


def test_memory_bound_op_hand_computed():
    """Residual add of 1e6 FP32 elements on the V100: 3 x 4 MB moved at
    700 GB/s = 17.143 us off-chip, 12 MB at 2800 GB/s = 4.286 us on-chip,
    1e6 ops at 7.68 TMAC/s = 0.13 us, launch 8 us."""
    v100 = get_hardware('v100')
    r = elementwise_latency(v100, 'add', 1e6, 2, 1)
    assert r.memory_ms == pytest.approx(12e6 / 700e9 * 1e3 +
                                        12e6 / 2800e9 * 1e3)
    assert r.compute_ms == pytest.approx(1e6 / 7.68e12 * 1e3)
    assert r.ms == pytest.approx(0.017143 + 0.004286 + 0.00013 + 0.008,
                                 rel=1e-3)
    assert r.compute_ms < 0.01 * r.memory_ms


def test_scattered_runs_cost_more():
    """A scatter-add with 1-element runs moves ~7.25x the bytes of the
    dense add for the scattered tensors (4 B of a 32 B transaction plus the
    misalignment): S = 1 pays for short scattered runs."""
    v100 = get_hardware('v100')
    dense = elementwise_latency(v100, 'a', 1e6, 2, 1)
    s1 = elementwise_latency(v100, 's', 1e6, 2, 1, run_elems=1.,
                             contiguous_reads=1)
    s8 = elementwise_latency(v100, 's', 1e6, 2, 1, run_elems=8.,
                             contiguous_reads=1)
    # 1 dense read + 2 scattered at 4 / 32 efficiency
    assert s1.offchip_bytes == pytest.approx(4e6 + 2 * 4e6 * 8)
    assert s1.ms > s8.ms > dense.ms


def test_conv_errors():
    with pytest.raises(ValueError, match='groups=3'):
        conv_latency(TOY, ConvOp(1, 8, 4, 2, 2, 2, 2, groups=3))
    with pytest.raises(ValueError, match='cin=-1'):
        conv_latency(TOY, ConvOp(1, -1, 4, 2, 2, 2, 2))
    assert conv_latency(TOY, ConvOp(0, 8, 4, 2, 2, 2, 2)).ms == 0


def test_grouped_conv_cheaper_than_dense():
    v100 = get_hardware('v100')
    dense = conv_latency(v100, ConvOp(8, 128, 128, 28, 28, 28, 28, 3))
    grouped = conv_latency(v100, ConvOp(8, 128, 128, 28, 28, 28, 28, 3,
                                        groups=16))
    assert grouped.macs == dense.macs / 16
    assert grouped.ms < dense.ms


# ------------------------------------------------------------- hardware
def test_known_devices_match_method_notes():
    v100 = get_hardware('v100')
    assert (v100.num_pe, v100.fp32_per_pe, v100.clock_mhz,
            v100.bandwidth_gbs, v100.l2_factor, v100.default_batch) == \
        (80, 64, 1500, 700, 4, 128)
    tx2 = get_hardware('Jetson-TX2')
    assert (tx2.num_pe, tx2.fp32_per_pe, tx2.clock_mhz, tx2.bandwidth_gbs,
            tx2.default_batch) == (2, 128, 1300, 59.7, 1)
    assert get_hardware('rtx3090').l2_factor == 1
    assert get_hardware('nano').bandwidth_gbs == 25.6
    assert get_hardware('rtx3060').num_pe == 28
    for name in ('h200', 'a100', 'cpu'):
        assert get_hardware(name).name == name
    assert v100.cycles_per_op == 4 and v100.transaction_bytes == 32 \
        and v100.launch_us == 8
    assert v100.peak_macs == pytest.approx(80 * 64 * 1.5e9)


def test_spec_files_roundtrip(tmp_path):
    spec = get_hardware('tx2').replace(name='my_tx2', bandwidth_gbs=50.)
    for ext in ('.yaml', '.json'):
        p = str(tmp_path / ('dev' + ext))
        save_hardware(spec, p)
        assert get_hardware(p) == spec
        assert LatencyPredictor(p).hw == spec
    p = tmp_path / 'wrapped.yaml'
    p.write_text('hardware:\n  name: w\n  num_pe: 4\n  fp32_per_pe: 32\n'
                 '  clock_mhz: 1000\n  bandwidth_gbs: 20\n')
    hw = get_hardware(str(p))
    assert hw.num_pe == 4 and hw.l2_factor == 4.0 and hw.launch_us == 8.0


def test_spec_errors(tmp_path):
    with pytest.raises(ValueError, match=r"hardware='v99'.*'v100'"):
        get_hardware('v99')
    with pytest.raises(ValueError, match='does not exist'):
        get_hardware(str(tmp_path / 'missing.yaml'))
    bad = tmp_path / 'bad.json'
    bad.write_text(json.dumps(dict(name='x', num_pe=2, fp32_per_pe=8,
                                   clock_mhz=100, bandwidth_gbs=-3)))
    with pytest.raises(ValueError, match='bandwidth_gbs=-3'):
        get_hardware(str(bad))
    bad.write_text(json.dumps(dict(name='x', num_pe=2, fp32_per_pe=8,
                                   clock_mhz=100, bandwidth_gbs=3, speed=1)))
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['speed'\]"):
        get_hardware(str(bad))
    bad.write_text(json.dumps(dict(name='x', num_pe=2)))
    with pytest.raises(ValueError, match='missing key.*bandwidth_gbs'):
        get_hardware(str(bad))
    bad.write_text('{not json')
    with pytest.raises(ValueError, match='does not parse'):
        get_hardware(str(bad))
    with pytest.raises(ValueError, match='num_pe=2.5'):
        HardwareSpec('x', 2.5, 8, 100, 3)
    with pytest.raises(ValueError, match='hardware=3'):
        get_hardware(3)


# ------------------------------------------------------------- predictor
def _pred(dev, depth, paradigm=None, gran=None, d=0.5, batch=None):
    p = LatencyPredictor(dev)
    b = batch or p.hw.default_batch
    g, st = resnet_geometries(depth, (224, 224), paradigm, gran)
    static = p.predict_static(g, b, st)
    dyn = p.predict_backbone(g, [d] * len(g), b, st) if paradigm else None
    return static, dyn


@pytest.mark.parametrize('dev,depth,paper_ms', [
    ('v100', 50, 116.2), ('v100', 101, 214.7),
    ('tx2', 50, 17.2), ('tx2', 101, 32.2)])
def test_paper_static_figures(dev, depth, paper_ms):
    """METHOD_NOTES section 4/5: static ResNet latency within 10 %."""
    static, _ = _pred(dev, depth)
    assert abs(static.total_ms / paper_ms - 1) < 0.10, static.total_ms


@pytest.mark.parametrize('dev,paradigm,gran,paper', [
    ('v100', 'layer', None, 0.56), ('v100', 'channel', (2, 2, 2, 2), 0.53),
    ('v100', 'spatial', (4, 4, 2, 1), 0.83),
    ('tx2', 'layer', None, 0.55), ('tx2', 'channel', (2, 2, 2, 2), 0.49),
    ('tx2', 'spatial', (4, 4, 2, 1), 0.67)])
def test_paper_ratio_figures(dev, paradigm, gran, paper):
    """R101 dynamic / static at r = 0.5 near the authors' model (METHOD_NOTES
    section 4 table): within 0.12 absolute."""
    static, dyn = _pred(dev, 101, paradigm, gran)
    ratio = dyn.total_ms / static.total_ms
    assert abs(ratio - paper) < 0.12, ratio


def test_paper_findings():
    # layer skipping ahead of spatial on the V100 (R101, r = 0.5)
    s, layer = _pred('v100', 101, 'layer')
    _, spatial = _pred('v100', 101, 'spatial', (4, 4, 2, 1))
    assert layer.total_ms < spatial.total_ms
    # S = 1 is no faster than static on server GPUs
    for dev in ('v100', 'rtx3090'):
        s, s1 = _pred(dev, 101, 'spatial', (1, 1, 1, 1))
        assert s1.total_ms >= 0.98 * s.total_ms, dev
    # larger S helps (4 beats 1, 2)
    t = {S: _pred('v100', 101, 'spatial', (S, S, S, 1))[1].total_ms
         for S in (1, 2, 4)}
    assert t[4] < t[2] < t[1]
    # per-image latency falls with batch on the V100 and plateaus
    p = LatencyPredictor('v100')
    g, st = resnet_geometries(50, (224, 224))
    per = {b: p.predict_static(g, b, st).per_image_ms for b in (1, 16, 128,
                                                                 256)}
    assert per[1] > per[16] > per[128]
    assert abs(per[256] / per[128] - 1) < 0.1


def test_density_monotone_and_extremes():
    p = LatencyPredictor('v100')
    for par, gran in (('layer', None), ('channel', (2, 2, 2, 2)),
                      ('spatial', (4, 4, 2, 1))):
        g, st = resnet_geometries(50, (224, 224), par, gran)
        ts = [p.predict_backbone(g, [d] * len(g), 32, st).total_ms
              for d in (0., 0.25, 0.5, 0.75, 1.)]
        assert all(a < b for a, b in zip(ts, ts[1:])), (par, ts)
    # layer skipping at density 0: only stem, maskers and downsamples
    g, st = resnet_geometries(50, (224, 224), 'layer')
    r = p.predict_backbone(g, [0.] * len(g), 32, st)
    names = {o.name for ops in r.block_ops for o in ops}
    assert names == {'masker', 'downsample'}
    # at batch 1 a layer block at density d costs masker + d x block
    one = p.predict_backbone(g[1:2], [1.], 1)
    half = p.predict_backbone(g[1:2], [0.5], 1)
    masker = one.block_ops[0][0].ms
    assert half.total_ms == pytest.approx(masker + 0.5 * (one.total_ms -
                                                          masker))


def test_report_structure():
    p = LatencyPredictor('tx2')
    g, st = resnet_geometries(101, (224, 224), 'channel', (2, 2, 2, 2))
    r = p.predict_backbone(g, [0.6] * len(g), 1, st)
    assert isinstance(r, BackboneLatency)
    assert len(r.per_block_ms) == 33 and len(r.per_stage_ms) == 4
    assert r.total_ms == pytest.approx(sum(r.per_stage_ms) + r.stem_ms)
    assert r.per_image_ms == r.total_ms
    text = r.table(ops=True)
    assert 'stage 2' in text and 'conv2' in text and 'total' in text


def test_predictor_errors():
    p = LatencyPredictor('v100')
    g, st = resnet_geometries(50, (224, 224), 'layer')
    with pytest.raises(ValueError, match='densities has 3 entries'):
        p.predict_backbone(g, [0.5] * 3, 8)
    with pytest.raises(ValueError, match=r'densities\[2\]=1.5'):
        p.predict_backbone(g, [0.5, 0.5, 1.5] + [0.5] * 13, 8)
    with pytest.raises(ValueError, match='batch_size=0'):
        p.predict_backbone(g, [0.5] * 16, 0)
    with pytest.raises(ValueError, match="hardware='gtx'"):
        LatencyPredictor('gtx')
    with pytest.raises(ValueError, match='granularity'):
        resnet_geometries(50, (224, 224), 'spatial', (4, 4))


def test_whole_backbone_speed():
    """A whole ResNet-101 prediction (cold tile-search cache) < 1 s."""
    conv_latency.cache_clear()
    elementwise_latency.cache_clear()
    p = LatencyPredictor('v100')
    g, st = resnet_geometries(101, (800, 1216), 'spatial', (4, 4, 7, 1))
    t = time.perf_counter()
    p.predict_backbone(g, [0.37] * len(g), 128, st)
    cold = time.perf_counter() - t
    t = time.perf_counter()
    p.predict_backbone(g, [0.37] * len(g), 128, st)
    warm = time.perf_counter() - t
    assert cold < 1.0 and warm < 0.1, (cold, warm)


def test_granularity_search():
    p = LatencyPredictor('v100')
    g, _ = resnet_geometries(101, (224, 224))
    res = search_granularity(p, g, 0.5, 128)
    assert sorted(res) == [0, 1, 2, 3]
    for cands in res.values():
        assert [c.ms for c in cands] == sorted(c.ms for c in cands)
    # S = 1 ranks last among the spatial candidates of every stage
    for s in range(3):
        spatial = [c for c in res[s] if c.paradigm == 'spatial']
        assert spatial[-1].granularity == 1
    assert 'recommended spatial granularity' in format_search(res)
    with pytest.raises(ValueError, match='target=0'):
        search_granularity(p, g, 0, 128)


def test_matches_laud_resnet_geometry():
    """resnet_geometries() agrees with LAUDResNet.block_geometries()."""
    from laud_mm.models.backbones.laud_resnet import LAUDResNet
    m = LAUDResNet(50, paradigm='spatial', granularity=(4, 4, 2, 1))
    ours, stem = resnet_geometries(50, (193, 257), 'spatial', (4, 4, 2, 1))
    assert m.block_geometries((193, 257)) == ours
    assert m.stem_geometry((193, 257)).out_hw == stem.out_hw


def test_predict_latency_measures_checkpoint_densities(tmp_path, capsys):
    """--checkpoint: the tool loads a trained classifier checkpoint, runs its
    backbone on real imagenette test images and predicts from the measured
    per-block densities (a block whose masker was set to skip measures 0)."""
    import sys

    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    import laud_mm  # noqa: F401
    from laud_mm.registry import MODELS
    sys.path.insert(0, osp.join(ROOT, 'tools'))
    import predict_latency
    cfg_path = osp.join(ROOT, 'configs/demo/laud-r50-layer_imagenette.py')
    cfg = Config.fromfile(cfg_path)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
    with torch.no_grad():  # input-independent gates: keep (init bias), but
        for blk in model.backbone.blocks:  # block 2 always skips
            blk.masker.fc.weight.zero_()
        fc = model.backbone.blocks[2].masker.fc
        fc.bias.fill_(10.)
        fc.bias[KEEP] = -10.
    ckpt = tmp_path / 'epoch_1.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict(epoch=1)), ckpt)
    dens, hw = predict_latency.measure_densities(cfg, str(ckpt), 2)
    assert len(dens) == 16 and dens[2] == 0.0
    assert all(d == 1.0 for i, d in enumerate(dens) if i != 2)
    rep = predict_latency.main([cfg_path, '--checkpoint', str(ckpt),
                                '--num-images', '2', '--hardware', 'tx2'])
    out = capsys.readouterr().out
    assert 'measured on 2 images' in out and f'{hw[0]}x{hw[1]}' in out
    assert rep.per_block_ms[2] < 0.2 * rep.per_block_ms[1]
    with pytest.raises(ValueError, match='num-images'):
        predict_latency.measure_densities(cfg, str(ckpt), 0)
