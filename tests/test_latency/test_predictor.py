"""Tests of the latency predictor (laud_mm.latency): hand-computed operator
cases, the spec loader and its errors, whole-backbone predictions against the
paper's figures (docs/method.md sec. 4-5) and the prediction speed."""
import dataclasses
import json
import time

import pytest
import torch

from laud_mm.latency import (BackboneLatency, ConvOp, HardwareSpec,
                             LatencyPredictor, conv_latency, get_hardware,
                             save_hardware)
from laud_mm.models import resnet_geometries
from laud_mm.latency.operators import (access_efficiency, elementwise_latency,
                                       launch_latency, pool_latency,
                                       scatter_add_latency, tile_candidates)
from laud_mm.latency.blocks import resnet as resnet_latency
from laud_mm.latency.blocks.common import (channel_masker_op,
                                          masker_input_pooled)
from laud_mm.latency.blocks.resnet import channel_kept_padded
from laud_mm.latency.search import format_search, search_granularity

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
    700 GB/s = 17.143 us off-chip (a streaming kernel reuses nothing: the
    on-chip level only passes the off-chip bytes through, no second term),
    1e6 ops at 7.68 TMAC/s = 0.13 us, launch 8 us."""
    v100 = get_hardware('v100')
    r = elementwise_latency(v100, 'add', 1e6, 2, 1)
    assert r.memory_ms == pytest.approx(12e6 / 700e9 * 1e3)
    assert r.offchip_bytes == r.onchip_bytes == 12e6
    assert r.compute_ms == pytest.approx(1e6 / 7.68e12 * 1e3)
    assert r.ms == pytest.approx(0.017143 + 0.00013 + 0.008, rel=1e-3)
    assert r.compute_ms < 0.01 * r.memory_ms


def test_scattered_runs_cost_more():
    """A streaming kernel with 1-element scattered runs (the eager CPU
    path's gather / scatter) moves 8x the bytes of the scattered tensors
    from DRAM (4 B of a 32 B transaction), then the useful bytes through
    the on-chip level; a dense one the off-chip bytes only."""
    v100 = get_hardware('v100')
    dense = elementwise_latency(v100, 'a', 1e6, 2, 1)
    s1 = elementwise_latency(v100, 's', 1e6, 2, 1, run_elems=1.,
                             contiguous_reads=1)
    s8 = elementwise_latency(v100, 's', 1e6, 2, 1, run_elems=8.,
                             contiguous_reads=1)
    # 1 dense read + 2 scattered at 4 / 32 efficiency
    assert s1.offchip_bytes == pytest.approx(4e6 + 2 * 4e6 * 8)
    assert s1.onchip_bytes == pytest.approx(12e6)
    assert s1.memory_ms == pytest.approx((68e6 / 700e9 + 12e6 / 2800e9)
                                         * 1e3)
    assert s1.ms > s8.ms > dense.ms


def test_scatter_add_latency_hand_computed():
    """The fused scatter-add of a spatial block on the toy device: a map of
    1000 elements read and written whole plus 100 patch elements off-chip,
    (2000 + 100) x 4 B at 1 GB/s = 8.4 us; the active positions' three
    accesses on-chip, 300 x 4 B at 4 GB/s = 0.3 us; 1100 adds at 4 MAC/us
    = 275 us; launch 8 us."""
    r = scatter_add_latency(TOY, 'scatter_add', 1000., 100.)
    assert r.offchip_bytes == pytest.approx(8400)
    assert r.onchip_bytes == pytest.approx(1200)
    assert r.memory_ms == pytest.approx(8.4e-3 + 0.3e-3)
    assert r.compute_ms == pytest.approx(0.275)
    assert r.ms == pytest.approx(0.275 + 8.7e-3 + 8e-3)
    with pytest.raises(ValueError, match='patch_elems=-1'):
        scatter_add_latency(TOY, 's', 10., -1.)


def test_patch_loop_tiles_run_every_patch():
    """A convolution on gathered patches (ConvOp.patch_loop): every tile
    spans all the active patches (the PE loops over them), so twice the
    patches take twice the compute on the same tiles, and each channel tile
    re-reads every patch's window: the input's on-chip bytes grow with the
    number of channel tiles (16 -> 1 output channel per tile)."""
    op = ConvOp(10, 8, 16, 2, 2, 8, 8, kernel=3, gathered=True,
                patch_loop=True)
    r = conv_latency(TOY, op)
    assert r.tile[0] == 10 and r.n_tiles == 16 // r.tile[1] * \
        (2 // r.tile[2]) * (2 // r.tile[3])
    r2 = conv_latency(TOY, dataclasses.replace(op, batch=20))
    assert r2.tile == (20,) + r.tile[1:]
    assert r2.compute_ms == pytest.approx(2 * r.compute_ms)
    # every channel tile reads every patch's 4 x 4 window (8 channels)
    wide = conv_latency(TOY.replace(max_tile_outputs=4), op)
    assert wide.tile[1] * wide.tile[2] * wide.tile[3] <= 4
    win = 8 * 4 * 4 * 10  # one pass over the windows of the 10 patches
    c_tiles = 16 // wide.tile[1]
    assert wide.onchip_bytes >= c_tiles * win * 4


def test_max_tile_batch_re_reads_weights_per_image():
    """max_tile_batch = 1 (a CPU: PyTorch's kernels run image by image):
    4 images of the 8 -> 4 conv above give 4 tiles of 16 outputs instead
    of one tile spanning the images; same compute (32 cycles per tile at
    full pipeline), but each tile reads the 32 weights again from the L2:
    3 x 32 x 4 B more on-chip traffic."""
    op = ConvOp(4, 8, 4, 2, 2, 2, 2)
    free = conv_latency(TOY, op)
    per_image = conv_latency(TOY.replace(max_tile_batch=1), op)
    assert free.tile == (4, 4, 2, 2)
    assert per_image.tile == (1, 4, 2, 2) and per_image.n_tiles == 4
    assert per_image.compute_ms == pytest.approx(free.compute_ms)
    assert per_image.onchip_bytes - free.onchip_bytes == pytest.approx(
        3 * 32 * 4)
    assert TOY.max_tile_batch == 0
    with pytest.raises(ValueError, match='max_tile_batch=-1'):
        TOY.replace(max_tile_batch=-1)


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
def _pred(dev, depth, paradigm=None, gran=None, d=0.5, batch=None,
          stem=True):
    p = LatencyPredictor(dev)
    b = batch or p.hw.default_batch
    g, st = resnet_geometries(depth, (224, 224), paradigm, gran)
    st = st if stem else None
    static = p.predict_static(g, b, st)
    dyn = p.predict_backbone(g, [d] * len(g), b, st) if paradigm else None
    return static, dyn


@pytest.mark.parametrize('dev,depth,paper_ms', [
    ('v100', 50, 116.2), ('v100', 101, 214.7),
    ('tx2', 50, 17.2), ('tx2', 101, 32.2)])
def test_paper_static_figures(dev, depth, paper_ms):
    """docs/method.md sec. 4: static ResNet latency within 10 %; the
    authors' figures sum the residual blocks (no stem), so do we here."""
    static, _ = _pred(dev, depth, stem=False)
    assert abs(static.total_ms / paper_ms - 1) < 0.10, static.total_ms


@pytest.mark.parametrize('dev,paradigm,gran,paper', [
    ('v100', 'layer', None, 0.56), ('v100', 'channel', (2, 2, 2, 2), 0.53),
    ('v100', 'spatial', (4, 4, 2, 1), 0.83),
    ('tx2', 'layer', None, 0.55), ('tx2', 'channel', (2, 2, 2, 2), 0.49),
    ('tx2', 'spatial', (4, 4, 2, 1), 0.67)])
@pytest.mark.parametrize('stem', [False, True], ids=['blocks', 'with_stem'])
def test_paper_ratio_figures(dev, paradigm, gran, paper, stem):
    """Every row of the authors' ratios we have (docs/method.md sec. 4: R101,
    dynamic / static at r = 0.5, V100 and TX2; layer, channel G = 2,
    spatial 4-4-2-1) within 0.1 absolute, over the residual blocks as the
    authors count and with the (static) stem added to both."""
    static, dyn = _pred(dev, 101, paradigm, gran, stem=stem)
    ratio = dyn.total_ms / static.total_ms
    assert abs(ratio - paper) < 0.1, ratio


def test_spatial_ratio_rises_faster_where_l2_runs_at_dram_speed():
    """The RTX 3090's L2 moves data at its DRAM bandwidth (l2_factor 1,
    docs/method.md sec. 4): the spatial kernels' on-chip traffic (every
    channel tile re-reading every active patch's window with its halo) is
    priced at off-chip speed there, so the R50 4-4-2-1 ratio grows with r
    about twice as fast as on the V100 (L2 at 4x), well above 1 at r = 1;
    on the TX2 (2 PEs, batch 1) compute dominates and the ratio stays near
    the FLOPs."""
    slope = {}
    for dev in ('v100', 'rtx3090', 'tx2'):
        s, lo = _pred(dev, 50, 'spatial', (4, 4, 2, 1), d=0.25, stem=False)
        _, hi = _pred(dev, 50, 'spatial', (4, 4, 2, 1), d=1.0, stem=False)
        slope[dev] = (hi.total_ms - lo.total_ms) / s.total_ms / 0.75
    assert slope['rtx3090'] > 1.2 * slope['v100'] > 1.2 * slope['tx2']
    _, full = _pred('rtx3090', 50, 'spatial', (4, 4, 2, 1), d=1.0)
    static, _ = _pred('rtx3090', 50)
    assert full.total_ms > 1.5 * static.total_ms


def test_spatial_masker_takes_the_faster_schedule():
    """The spatial masker with conv1 (paper sec. 3.4): the fused
    Masker-Conv1x1 (dense, width + 1 outputs) or the masker on its own plus
    conv1 on the covered input pixels, whichever is faster: on the
    compute-bound TX2 at a low rate the latter, at full density the fused
    one; either way no more than the other."""
    from laud_mm.latency.blocks.common import (active_patches,
                                               spatial_masker_ops)
    p = LatencyPredictor('tx2')
    g = resnet_geometries(50, (224, 224), 'spatial', (4, 4, 2, 1))[0][4]
    names = {d: [o.name for o in spatial_masker_ops(
        p, g, 1, d, active_patches(g, 1, d))] for d in (0.1, 1.0)}
    assert names[1.0] == ['masker_conv1', 'mask_index']
    assert names[0.1] == ['masker', 'masker_fc', 'mask_index', 'conv1']
    fused = conv_latency(p.hw, ConvOp(1, g.in_channels, g.width + 1,
                                      *g.in_hw, *g.in_hw)).ms
    low = sum(o.ms for o in spatial_masker_ops(
        p, g, 1, 0.1, active_patches(g, 1, 0.1)))
    assert low < fused
    # conv1 on its own computes the covered pixels: 1 - 0.9 ** 2.25 of them
    pa = active_patches(g, 1, 0.1)
    assert pa.window == (6, 6) and pa.grid == (7, 7)
    assert pa.coverage == pytest.approx(1 - 0.9 ** (36 / 16))


def test_channel_ratio_is_continuous_at_full_density():
    """The per-sample channel count's spread is capped at the width: the
    predicted latency approaches the all-on block's as d -> 1 (it jumped by
    a channel tile at d = 0.999)."""
    p = LatencyPredictor('v100')
    g, st = resnet_geometries(50, (224, 224), 'channel', (2, 2, 2, 2))
    t = [p.predict_backbone(g, [d] * len(g), 128, st).total_ms
         for d in (0.99, 0.999, 0.9999, 1.0)]
    assert all(a <= b * (1 + 1e-9) for a, b in zip(t, t[1:])), t
    assert t[1] == pytest.approx(t[3], rel=0.01)


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


# ------------------------------------------------------------ eager model
def _eager():
    """The eager model as tools/analysis_tools/validate_predictor.py runs it."""
    return LatencyPredictor('cpu', implementation='eager',
                            spatial_dense_threshold=0.6, forced_gates=True)


def _by_name(ops):
    names = [o.name for o in ops]
    assert len(set(names)) == len(names), names
    return names, {o.name: o for o in ops}


BOOKKEEPING = ('gate', 'gate_count', 'kept_lists', 'bookkeeping',
               'mask_prep',
               'slice', 'expand_mask', 'skipped_relu')


def _launch_count(p, ops):
    t = sum(o.ms for o in ops if o.name in BOOKKEEPING)
    return t / (p.hw.launch_us * 1e-3)


def test_eager_layer_block_is_static_on_kept_samples_plus_one_scatter():
    """R50 s1.b0 (downsample, 56 -> 28 px) at batch 4 with 2 kept samples:
    the forced-gate calls, the downsample, the branch of the static block on
    2 samples (conv1 as GEMMs on their rows of x, ops.sample_gemm: no row
    copy), then conv3 accumulated into the kept shortcut rows and one pass
    for the bias and the ReLU (the same kernel, one call); the 2 skipped rows of
    the downsample output get a ReLU. An identity block inside a backbone writes into its input (the
    skipped rows cost nothing); called alone, its input is copied first."""
    p = _eager()
    hw = p.hw
    g = resnet_geometries(50, (224, 224), 'layer')[0][3]
    out_e = g.out_channels * 28 * 28
    ops = resnet_latency.layer_block_ops(p, g, 4, 0.5)
    names, by = _by_name(ops)
    assert names == ['masker', 'masker_fc', 'gate', 'downsample',
                     'gate_count', 'bookkeeping', 'conv1', 'relu1', 'conv2',
                     'relu2', 'conv3', 'relu3', 'skipped_relu',
                     'relu_skipped']
    # forced gates: the masker still runs (global pool of x, linear)
    assert by['masker'].ms == pytest.approx(pool_latency(
        hw, 'masker', 4, 256, (56, 56), (1, 1), 56 * 56).ms)
    static2 = {o.name: o for o in resnet_latency.static_block_ops(p, g, 2)}
    for k in ('conv1', 'relu1', 'conv2', 'relu2', 'conv3'):
        assert by[k].ms == pytest.approx(static2[k].ms)
    for k in ('relu3', 'relu_skipped'):  # 2 rows each
        assert by[k].ms == pytest.approx(elementwise_latency(
            hw, k, 2 * out_e, 1, 1).ms)
    # the forced gate (one copy), the count (tolist), bookkeeping (gt,
    # nonzero, ...), a ReLU per skipped row
    assert _launch_count(p, ops) == pytest.approx(1 + 1 + 10 + 2)
    full = [o.name for o in resnet_latency.layer_block_ops(p, g, 4, 1.)]
    assert full == ['masker', 'masker_fc', 'gate', 'downsample',
                    'gate_count'] + \
        [o.name for o in resnet_latency.static_block_ops(p, g, 4)]
    names, by = _by_name(resnet_latency.layer_block_ops(p, g, 4, 0.))
    assert names == ['masker', 'masker_fc', 'gate', 'downsample',
                     'gate_count', 'bookkeeping', 'skipped_relu',
                     'relu_skipped']
    ts = [sum(o.ms for o in resnet_latency.layer_block_ops(p, g, 4, n / 4))
          for n in range(5)]
    assert all(a < b for a, b in zip(ts, ts[1:])), ts
    # identity block (s1.b1): in a backbone nothing for the skipped rows;
    # alone, a copy of the input first and the skipped rows' ReLU
    gi = resnet_geometries(50, (224, 224), 'layer')[0][4]
    assert not gi.has_downsample
    names = _by_name(resnet_latency.layer_block_ops(p, gi, 4, 0.5))[0]
    assert names[4:] == ['bookkeeping', 'conv1', 'relu1', 'conv2', 'relu2',
                         'conv3', 'relu3']
    alone = LatencyPredictor(p.hw, implementation='eager', forced_gates=True,
                             owned_block_inputs=False)
    names, by = _by_name(resnet_latency.layer_block_ops(alone, gi, 4, 0.5))
    assert names[4:6] == ['bookkeeping', 'clone']
    assert names[-2:] == ['skipped_relu', 'relu_skipped']
    assert by['clone'].ms == pytest.approx(elementwise_latency(
        hw, 'clone', 4 * out_e, 1, 1).ms)


def test_eager_masker_pool_left_out_where_the_means_are_recorded():
    """On a CPU spec (the compiled epilogues record every ResNet block's
    output channel means) a layer or channel block's masker pools nothing
    but in the backbone's first block, whose input is the stem's;
    elsewhere every masker pools its input: no vector_width (no records),
    a channel block without the AVX-512 fused kernel (vector_width 8), a
    RegNetY block (its dynamic path records nothing)."""
    geoms = resnet_geometries(50, (224, 224), 'layer')[0]
    cgeoms = resnet_geometries(50, (224, 224), 'channel', (2, 2, 2, 2))[0]
    cpu = LatencyPredictor(get_hardware('cpu').replace(vector_width=16),
                           implementation='eager', forced_gates=True)
    plain = _eager()
    assert plain.hw.vector_width == 0
    for g, fn in ((geoms, resnet_latency.layer_block_ops),
                  (cgeoms, resnet_latency.channel_block_ops)):
        first, later = g[0], g[4]
        assert (first.stage, first.index) == (0, 0)
        for pred, blk, pooled in ((cpu, first, True), (cpu, later, False),
                                  (plain, later, True)):
            ops = fn(pred, blk, 8, 0.5)
            masker = [o for o in ops if o.name == 'masker']
            # layer: the pool is the 'masker' op; channel: fused into it
            pool = pool_latency(pred.hw, 'masker', 8, blk.in_channels,
                                blk.in_hw, (1, 1),
                                blk.in_hw[0] * blk.in_hw[1])
            if fn is resnet_latency.layer_block_ops:
                assert bool(masker) == pooled
            else:
                with_pool = masker[0].memory_ms >= pool.memory_ms
                assert with_pool == pooled
    avx2 = LatencyPredictor(get_hardware('cpu').replace(vector_width=8),
                            implementation='eager', forced_gates=True)
    assert resnet_latency.channel_block_ops(
        avx2, cgeoms[4], 8, 0.5)[0].memory_ms >= pool_latency(
            avx2.hw, 'masker', 8, cgeoms[4].in_channels, cgeoms[4].in_hw,
            (1, 1), cgeoms[4].in_hw[0] * cgeoms[4].in_hw[1]).memory_ms
    assert not any(o.name == 'masker' for o in resnet_latency.layer_block_ops(
        avx2, geoms[4], 8, 0.5))
    from laud_mm.models.regnet import regnety_geometries
    rg = regnety_geometries('regnety_400mf', (224, 224), 'channel',
                            (2, 2, 2, 2))[0][4]
    assert not masker_input_pooled(cpu, rg)


@pytest.mark.parametrize('vector_width', [16, 8])
def test_eager_spatial_logits_handed_on_by_dense_blocks(vector_width):
    """In a backbone on a CPU spec, a spatial block that computes densely
    (every patch on) adds, rectifies and computes its successor's masker
    logits in one pass, and that successor reads no tensor for them: at
    density 1 only the first block has the masker's logit pass and every
    block but the last ends with 'add_relu_logit'; at 0.5 nothing is
    handed on; a block priced alone, the same blocks at 1 without the
    next block's (half) density changing, and a spec without vectors
    (no compiled kernels) keep the logit pass. With 8-lane vectors (the
    gather path) the stride-1 blocks' conv1 loses the extra output."""
    geoms = resnet_geometries(50, (224, 224), 'spatial', (4, 4, 2, 1))[0]
    cpu = LatencyPredictor(
        get_hardware('cpu').replace(vector_width=vector_width),
        implementation='eager', forced_gates=True)

    def names(rep, j):
        return [o.name for o in rep.block_ops[j]]
    full = cpu.predict_backbone(geoms, [1.] * len(geoms), 8)
    half = cpu.predict_backbone(geoms, [.5] * len(geoms), 8)
    n = len(geoms)
    for j in range(n):
        logit_pass = {'mask_conv', 'mask_pool'} & set(names(full, j))
        assert bool(logit_pass) == (j == 0)
        assert names(full, j)[-1] == ('add_relu_logit' if j < n - 1
                                      else 'relu3')
        assert 'mask_pool' in names(half, j)
        assert 'add_relu_logit' not in names(half, j)
    if vector_width == 8:  # conv1 with the logit as an extra output
        c1 = [o for o in cpu.block_ops(geoms[1], 8, 1.) if o.name == 'conv1']
        c1r = [o for o in full.block_ops[1] if o.name == 'conv1']
        assert c1[0].macs > c1r[0].macs
    # block 2 at 1 after block 1 at 0.5: block 1 hands nothing on
    mixed = cpu.predict_backbone(geoms, [1., .5] + [1.] * (n - 2), 8)
    assert 'mask_pool' in names(mixed, 2)
    assert names(mixed, 0)[-1] == 'add_relu_logit'
    assert 'mask_pool' in [o.name for o in cpu.block_ops(geoms[3], 8, 1.)]
    plain = _eager().predict_backbone(geoms, [1.] * n, 8)
    assert all('mask_pool' in names(plain, j) and
               'add_relu_logit' not in names(plain, j) for j in range(n))
    assert cpu.neighbour(-1) is None  # only while a backbone is priced
    # blocks run outside a backbone's context know no successor
    alone = LatencyPredictor(
        get_hardware('cpu').replace(vector_width=vector_width),
        implementation='eager', forced_gates=True, owned_block_inputs=False)
    rep = alone.predict_backbone(geoms, [1.] * n, 8)
    assert not any('add_relu_logit' in names(rep, j) for j in range(n))


def test_channel_kept_padded():
    """k of ``ops.channel_kept_lists``: the largest per-sample kept count
    padded up to CHANNEL_PAD = 8 (s1.b0, width 128, G = 2: 64 groups)."""
    g = resnet_geometries(50, (224, 224), 'channel', (2,) * 4)[0][3]
    assert channel_kept_padded(g, 2, 0.25) == 32   # 16 groups, 32 channels
    assert channel_kept_padded(g, 2, 0.1) == 16    # 6 groups, 12 -> 16
    assert channel_kept_padded(g, 2, 0.) == 0
    assert channel_kept_padded(g, 2, 1.) == 128
    # free gates: the expected largest of 4 binomial counts, 16 + 1.029 x
    # sqrt(64 x 0.25 x 0.75) = 19.6 -> 20 groups = 40 channels
    assert channel_kept_padded(g, 4, 0.25, forced_gates=False) == 40
    assert channel_kept_padded(g, 1, 0.25, forced_gates=False) == 32


def test_eager_channel_kernels():
    """s1.b0 (C_in 256, width 128, C_out 512, 56 -> 28 px), G = 2, batch 2,
    a quarter of the groups kept: k = 32 channels per sample; conv1 one
    batched GEMM (2 x (32 x 256) @ (256 x 3136)), conv2 one grouped conv
    (2 groups of 32), conv3 one batched GEMM accumulated into the
    shortcut (reading it), then bn3's shift and the ReLU; an identity block
    timed alone (not owning its input) copies it first (s3.b1 below)."""
    p = _eager()
    hw = p.hw
    g = resnet_geometries(50, (224, 224), 'channel', (2,) * 4)[0][3]
    k = 32
    ops = resnet_latency.channel_block_ops(p, g, 2, 0.25)
    names, by = _by_name(ops)
    assert names == ['masker', 'masker_steps', 'gate', 'downsample',
                     'kept_lists', 'bookkeeping', 'w1_gather', 'bias1',
                     'conv1', 'relu1', 'w2_gather', 'conv2', 'relu2',
                     'w3_gather', 'conv3', 'conv3_acc', 'bias3', 'relu3']
    assert by['conv1'].macs == 2 * k * 256 * 56 * 56
    assert by['conv2'].macs == 2 * k * k * 9 * 28 * 28
    assert by['conv3'].macs == 2 * 512 * k * 28 * 28
    assert by['w1_gather'].onchip_bytes == 2 * (2 * k * 256) * 4
    assert by['conv3_acc'].ms == pytest.approx(elementwise_latency(
        hw, 'conv3_acc', 2 * 512 * 28 * 28, 1, 0).ms)
    assert by['relu3'].ms == pytest.approx(elementwise_latency(
        hw, 'relu3', 2 * 512 * 28 * 28, 1, 1).ms)
    # forced gates: the masker still runs (pool + MLP, one op)
    assert by['masker'].ms == pytest.approx(
        channel_masker_op(p, g, 2).ms)
    assert _launch_count(p, ops) == pytest.approx(1 + 1 + 24)
    full = [o.name for o in resnet_latency.channel_block_ops(p, g, 2, 1.)]
    assert full == ['masker', 'masker_steps', 'gate', 'downsample',
                    'kept_lists'] + \
        [o.name for o in resnet_latency.static_block_ops(p, g, 2)]
    # 7 x 7 maps (s3.b1, width 512, C_in = C_out = 2048): the same
    # per-sample kernels up to CHANNEL_DENSE_RATE (0.7) of the groups
    g3 = resnet_geometries(50, (224, 224), 'channel', (2,) * 4)[0][14]
    for d in (0.25, 0.5):
        names, by = _by_name(resnet_latency.channel_block_ops(p, g3, 2, d))
        assert names[3:] == ['kept_lists', 'bookkeeping',
                             'w1_gather', 'bias1', 'conv1', 'relu1',
                             'w2_gather', 'conv2', 'relu2', 'w3_gather',
                             'conv3', 'conv3_acc', 'bias3', 'relu3']
    # timed alone (not owning its input) the identity block copies it first
    alone = LatencyPredictor('cpu', implementation='eager',
                             spatial_dense_threshold=0.6, forced_gates=True,
                             owned_block_inputs=False)
    names = [o.name for o in resnet_latency.channel_block_ops(alone, g3, 2, d)]
    assert names[-5:] == ['clone', 'conv3', 'conv3_acc', 'bias3', 'relu3']
    assert by['conv1'].macs == 2 * 256 * 2048 * 49  # k = 256 at d = 0.5
    # ... and above it masked dense
    names, by = _by_name(resnet_latency.channel_block_ops(p, g3, 2, 0.75))
    assert names[3:] == ['kept_lists', 'mask_prep',
                         'conv1', 'relu1', 'mask1', 'conv2', 'relu2', 'mask2',
                         'conv3', 'add', 'relu3']
    static = {o.name: o for o in resnet_latency.static_block_ops(p, g3, 2)}
    for c in ('conv1', 'conv2', 'conv3'):
        assert by[c].ms == pytest.approx(static[c].ms)


def test_eager_spatial_kernels():
    """s3.b1 (7 x 7 output, width 512), S = 4: a 2 x 2 patch grid with
    partial edge patches. At batch 2 with half the patches kept, 4 patches
    run whole (4 x 4 outputs) on 6 x 6 conv1 windows: conv1 dense, the
    gather kernel, conv2 (valid) on the windows, ReLU, conv3 as one GEMM
    over the 64 patch pixels (under 16 patches: transposes in and out, bias
    written first) and one scatter-add + ReLU pass over the output; from 16
    patches on (batch 16) conv3 is the 1x1 convolution of the patches."""
    p = _eager()
    hw = p.hw
    geoms = resnet_geometries(50, (224, 224), 'spatial', (4,) * 4)[0]
    g = geoms[14]
    ops = resnet_latency.spatial_block_ops(p, g, 2, 0.5)
    names, by = _by_name(ops)
    assert names == ['mask_pool', 'mask_steps', 'gate', 'gate_count',
                     'conv1', 'bookkeeping', 'gather', 'conv2', 'relu2',
                     'h_transpose', 'bias3', 'conv3', 'y_transpose',
                     'scatter_add_relu']
    assert by['conv2'].macs == 4 * 16 * 512 * 512 * 9
    assert by['conv3'].macs == 4 * 16 * 512 * 2048
    assert by['conv3'].ms == pytest.approx(conv_latency(hw, ConvOp(
        1., 512, 2048, 64, 1, 64, 1, 1, 1, name='conv3')).ms)
    assert by['y_transpose'].ms == pytest.approx(elementwise_latency(
        hw, 'y_transpose', 64 * 2048, 1, 1).ms)
    # conv1 with the masker's logit as an extra output (forced gates too)
    assert by['conv1'].ms == pytest.approx(conv_latency(hw, ConvOp(
        2., g.in_channels, g.width + 1, *g.in_hw, *g.in_hw, 1, 1,
        name='conv1')).ms)
    assert by['gather'].ms == pytest.approx(elementwise_latency(
        hw, 'gather', 4 * 512 * 36, 1, 1, run_elems=6.,
        contiguous_reads=1).ms)
    assert by['scatter_add_relu'].ms == pytest.approx(elementwise_latency(
        hw, 'scatter_add_relu', 2 * 2048 * 49, 1.5, 1).ms)
    assert _launch_count(p, ops) == pytest.approx(2 + 2 + 10)
    names, by = _by_name(resnet_latency.spatial_block_ops(p, g, 16, 0.5))  # 32 patches
    assert names[-3:] == ['relu2', 'conv3', 'scatter_add_relu']
    assert by['conv3'].ms == pytest.approx(conv_latency(hw, ConvOp(
        32., 512, 2048, 4, 4, 4, 4, 1, 1, name='conv3')).ms)
    # from the threshold (0.6 of the patches) on: dense block times the mask
    names = [o.name for o in resnet_latency.spatial_block_ops(p, g, 2, 0.75)]
    assert names == ['mask_pool', 'mask_steps', 'gate', 'gate_count',
                     'conv1', 'relu1', 'conv2', 'relu2', 'conv3', 'slice',
                     'expand_mask', 'mask_mul', 'add', 'relu3']
    assert [o.name for o in resnet_latency.spatial_block_ops(p, g, 2, 0.)] == \
        ['mask_pool', 'mask_steps', 'gate', 'gate_count', 'relu']
    # S = 1 (7 x 7 map, 98 pixels, 20 % kept): conv2 and conv3 as GEMMs
    # over the gathered pixels (conv2's K = 9 x 512 im2col rows)
    g1 = resnet_geometries(50, (224, 224), 'spatial', (1,) * 4)[0]
    ops = resnet_latency.spatial_block_ops(p, g1[14], 2, 0.2)
    names, by = _by_name(ops)
    assert names[6:] == ['gather', 'bias2', 'conv2', 'relu2', 'bias3',
                         'conv3', 'scatter_add_relu']
    rows = 2 * 49 * 0.2
    assert by['conv2'].macs == pytest.approx(rows * 512 * 9 * 512)
    assert by['conv3'].macs == pytest.approx(rows * 512 * 2048)


def test_eager_fused_kernels_at_any_batch():
    """A CPU spec with 16-lane vectors (AVX-512): the fused spatial and
    channel kernels are modelled at batch 1 on 2 PEs (they split the
    batch's pixels over the threads; a GEMM's tiles over the PEs here, so
    2 PEs run the fused spatial GEMMs faster than 1); with every patch
    active the spatial path is the dense block after the masker
    (SPATIAL_FUSED_DENSE_THRESHOLD = 1)."""
    spec = get_hardware('cpu').replace(vector_width=16)
    assert spec.num_pe == 2
    p = LatencyPredictor(spec, implementation='eager',
                         spatial_dense_threshold=0.8, forced_gates=True)
    g = resnet_geometries(50, (224, 224), 'spatial', (4, 4, 2, 1))[0][1]
    names, by = _by_name(resnet_latency.spatial_block_ops(p, g, 1, 0.5))
    assert names == ['mask_conv', 'mask_pool', 'mask_steps',
                     'gate_count', 'bookkeeping', 'conv1', 'conv2', 'conv3',
                     'add_relu3']
    one = LatencyPredictor(spec.replace(num_pe=1), implementation='eager',
                           spatial_dense_threshold=0.8, forced_gates=True)
    by1 = _by_name(resnet_latency.spatial_block_ops(one, g, 1, 0.5))[1]
    for k in ('conv1', 'conv2', 'conv3'):
        assert by[k].ms < 0.8 * by1[k].ms, k
    names = [o.name for o in resnet_latency.spatial_block_ops(p, g, 1, 1.)]
    assert names == ['mask_conv', 'mask_pool', 'mask_steps',
                     'gate_count', 'conv1', 'relu1', 'conv2', 'relu2',
                     'conv3', 'add', 'relu3']
    gc = resnet_geometries(50, (224, 224), 'channel', (2,) * 4)[0][1]
    names = [o.name for o in resnet_latency.channel_block_ops(p, gc, 1, 0.5)]
    assert names[-7:] == ['w2_panels', 'w1_src', 'w2_src', 'conv1',
                          'conv2', 'conv3', 'add_relu3']
    assert 'w1_panels' in names
    # each sample's gathers read its source rows' span on chip: every
    # column of all C_in rows of w1, of the 9 k kept rows of w2
    by = _by_name(resnet_latency.channel_block_ops(p, gc, 2, 0.5))[1]
    k = channel_kept_padded(gc, 2, 0.5, True)
    for name, rows in (('w1_src', gc.in_channels), ('w2_src', 9 * k)):
        assert by[name].onchip_bytes == pytest.approx(
            2 * rows * (gc.width + 1) * 4), name
    # with a sample per thread, the phases the kernel runs row-blocked
    # write no panels up front: conv1 on 14 x 14 inputs (R50 stage 3 and
    # block 3.0), conv2 / conv3 on 14 x 14 and 7 x 7 outputs (stages 3 and
    # 4); conv1 of the stride-2 block 2.0 (28 x 28 input) up front; batch
    # 1 on 2 threads gathers them up front on 14 x 14 outputs and splits
    # columns, every phase row-blocked, on 7 x 7 outputs
    geoms = resnet_geometries(50, (224, 224), 'channel', (2,) * 4)[0]
    up_front = ['w1_panels', 'w2_panels']
    for i, hw_in, panels, one in ((7, 784, ['w1_panels'], up_front),
                                  (8, 196, [], up_front), (13, 196, [], []),
                                  (14, 49, [], [])):
        assert geoms[i].in_hw[0] * geoms[i].in_hw[1] == hw_in, i
        for batch, want in ((2, panels), (1, one)):
            names = [o.name for o in resnet_latency.channel_block_ops(
                p, geoms[i], batch, 0.5)]
            assert [n for n in names if n.endswith('_panels')] == want, \
                (i, batch)
            # the row-blocked phases' gathers: the same writes, block by
            # block
            assert [n for n in names if n.endswith('_blocks')] == [
                w for w in ('w1_blocks', 'w2_blocks')
                if w.replace('_blocks', '_panels') not in want], (i, batch)
    # host calls of the fused kernel: 6, and with a parallel region's cost
    # (region_us) one region per phase on 2 threads (batch 2: conv1, conv2
    # - conv3; batch 1, column split: conv1, conv2, conv3; batch 1 on
    # stage 3: up-front gathers, conv1, conv2 - conv3), none on one PE; on
    # a CPU spec the masker's MLP
    # and decision are its one compiled call (ops.masker_gate: no relu /
    # view calls, no region), on a GPU spec its operators (relu, view; the
    # decision's 4 calls unless forced)
    pr = LatencyPredictor(spec.replace(region_us=40.), implementation='eager',
                          forced_gates=True)
    for batch, phases in ((1, 3), (2, 2)):
        for q in (p, pr):
            by = _by_name(resnet_latency.channel_block_ops(
                q, geoms[14], batch, 0.5))[1]
            assert by['bookkeeping'].ms == pytest.approx(
                launch_latency(spec, 'b', 6).ms), batch
            # the forced gate is copied into the call's gate (the 'gate'
            # call): no step of its own
            assert by['masker_steps'].ms == 0.
        assert 'phases' not in _by_name(resnet_latency.channel_block_ops(
            p, geoms[14], batch, 0.5))[1]
        assert by['phases'].ms == pytest.approx(phases * 0.040), batch
        # the kernel's passes open no region of their own
        for k in ('w1_rows', 'conv1', 'conv3', 'add_relu3'):
            assert by[k].launch_ms == pytest.approx(spec.launch_us * 1e-3), k
        # the weight rows come from DRAM (cold in a forward) although
        # w1t (4.2 MB) would fit in the last-level cache; the panels it
        # writes stay on chip
        w1 = geoms[14].in_channels * (geoms[14].width + 1) * 4
        llc = LatencyPredictor(spec.replace(llc_mb=32.),
                               implementation='eager', forced_gates=True)
        rows = _by_name(resnet_latency.channel_block_ops(
            llc, geoms[14], batch, 0.5))[1]['w1_rows']
        assert w1 < 32e6 and rows.memory_ms == pytest.approx(
            w1 / spec.bandwidth * 1e3)
    by = _by_name(resnet_latency.channel_block_ops(pr, geoms[8], 1, 0.5))[1]
    assert by['phases'].ms == pytest.approx(3 * 0.040)
    assert by['w1_panels'].launch_ms == pytest.approx(spec.launch_us * 1e-3)
    one = LatencyPredictor(spec.replace(num_pe=1, region_us=40.),
                           implementation='eager', forced_gates=True)
    names, by = _by_name(resnet_latency.channel_block_ops(one, geoms[14], 2,
                                                          0.5))
    assert by['bookkeeping'].ms == pytest.approx(
        launch_latency(one.hw, 'b', 6).ms)
    assert 'phases' not in names
    # the fused spatial kernel's regions: its plan (more than 16 input
    # rows), conv1, conv2 - conv3, and a last ReLU written into a
    # downsample's output
    gs = resnet_geometries(50, (224, 224), 'spatial', (2,) * 4)[0]
    for i, batch, phases in ((1, 1, 3), (3, 1, 4), (14, 2, 2), (14, 4, 3)):
        by = _by_name(resnet_latency.spatial_block_ops(pr, gs[i], batch,
                                                       0.5))[1]
        assert by['phases'].ms == pytest.approx(phases * 0.040), (i, batch)
        assert by['conv2'].launch_ms == pytest.approx(spec.launch_us * 1e-3)
    gpu = get_hardware('h200')
    for forced, gate_calls in ((True, 1), (False, 4)):
        q = LatencyPredictor(gpu, implementation='eager',
                             forced_gates=forced)
        by = _by_name(resnet_latency.channel_block_ops(q, geoms[14], 2,
                                                       0.5))[1]
        assert by['masker_steps'].ms == pytest.approx(
            launch_latency(gpu, 'm', 2).ms)
        assert by['gate'].ms == pytest.approx(
            launch_latency(gpu, 'g', gate_calls).ms)
    layer_g = resnet_geometries(50, (224, 224), 'layer')[0][14]
    for forced, gate_calls in ((True, 1), (False, 0)):
        q = LatencyPredictor(spec, implementation='eager',
                             forced_gates=forced)
        for ops_ in (resnet_latency.channel_block_ops(q, geoms[14], 2, 0.5),
                     resnet_latency.layer_block_ops(q, layer_g, 2, 0.5)):
            assert _by_name(ops_)[1]['gate'].ms == pytest.approx(
                launch_latency(spec, 'g', gate_calls).ms), forced
        assert _by_name(resnet_latency.channel_block_ops(
            q, geoms[14], 2, 0.5))[1]['masker_steps'].ms == 0., forced
    # every gate on (layer, channel): the static block whose add, ReLU and
    # channel means for the next masker are one pass (ops.add_relu_mean_)
    gl = resnet_geometries(50, (224, 224), 'layer')[0][1]
    for ops_ in (resnet_latency.channel_block_ops(p, gc, 2, 1.),
                 resnet_latency.layer_block_ops(p, gl, 2, 1.)):
        names, by = _by_name(ops_)
        assert names[-6:] == ['conv1', 'relu1', 'conv2', 'relu2', 'conv3',
                              'add_relu3']
        assert by['add_relu3'].ms == pytest.approx(elementwise_latency(
            spec, 'add_relu3', 2 * 256 * 56 * 56, 2, 1).ms)


def test_calibration_spec_models_its_thread_count(monkeypatch, tmp_path):
    """calibrate_hardware --threads N writes a spec of N PEs (cpu<N>_calib;
    the compute rate per PE from the N-thread convolutions) and bounds the
    on-chip factor (a noisy bandwidth slope gave 2.7e5 under load); the
    validation refuses a spec of another thread count, naming both."""
    from laud_mm.analysis.validation import validate_predictor
    from laud_mm.latency import calibration
    prev = torch.get_num_threads()
    monkeypatch.setattr(calibration, 'microbench', lambda dev, layout: dict(
        launch_us=5., launch_add_us=4., launch_conv_us=6.,
        bandwidth_gbs=2., cache_gbs=5e5, macs=1e11, conv_rates=[1e11],
        weight_reorder_gbs=8., region_us=30.))
    try:
        spec = calibration.calibrate_hardware(
            threads=2, out=str(tmp_path / 'cpu2.yaml'))
    finally:
        torch.set_num_threads(prev)
    assert spec.name == 'cpu2_calib' and spec.num_pe == 2
    assert spec.region_us == 30.
    assert spec.l2_factor == calibration.L2_FACTOR_MAX
    assert spec.fp32_per_pe == pytest.approx(
        1e11 / (2 * spec.clock_mhz * 1e6))
    assert get_hardware(str(tmp_path / 'cpu2.yaml')) == spec
    with pytest.raises(ValueError, match=r'num_pe=2 threads but '
                       r'--threads=1'):
        validate_predictor(hardware=str(tmp_path / 'cpu2.yaml'), threads=1,
                           out_dir=str(tmp_path / 'v'))
    torch.set_num_threads(prev)


def test_eager_spatial_window_conv1_kernels():
    """Stride-2 spatial block s1.b0 (56 x 56 input, S = 4, 9 x 9 windows):
    with few patches conv1 runs on the gathered input windows (the model of
    ``window_conv1``: input gather, conv1 on P windows, ReLU), with many
    the dense conv1 precedes the window gather; the masker runs on its own
    (a one-channel conv of the input, pooled), forced gates included."""
    from laud_mm.ops import policy as dynamic
    p = _eager()
    hw = p.hw
    g = resnet_geometries(50, (224, 224), 'spatial', (4, 4, 2, 1))[0][3]
    assert g.stride == 2 and g.in_hw == (56, 56)
    # batch 2, 7 x 7 grid: 10 % of the 98 patches -> 9.8 expected patches
    names, by = _by_name(resnet_latency.spatial_block_ops(p, g, 2, 0.1))
    assert names[:8] == ['mask_conv', 'mask_pool', 'mask_steps',
                         'gate_count', 'bookkeeping', 'gather_x', 'conv1',
                         'relu1']
    assert 'gather' not in names
    assert by['conv1'].macs == pytest.approx(9.8 * 81 * 256 * 128)
    assert by['gather_x'].ms == pytest.approx(elementwise_latency(
        hw, 'gather_x', 9.8 * 256 * 81, 1, 1, run_elems=9.,
        contiguous_reads=1).ms, rel=0.02)
    # the windows of half the patches cover more than the threshold: dense
    cover = 0.5 * 98 * 81 / (2 * 56 * 56)
    assert cover > dynamic.SPATIAL_WINDOW_CONV1_MAX_FRACTION
    names, by = _by_name(resnet_latency.spatial_block_ops(p, g, 2, 0.5))
    assert names[5:7] == ['conv1', 'gather'] and 'gather_x' not in names
    assert by['conv1'].ms == pytest.approx(resnet_latency.static_block_ops(p, g, 2)[0].ms)
    free = LatencyPredictor(p.hw, implementation='eager',
                            spatial_dense_threshold=0.8)
    names = [o.name for o in resnet_latency.spatial_block_ops(free, g, 2, 0.1)]
    assert names[:4] == ['mask_conv', 'mask_pool', 'mask_steps',
                         'gate_count']


def test_time_fn_clock():
    """The calibration and validation timer: thread CPU time for one CPU
    thread."""
    from laud_mm.latency.calibration import select_clock, time_fn
    cpu = torch.device('cpu')
    assert time_fn(lambda: sum(range(100)), cpu, min_time=1e-3,
                   clock='cpu') > 0
    assert select_clock(cpu, 'wall') is time.perf_counter
    with pytest.raises(ValueError, match="clock='gpu'"):
        select_clock(cpu, 'gpu')


def test_time_fn_before_runs_untimed_before_every_call():
    """time_fn's ``before`` runs before every timed call and is not
    counted: a 5 ms ``before`` around a call of microseconds; each call is
    then timed alone, min_calls of them or min_time's worth, at most
    MAX_CALLS_BEFORE (the warm-up calls have no ``before``)."""
    from laud_mm.latency.calibration import MAX_CALLS_BEFORE, time_fn
    cpu = torch.device('cpu')
    log = []

    def before():
        log.append('before')
        time.sleep(5e-3)
    t = time_fn(lambda: log.append('call'), cpu, min_time=10.,
                clock='wall', before=before, warmup=1)
    assert t < 2.5e-3
    assert log[0] == 'call'  # the warm-up call has no `before`
    timed = log[1:]
    assert timed == ['before', 'call'] * MAX_CALLS_BEFORE
    log.clear()
    time_fn(lambda: log.append('call'), cpu, min_time=1e-9, clock='wall',
            before=lambda: log.append('before'), warmup=0, min_calls=3)
    assert log == ['before', 'call'] * 3
    log.clear()
    time_fn(lambda: log.append('call'), cpu, min_time=1e-9, clock='wall',
            before=lambda: log.append('before'), warmup=0, min_calls=99)
    assert log == ['before', 'call'] * MAX_CALLS_BEFORE


def test_cache_evictor_reads_twice_the_llc(monkeypatch):
    """cache_evictor reads (sums) a buffer of twice the last-level cache,
    at least 64 MB; a negative size or a device other than the CPU is
    refused, naming it; cold_start evicts, runs the twin block, then reads
    the inputs."""
    from laud_mm.latency import calibration
    cpu = torch.device('cpu')
    assert float(calibration.cache_evictor(cpu, llc_mb=1.)()) == 16e6
    assert float(calibration.cache_evictor(cpu, llc_mb=33.)()) == 16.5e6
    monkeypatch.setattr(calibration, 'cpu_llc_mb', lambda: 33.5)
    assert float(calibration.cache_evictor(cpu)()) == 16.75e6
    with pytest.raises(ValueError, match='llc_mb must be >= 0, got -1'):
        calibration.cache_evictor(cpu, llc_mb=-1.)
    with pytest.raises(ValueError, match='CPU caches; got device meta'):
        calibration.cache_evictor(torch.device('meta'))
    # timed as inside a forward on a CPU only, unless warm_caches
    assert calibration.block_evictor(cpu, warm_caches=True) is None
    assert calibration.block_evictor(torch.device('meta')) is None
    assert float(calibration.block_evictor(cpu)()) >= 16e6
    order = []

    class Seen(torch.Tensor):
        def sum(self, *a, **k):
            order.append('input')
            return super().sum(*a, **k)
    x = torch.ones(3).as_subclass(Seen)
    calibration.cold_start(lambda: order.append('evict'),
                           lambda: order.append('twin'), x, x)
    assert order == ['evict', 'twin', 'input', 'input']
    order.clear()
    calibration.cold_start(lambda: order.append('evict'), None, x)
    assert order == ['evict', 'input']


def test_validation_times_every_block_from_cold_caches(monkeypatch):
    """measure_cases times every block case as inside a forward: a
    ``before`` (cold_start) that evicts the caches, runs the block's twin
    (another module, no storage shared with the block, the same forced
    gate: its output equals the block's; run for every 7th case, every
    paradigm) and reads the input; the whole backbones back to back; with
    warm_caches nothing, and no eviction buffer is made."""
    from laud_mm.analysis import validation
    from laud_mm.latency import calibration
    made, seen, evicted, twins = [], [], [], []

    def evictor(device):
        made.append(device)
        return lambda: evicted.append(1)

    def fake_time_fn(fn, device, before=None, **kw):
        seen.append((before, fn))
        if before is not None and len(seen) % 7 == 0:
            before()
            twin = before.args[1]
            assert twin.args[0] is not fn.args[0]
            assert not {p.data_ptr() for p in twin.args[0].parameters()} \
                & {p.data_ptr() for p in fn.args[0].parameters()}
            twins.append((fn(), twin()))
        return 1e-3
    monkeypatch.setattr(calibration, 'cache_evictor', evictor)
    monkeypatch.setattr(validation, 'time_fn', fake_time_fn)
    cases = validation.measure_cases(torch.device('cpu'), quick=True,
                                     repeats=1)
    assert len(made) == 1 and len(seen) == len(cases) > 100
    for c, (b, fn) in zip(cases, seen):
        assert (b is None) == (c['kind'] == 'backbone')
        if b is not None:  # (evict, twin's call, the block's input)
            x, x2 = fn.args[1], b.args[1].args[1]
            assert b.func is calibration.cold_start and b.args[2] is x
            assert x2 is not x and torch.equal(x2, x)
    assert len(evicted) == len(twins) > 30
    assert all(c['measured_ms'] == 1. for c in cases)
    for out, twin_out in twins:
        out = out[0] if isinstance(out, tuple) else out
        twin_out = twin_out[0] if isinstance(twin_out, tuple) else twin_out
        torch.testing.assert_close(twin_out, out, rtol=1e-5, atol=1e-5)
    made.clear()
    seen.clear()
    validation.measure_cases(torch.device('cpu'), quick=True, repeats=1,
                             backbone=False, warm_caches=True)
    assert made == [] and {b for b, _ in seen} == {None}
    # --layout channels_last: every block's and backbone's input in it
    seen.clear()
    validation.measure_cases(torch.device('cpu'), quick=True, repeats=1,
                             warm_caches=True, layout='channels_last')
    assert all(fn.args[1].is_contiguous(memory_format=torch.channels_last)
               for _, fn in seen)
    assert {fn.func for _, fn in seen} >= {validation.backbone_forward}


def test_calibration_fit_times_static_blocks_as_inside_a_forward(
        monkeypatch, tmp_path):
    """calibrate_hardware --fit times each static block after cold_start
    with a twin block of its own weights and the block's input, in the same
    rounds as the dynamic path's blocks and the transformer kernels
    (time_cases: every case once a round, CALIB_ROUNDS rounds, the median
    kept), then fits the static blocks' medians and hands the dynamic
    blocks' medians to dynamic_path_terms, the transformer kernels' to
    transformer_terms; --warm-caches: back to back."""
    from laud_mm.latency import calibration
    prev = torch.get_num_threads()
    monkeypatch.setattr(calibration, 'microbench', lambda dev, layout: dict(
        launch_us=5., launch_add_us=4., launch_conv_us=6.,
        bandwidth_gbs=2., cache_gbs=5., macs=1e11, conv_rates=[1e11],
        weight_reorder_gbs=8., region_us=30.))
    fitted = []
    monkeypatch.setattr(calibration, 'fit_spec',
                        lambda spec, samples: fitted.append(samples) or spec)
    monkeypatch.setattr(calibration, 'cache_evictor',
                        lambda dev: lambda: None)
    dyn = dict(name='empty', fn=lambda: None, before=None)
    monkeypatch.setattr(calibration, 'dynamic_path_cases',
                        lambda spec, dev, warm_caches, layout: [dyn])
    terms = []
    monkeypatch.setattr(calibration, 'dynamic_path_terms',
                        lambda spec, dev, clock, warm_caches, cases=None,
                        times=None, layout='NCHW': terms.append(
                            (warm_caches, cases, times, layout)) or spec)
    tf = []
    monkeypatch.setattr(calibration, 'transformer_terms',
                        lambda spec, dev, clock, times: tf.append(
                            times) or spec)
    seen = []

    def fake_time_fn(fn, device, before=None, **kw):
        seen.append((fn, before))
        return 1e-3 * len(seen)  # every call another time
    monkeypatch.setattr(calibration, 'time_fn', fake_time_fn)
    rounds = calibration.CALIB_ROUNDS
    try:
        calibration.calibrate_hardware(threads=1, fit=True,
                                       out=str(tmp_path / 'a.yaml'))
        # static blocks, the dynamic path's, the transformer kernels (a
        # Linear, two attentions, an encoder layer)
        n = 16 + 1 + 4
        assert len(seen) == n * rounds
        # round after round over all the cases, in the same order
        for r in range(1, rounds):
            assert [f for f, _ in seen[r * n:(r + 1) * n]] == \
                [f for f, _ in seen[:n]]
        # case i's times are 1e-3 (i + 1 + k n): the median is round 2's
        samples = fitted[0]
        assert [t for _, _, t in samples] == pytest.approx(
            [(i + 1 + (rounds // 2) * n) for i in range(16)])
        assert terms[0][1] == [dyn] and terms[0][3] == 'NCHW'
        assert terms[0][2] == pytest.approx(
            [1e-3 * (n - 4 + (rounds // 2) * n)])
        assert tf == [pytest.approx([1e-3 * (i + (rounds // 2) * n)
                                     for i in (n - 3, n - 2, n - 1, n)])]
        assert {b for _, b in seen[n - 4:n]} == {None}  # back to back
        fn, before = seen[0]
        assert before.func is calibration.cold_start
        twin, x = before.args[1], before.args[2]
        assert x is fn.input and twin is not fn
        assert twin.input is not x and twin.input.shape == x.shape
        assert twin().shape == fn().shape
        seen.clear()
        calibration.calibrate_hardware(threads=1, fit=True, warm_caches=True,
                                       out=str(tmp_path / 'b.yaml'))
        assert {b for _, b in seen} == {None}
        assert [t[0] for t in terms] == [False, True]
        # --layout channels_last: every static block's input (and its
        # twin's) in that format, the dynamic path's terms too
        seen.clear()
        calibration.calibrate_hardware(threads=1, fit=True,
                                       layout='channels_last',
                                       out=str(tmp_path / 'c.yaml'))
        cl = torch.channels_last
        static_calls = seen[:16]
        assert all(f.input.is_contiguous(memory_format=cl) and
                   b.args[2].is_contiguous(memory_format=cl)
                   for f, b in static_calls)
        assert terms[-1][3] == 'channels_last'
        with pytest.raises(ValueError, match='--layout'):
            calibration.calibrate_hardware(threads=1, layout='NHWC',
                                           out=str(tmp_path / 'd.yaml'))
    finally:
        torch.set_num_threads(prev)


def test_time_cases_rounds_and_median(monkeypatch):
    """time_cases: ``rounds`` rounds over all cases, each case's call to
    time_fn asks for ``calls`` timed calls (after its ``before``; without
    one, a share of CALIB_MIN_TIME of calls back to back) and its warm-up
    only in the first round, the median over the rounds is kept; bad
    counts raise."""
    from laud_mm.latency import calibration
    log = []
    times = iter([5., 1., 3., 2., 4., 9.])  # a, b; a, b; a, b

    def fake_time_fn(fn, device, min_time, min_calls, warmup, clock,
                     before):
        log.append((fn, before, min_calls, warmup, min_time))
        return next(times)
    monkeypatch.setattr(calibration, 'time_fn', fake_time_fn)
    a, b, hook = object(), object(), object()
    out = calibration.time_cases([(a, hook), (b, None)], torch.device('cpu'),
                                 rounds=3, calls=4)
    assert out == [4., 2.]  # medians of (5, 3, 4) and (1, 2, 9)
    assert [(f, h) for f, h, _, _, _ in log] == [(a, hook), (b, None)] * 3
    assert {c for _, _, c, _, _ in log} == {4}
    assert [w for _, _, _, w, _ in log] == [2, 2, 0, 0, 0, 0]
    # after a `before`: exactly `calls` calls; back to back: a time budget
    assert [t for _, _, _, _, t in log] == pytest.approx(
        [0., calibration.CALIB_MIN_TIME / 3] * 3)
    with pytest.raises(ValueError, match='rounds=0'):
        calibration.time_cases([(a, None)], torch.device('cpu'), rounds=0)
    with pytest.raises(ValueError, match='calls=0'):
        calibration.time_cases([(a, None)], torch.device('cpu'), calls=0)


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
    from laud_mm.models.resnet.backbone import LAUDResNet
    m = LAUDResNet(50, paradigm='spatial', granularity=(4, 4, 2, 1))
    ours, stem = resnet_geometries(50, (193, 257), 'spatial', (4, 4, 2, 1))
    assert m.block_geometries((193, 257)) == ours
    assert m.stem_geometry((193, 257)).out_hw == stem.out_hw


def test_weight_reorder_term():
    """A CPU spec charges oneDNN's per-call weight reorder (read + write of
    the weights at weight_reorder_gbs) to direct convolutions (3x3; 1x1 from
    16 images on) whose weights reach weight_reorder_min_mb; not to MKL
    GEMMs (1x1 under 16 images, per-sample batched GEMMs) nor to weights
    that stay in cache."""
    from laud_mm.latency.operators import reorders_weights
    base = get_hardware('cpu').replace(max_tile_batch=1)
    spec = base.replace(weight_reorder_gbs=10., weight_reorder_min_mb=4.)

    def extra(op):
        conv_latency.cache_clear()
        return conv_latency(spec, op).ms - conv_latency(base, op).ms

    big3 = ConvOp(1., 512, 512, 7, 7, 7, 7, 3, 1, name='c')  # 9.44 MB
    assert reorders_weights(big3)
    assert extra(big3) == pytest.approx(2 * 512 * 512 * 9 * 4 / 10e9 * 1e3)
    small3 = ConvOp(1., 256, 256, 14, 14, 14, 14, 3, 1, name='c')  # 2.4 MB
    assert extra(small3) == pytest.approx(0.)
    gemm = ConvOp(8., 2048, 512, 7, 7, 7, 7, 1, 1, name='c')  # 4.2 MB
    assert not reorders_weights(gemm) and extra(gemm) == pytest.approx(0.)
    big1 = ConvOp(16., 2048, 512, 7, 7, 7, 7, 1, 1, name='c')
    assert reorders_weights(big1)
    assert extra(big1) == pytest.approx(2 * 2048 * 512 * 4 / 10e9 * 1e3)
    per_sample = ConvOp(16., 2048, 512, 7, 7, 7, 7, 1, 1, name='c',
                        per_sample_channels=True)
    assert not reorders_weights(per_sample)
    # a token Linear (F.linear: MKL) at 16 images: no reorder, its memory
    # term the off-chip traffic alone (the library GEMMs' roofline)
    lin = ConvOp(16., 1024, 4096, 1, 197, 1, 197, 1, 1, name='fc1',
                 blas_gemm=True)
    assert not reorders_weights(lin) and extra(lin) == pytest.approx(0.)
    conv_latency.cache_clear()
    o = conv_latency(spec, lin)
    assert o.memory_ms == pytest.approx(
        o.offchip_bytes / spec.bandwidth * 1e3)
    assert get_hardware('v100').weight_reorder_gbs == 0  # GPUs: never
    with pytest.raises(ValueError, match='weight_reorder_gbs=-1'):
        base.replace(weight_reorder_gbs=-1)


def test_vector_width_and_llc_terms():
    """vector_width: an MKL GEMM over the pixels of a 7 x 7 map costs
    ceil(49 / 16) * 16 = 64 pixels of compute (not the oneDNN convs, not
    the GEMMs over gathered rows); llc_mb: a streaming kernel whose bytes
    fit in the last-level cache runs at the on-chip bandwidth only."""
    base = get_hardware('cpu').replace(max_tile_batch=1)
    vec = base.replace(vector_width=16)
    conv_latency.cache_clear()
    gemm7 = ConvOp(2., 2048, 512, 7, 7, 7, 7, 1, 1, name='c')
    a, b = conv_latency(base, gemm7), conv_latency(vec, gemm7)
    assert b.compute_ms == pytest.approx(a.compute_ms * 64 / 49)
    assert b.memory_ms == pytest.approx(a.memory_ms)
    gemm56 = ConvOp(2., 256, 64, 56, 56, 56, 56, 1, 1, name='c')  # 3136 px
    assert conv_latency(vec, gemm56).ms == pytest.approx(
        conv_latency(base, gemm56).ms)
    for op in (ConvOp(2., 512, 512, 7, 7, 7, 7, 3, 1, name='c'),  # oneDNN
               ConvOp(1., 4608, 512, 5, 1, 5, 1, 1, 1, name='c')):  # rows
        assert conv_latency(vec, op).ms == pytest.approx(
            conv_latency(base, op).ms)
    llc = base.replace(llc_mb=8.)
    small = elementwise_latency(llc, 'add', 1e5, 2, 1)  # 1.2 MB moved
    assert small.memory_ms == pytest.approx(1.2e6 / llc.l2_bandwidth * 1e3)
    big = elementwise_latency(llc, 'add', 1e6, 2, 1)  # 12 MB: DRAM
    assert big.ms == pytest.approx(elementwise_latency(base, 'add', 1e6, 2,
                                                       1).ms)
    with pytest.raises(ValueError, match='vector_width=1.5'):
        base.replace(vector_width=1.5)
    with pytest.raises(ValueError, match='llc_mb=-2'):
        base.replace(llc_mb=-2)


def test_validation_bias_table_signs_per_density_band():
    """validate_predictor's bias table: the blocks' mean signed error per
    (paradigm, S/G) and density band, so that a model error of one sign in
    a band is told from noise; backbones are left out."""
    from laud_mm.analysis.validation import bias_table
    cases = [dict(kind='block', paradigm='spatial', granularity=4,
                  density=d, measured_ms=10.) for d in (0., 0.1, 0.5, 0.7, 1.)]
    cases += [dict(kind='block', paradigm='static', granularity=None,
                   density=None, measured_ms=4.),
              dict(kind='backbone', paradigm='spatial', granularity='4-4-2-1',
                   density=0.5, measured_ms=100.)]
    preds = [5., 11., 12., 14., 10., 5., 500.]
    rows = {ln.split(' | ')[0].strip('| '): ln for ln in
            bias_table(cases, preds).splitlines() if ln.startswith('| s')}
    assert rows['spatial'] == ('| spatial | 4 |  | -50.0 (1) | +10.0 (1) | '
                               '+30.0 (2) | +0.0 (1) |')
    assert rows['static'].startswith('| static | - | +25.0 (1) |')
    assert len(rows) == 2  # the backbone case is not a block
    with pytest.raises(ValueError, match=r'density=-0.1 is outside'):
        bias_table([dict(cases[0], density=-0.1)], [1.])


def test_host_call_and_fused_gemm_terms():
    """HardwareSpec.host_call_us prices the eager path's bookkeeping calls
    (launch_us where it is 0, the paper's GPU specs); fused_gemm_speed
    divides the compute time of the fused CPU kernels' GEMMs only: the
    fused spatial / channel blocks get faster, their dense fallbacks, the
    static block and library convolutions do not."""
    from laud_mm.latency.operators import launch_latency
    cpu = get_hardware('cpu').replace(vector_width=16)
    assert cpu.host_call_us == 0 and cpu.fused_gemm_speed == 1
    assert launch_latency(cpu, 'b', 10).ms == pytest.approx(
        10 * cpu.launch_us * 1e-3)
    assert launch_latency(cpu.replace(host_call_us=20.), 'b', 10).ms == \
        pytest.approx(0.2)
    fast = cpu.replace(fused_gemm_speed=2.)
    conv_latency.cache_clear()
    op = ConvOp(1., 2304, 256, 98, 1, 98, 1, 1, 1, per_sample_channels=True,
                name='conv2')
    fop = dataclasses.replace(op, fused_gemm=True)
    assert conv_latency(fast, fop).compute_ms == pytest.approx(
        conv_latency(cpu, fop).compute_ms / 2)
    assert conv_latency(fast, op) == conv_latency(cpu, op)
    p1 = LatencyPredictor(cpu, implementation='eager', forced_gates=True)
    p2 = LatencyPredictor(fast, implementation='eager', forced_gates=True)
    for par, gran in (('spatial', 2), ('channel', 2)):
        g = resnet_geometries(50, (224, 224), par, (gran,) * 4)[0][8]
        a = {o.name: o for o in p1.block_ops(g, 1, 0.5)}
        b = {o.name: o for o in p2.block_ops(g, 1, 0.5)}
        for k in ('conv1', 'conv2', 'conv3'):  # a's tile at half compute
            assert b[k].ms <= a[k].ms - a[k].compute_ms / 2 + 1e-9, k
        assert b['add_relu3'] == a['add_relu3']
        assert p2.block_ops(g, 1, 1.) == p1.block_ops(g, 1, 1.)  # dense
    g = resnet_geometries(50, (224, 224))[0][8]
    assert p2.predict_static([g], 1).total_ms == \
        p1.predict_static([g], 1).total_ms
    with pytest.raises(ValueError, match='host_call_us=-1'):
        cpu.replace(host_call_us=-1)
    with pytest.raises(ValueError, match='fused_gemm_speed=0'):
        cpu.replace(fused_gemm_speed=0)


def test_validation_fit_recovers_host_and_fused_terms():
    """fit_on_cases recovers a spec from cases it predicted itself: the
    fused GEMM speed and host call cost are identifiable from dynamic
    blocks at several densities (Nelder-Mead stalled at a speed of 1.0)."""
    from laud_mm.analysis.validation import (fit_on_cases, metrics,
                                             predict_cases)
    # this machine's calibrated terms (docs/latency_predictor.md)
    base = get_hardware('cpu').replace(
        vector_width=16, weight_reorder_gbs=8., bandwidth_gbs=70.,
        l2_factor=3., launch_us=2., clock_mhz=2600.)
    true = base.replace(host_call_us=15., fused_gemm_speed=1.5,
                        fp32_per_pe=13.)
    cases = [dict(kind='block', j=j, paradigm=par, granularity=gran,
                  batch=b, density=d)
             for j in (8,) for b in (1, 2)
             for par, gran in (('spatial', 2), ('channel', 2))
             for d in (0., 0.4, 0.7)]
    # static blocks at two batch sizes pin the library rate (fp32_per_pe)
    # apart from the fused kernels' speed
    cases += [dict(kind='block', j=j, paradigm='static', granularity=None,
                   batch=b, density=None) for j in (1, 8, 14)
              for b in (1, 2)]
    for c, m in zip(cases, predict_cases(cases, true)):
        c['measured_ms'] = m
    idx = list(range(len(cases)))
    fitted = fit_on_cases(base, cases, idx)
    mape, _ = metrics([c['measured_ms'] for c in cases],
                      predict_cases(cases, fitted))
    assert mape < 2.
    assert fitted.fused_gemm_speed == pytest.approx(1.5, rel=0.1)
    assert fitted.host_call_us == pytest.approx(15., rel=0.1)
    assert fitted.launch_us == base.launch_us  # stays measured
    # the transformer kernels' absolute rates stay as calibrated
    tf = base.replace(gemm_speed=1.5, attention_speed=0.8,
                      token_stream_gbs=9.)
    fitted = fit_on_cases(tf, cases, idx)
    for key in ('gemm_speed', 'attention_speed'):
        assert getattr(fitted, key) * fitted.fp32_per_pe == pytest.approx(
            getattr(tf, key) * tf.fp32_per_pe)
    assert fitted.fp32_per_pe != tf.fp32_per_pe
    assert fitted.token_stream_gbs == 9.  # an absolute rate: kept


def test_token_stream_term():
    """HardwareSpec.token_stream_gbs prices the streaming kernels over
    token activations (and only those) at bytes / rate + launch and
    region; 0 keeps the streaming model. A T2T-ViT's prediction rises at
    a low rate, a ResNet's and a RegNetY's do not move. Calibration
    inverts it: given the times a spec predicts for its cases (the token
    Linear, the attentions, the encoder layer), transformer_terms returns
    that spec's three terms. A negative rate is refused by name."""
    from laud_mm.latency.blocks.t2t_vit import (LAYER_STREAM_OPS,
                                                fused_attention_op,
                                                linear_tokens_latency,
                                                token_stream_latency,
                                                transformer_ops)
    from laud_mm.latency.calibration import (ATTENTION_CALIB_SHAPES,
                                             GEMM_CALIB_LINEAR,
                                             STREAM_CALIB_LAYER,
                                             transformer_terms)
    from laud_mm.latency.operators import elementwise_latency
    from laud_mm.models import regnety_geometries
    from laud_mm.models.t2t_vit import t2t_vit_geometries
    cpu = get_hardware('cpu').replace(vector_width=16, llc_mb=32.)
    slow = cpu.replace(token_stream_gbs=5.)
    assert token_stream_latency(cpu, 'ln1', 6e5, 1, 1, 5.) == \
        elementwise_latency(cpu, 'ln1', 6e5, 1, 1, ops_per_elem=5.)
    a = token_stream_latency(slow, 'add1', 6e5, 2, 1)
    assert a.offchip_bytes == 6e5 * 3 * 4 and a.compute_ms == 0.
    assert a.ms == pytest.approx(a.offchip_bytes / 5e9 * 1e3 + a.launch_ms)
    assert a.launch_ms == elementwise_latency(cpu, 'add1', 6e5).launch_ms
    # a layer: only the streaming kernels change
    la, lb = (transformer_ops(h, 8, 197, 384, 384, 6, 64, 1152, eager=True,
                              fused_attention=True) for h in (cpu, slow))
    for x, y in zip(la, lb):
        assert (x == y) != (x.name in LAYER_STREAM_OPS), x.name
    g, s = t2t_vit_geometries('t2t-vit-t-14', (224, 224), 'spatial')
    pa, pb = (LatencyPredictor(h, implementation='eager')
              for h in (cpu, slow))
    assert pb.predict_backbone(g, [0.5] * 14, 8, s).total_ms > \
        1.05 * pa.predict_backbone(g, [0.5] * 14, 8, s).total_ms
    for geoms, stem in (resnet_geometries(50, (224, 224), 'spatial',
                                          (4, 4, 2, 1)),
                        regnety_geometries('regnety_400mf', (224, 224),
                                           'channel', (2, 2, 2, 2))):
        assert pb.predict_backbone(geoms, [0.5] * len(geoms), 8,
                                   stem).total_ms == \
            pa.predict_backbone(geoms, [0.5] * len(geoms), 8, stem).total_ms
    with pytest.raises(ValueError, match='token_stream_gbs=-1'):
        cpu.replace(token_stream_gbs=-1.)
    # calibration inverts the model: a spec's own predictions give back
    # its terms
    true = cpu.replace(gemm_speed=1.3, attention_speed=0.9,
                       token_stream_gbs=8.)
    n, t, cin, cout = GEMM_CALIB_LINEAR
    times = [linear_tokens_latency(true, 'gemm', n, t, cin, cout).ms]
    times += [fused_attention_op(true, b * h, t, dh)[0].ms
              for b, h, t, dh in ATTENTION_CALIB_SHAPES]
    n, t, d, heads, ffn = STREAM_CALIB_LAYER
    times.append(sum(o.ms for o in transformer_ops(
        true, n, t, d, d, heads, d // heads, ffn, eager=True,
        fused_attention=True)))
    out = transformer_terms(cpu, torch.device('cpu'), verbose=False,
                            times=[m / 1e3 for m in times])
    for key in ('gemm_speed', 'attention_speed', 'token_stream_gbs'):
        assert getattr(out, key) == pytest.approx(getattr(true, key),
                                                  rel=0.02), key
    # a layer that leaves its streaming kernels less time than the
    # on-chip bandwidth needs says nothing of them: the term is kept
    ops = transformer_ops(out, n, t, d, d, heads, d // heads, ffn,
                          eager=True, fused_attention=True)
    times[-1] = sum(o.launch_ms if o.name in LAYER_STREAM_OPS else o.ms
                    for o in ops) + 1e-4
    kept = transformer_terms(cpu, torch.device('cpu'), verbose=False,
                             times=[m / 1e3 for m in times])
    assert kept.token_stream_gbs == 0. and \
        kept.gemm_speed == pytest.approx(out.gemm_speed)
    # the eager T2T module: the token-major image split on a CPU spec,
    # im2col and its transposing copy on a GPU's
    from laud_mm.latency.blocks.t2t_vit import t2t_stem_ops
    names = {}
    for name in ('v100', 'cpu_calibrated'):
        hw = get_hardware('v100') if name == 'v100' else \
            cpu.replace(max_tile_batch=1)
        names[name] = [o.name for o in t2t_stem_ops(
            LatencyPredictor(hw, implementation='eager'), s, 8)]
    assert 'pad0' in names['cpu_calibrated'] and \
        'soft_split0_rows' not in names['cpu_calibrated']
    assert 'pad0' not in names['v100'] and 'soft_split0_rows' in names['v100']
    for n_ in names.values():
        assert {'to_map1', 'to_map2', 'soft_split1_rows',
                'soft_split2_rows'} <= set(n_)


def test_transformer_kernel_terms():
    """HardwareSpec.gemm_speed divides the compute time of the library
    GEMMs over token rows only (ConvOp.blas_gemm: the transformer layers'
    Linear layers, per-sample head GEMMs included), which cost the larger
    of compute and off-chip memory (a roofline); attention_speed divides
    the fused attention's compute only: a T2T-ViT's prediction falls with
    either, a ResNet's does not; calibration measures both on real calls
    here, changing nothing else, and keeps a term where the measured time
    leaves no room for the modelled compute."""
    from laud_mm.latency.blocks.t2t_vit import (fused_attention_op,
                                                linear_tokens_latency)
    from laud_mm.latency.calibration import (ATTENTION_CALIB_SHAPES,
                                             transformer_terms)
    from laud_mm.models.t2t_vit import t2t_vit_geometries
    cpu = get_hardware('cpu').replace(vector_width=16)
    fast = cpu.replace(gemm_speed=2.)
    assert cpu.gemm_speed == 1 and cpu.attention_speed == 1
    a = linear_tokens_latency(cpu, 'fc1', 8, 197, 384, 1152)
    b = linear_tokens_latency(fast, 'fc1', 8, 197, 384, 1152)
    # a roofline: the larger of compute and memory, plus the launch
    assert a.ms == pytest.approx(max(a.compute_ms, a.memory_ms) +
                                 a.launch_ms)
    assert a.memory_ms == pytest.approx(
        4 * (8 * 197 * (384 + 1152) + 384 * 1152) / cpu.bandwidth * 1e3)

    def halved(o):  # o's tile at twice the rate
        return max(o.compute_ms / 2, o.memory_ms) + o.launch_ms
    # the best tile at twice the rate is at most a's tile at half compute
    assert b.ms <= halved(a) + 1e-9 and a.macs == b.macs == \
        8 * 197 * 384 * 1152
    heads = dict(per_sample_channels=True, cout_std=64.)
    a = linear_tokens_latency(cpu, 'qkv', 8, 197, 384, 576, **heads)
    assert linear_tokens_latency(fast, 'qkv', 8, 197, 384, 576,
                                 **heads).ms <= halved(a) + 1e-9
    # memory bound (64 -> 64): every tile whose compute fits under the
    # memory time ties; the reported tile is the one of least compute, so
    # the compute scales with the rate
    lo = [linear_tokens_latency(cpu.replace(gemm_speed=s), 'fc', 8, 197,
                                64, 64) for s in (4., 16.)]
    assert lo[0].memory_ms > lo[0].compute_ms
    assert lo[1].compute_ms == pytest.approx(lo[0].compute_ms / 4)
    assert lo[1].ms == pytest.approx(lo[0].ms)
    assert fused_attention_op(fast, 48, 197, 64) == \
        fused_attention_op(cpu, 48, 197, 64)
    att, att2 = (fused_attention_op(h, 48, 197, 64)[0] for h in (
        cpu, cpu.replace(attention_speed=2.)))
    assert att2.compute_ms == pytest.approx(att.compute_ms / 2) and \
        att2.memory_ms == att.memory_ms
    g, s = t2t_vit_geometries('t2t-vit-t-14', (224, 224), 'layer')
    gr = resnet_geometries(50, (224, 224))[0]
    pa = LatencyPredictor(cpu, implementation='eager')
    for hw in (fast, cpu.replace(attention_speed=2.)):
        pb = LatencyPredictor(hw, implementation='eager')
        assert pb.predict_backbone(g, [0.5] * 14, 8, s).total_ms < \
            0.95 * pa.predict_backbone(g, [0.5] * 14, 8, s).total_ms
        assert pb.predict_static(gr, 1).total_ms == \
            pa.predict_static(gr, 1).total_ms
    for key in ('gemm_speed', 'attention_speed'):
        with pytest.raises(ValueError, match=f'{key}=0'):
            cpu.replace(**{key: 0})
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        spec = cpu.replace(num_pe=1, clock_mhz=2600.)
        out = transformer_terms(spec, torch.device('cpu'), verbose=False)
    finally:
        torch.set_num_threads(prev)
    assert out.replace(gemm_speed=1., attention_speed=1.,
                       token_stream_gbs=0.) == spec
    # measured, not defaulted: within the 10x a fit would allow either
    # way (this CPU's sgemm and fused attention against the placeholder
    # spec's 16 MAC/cycle at 2.6 GHz), the Linear compute bound
    assert 0.1 < out.gemm_speed < 10 and out.gemm_speed != 1.
    assert 0.1 < out.attention_speed < 10 and out.attention_speed != 1.
    lin = linear_tokens_latency(out, 'fc1', 8, 197, 384, 1152)
    assert lin.compute_ms > lin.memory_ms
    # an encoder layer run as a forward runs it leaves time for its
    # streaming kernels: a bandwidth between a slow DRAM's and a cache's
    assert 0.5 < out.token_stream_gbs < 1000.
    # 1 us a call leaves nothing for their compute
    n = 2 + len(ATTENTION_CALIB_SHAPES)
    assert transformer_terms(spec, torch.device('cpu'), verbose=False,
                             times=[1e-6] * n) == spec
    with pytest.raises(ValueError, match=f'{n} cases but times'):
        transformer_terms(spec, torch.device('cpu'), times=[1e-3])


def test_calibration_measures_dynamic_path_terms():
    """calibrate_hardware's dynamic-path terms, timed here on real blocks:
    an empty spatial block gives the host cost of a bookkeeping call, the
    half-on fused spatial / channel blocks the fused GEMM speed; the other
    terms are left as they were, and a GPU device leaves the spec as is."""
    from laud_mm.latency.calibration import dynamic_path_terms
    from laud_mm.ops import policy
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # about this machine's at 1 thread (calibrate_hardware measures
        # some 90 GB/s here); a lower bandwidth would model the empty
        # block's one pass over its input slower than the block runs
        spec = get_hardware('cpu').replace(
            num_pe=1, vector_width=16, bandwidth_gbs=90., l2_factor=3.,
            launch_us=2., clock_mhz=2600.)
        out = dynamic_path_terms(spec, torch.device('cpu'), verbose=False)
    finally:
        torch.set_num_threads(prev)
    assert out.host_call_us > 0
    assert dataclasses.replace(out, host_call_us=0., fused_gemm_speed=1.) \
        == spec
    if policy.fused_cpu_threads() and torch.backends.cpu \
            .get_cpu_capability().upper().startswith('AVX512'):
        assert out.fused_gemm_speed != 1.
    assert dynamic_path_terms(spec, torch.device('meta')) is spec
    with pytest.raises(ValueError, match='times given without cases'):
        dynamic_path_terms(spec, torch.device('cpu'), times=[1e-3])
    with pytest.raises(ValueError, match='1 cases but times'):
        dynamic_path_terms(spec, torch.device('cpu'), cases=[dict(
            name='empty')], times=[1e-3, 2e-3])
    with pytest.raises(ValueError, match=r"\['empty', 'spatial'\] need"):
        dynamic_path_terms(spec, torch.device('cpu'), cases=[
            dict(name='empty', g=None, d=0.), dict(name='spatial', g=None,
                                                   d=.5)],
            times=[1e-3, 2e-3])


def test_parallel_regions(monkeypatch):
    """HardwareSpec.region_us prices a parallel region over the PEs: every
    library convolution but a GEMV-sized linear layer, every ATen
    elementwise / pooling kernel over more than PARALLEL_GRAIN elements,
    and each phase of a fused kernel (region_ops), whose GEMMs and passes
    open none of their own; nothing with one PE or a cost of 0 (the GPU
    specs, this spec's default). fused_op keeps the largest launch of its
    parts. On a CPU spec the layer path relus its skipped rows in one
    compiled pass (no call per row)."""
    from laud_mm.latency.blocks.common import fused_op
    from laud_mm.ops import policy
    from laud_mm.latency.calibration import parallel_region_us
    from laud_mm.latency.operators import (PARALLEL_GRAIN, conv_op,
                                           linear_latency, region_ops)
    cpu = get_hardware('cpu').replace(vector_width=16)
    assert cpu.region_us == 0 and cpu.num_pe == 2
    r = cpu.replace(region_us=40.)
    one = r.replace(num_pe=1)
    base, region = cpu.launch_us * 1e-3, 0.040
    for hw, want in ((cpu, 0.), (r, region), (one, 0.)):
        assert elementwise_latency(hw, 'a', PARALLEL_GRAIN + 1, 1, 1) \
            .launch_ms == pytest.approx(base + want)
        assert elementwise_latency(hw, 'a', PARALLEL_GRAIN, 1, 1) \
            .launch_ms == pytest.approx(base)
        assert elementwise_latency(hw, 'a', 8, 1, 1, parallel=True) \
            .launch_ms == pytest.approx(base + want)
        assert elementwise_latency(hw, 'a', 1e7, 1, 1, parallel=False) \
            .launch_ms == pytest.approx(base)
        assert conv_op(hw, 'c', 1, 64, 64, (8, 8), (8, 8)).launch_ms == \
            pytest.approx(base + want)
        assert conv_op(hw, 'c', 1, 64, 64, (8, 8), (8, 8), fused_gemm=True) \
            .launch_ms == pytest.approx(base)
        # a GEMV runs on the calling thread, a GEMM of 8 rows does not
        assert linear_latency(hw, 'fc', 1, 2048, 128).launch_ms == \
            pytest.approx(base)
        assert linear_latency(hw, 'fc', 8, 2048, 128).launch_ms == \
            pytest.approx(base + want)
        assert linear_latency(hw, 'fc', 8, 2048, 128, parallel=False) \
            .launch_ms == pytest.approx(base)
        assert pool_latency(hw, 'p', 1, 256, (56, 56), (1, 1), 56 * 56) \
            .launch_ms == pytest.approx(base + want)
        ops = region_ops(hw, 'phases', 3)
        assert [o.ms for o in ops] == ([pytest.approx(3 * want)] if want
                                       else [])
    parts = [elementwise_latency(r, 'a', 1e6, 1, 1),
             elementwise_latency(r, 'b', 1e6, 1, 1)]
    f = fused_op(r, 'f', parts)
    assert f.launch_ms == pytest.approx(base + region)
    assert f.ms == pytest.approx(sum(o.ms for o in parts) - base - region)
    with pytest.raises(ValueError, match='region_us=-1'):
        cpu.replace(region_us=-1)
    with pytest.raises(ValueError, match='n=-1'):
        region_ops(r, 'phases', -1)
    # the compiled maskers (ops.masker_gate) decide on the calling thread
    pr = LatencyPredictor(r, implementation='eager', forced_gates=True)
    gc = resnet_geometries(50, (224, 224), 'channel', (2,) * 4)[0][5]
    gl = resnet_geometries(50, (224, 224), 'layer')[0][5]
    by = _by_name(resnet_latency.channel_block_ops(pr, gc, 2, 0.5))[1]
    assert by['masker'].launch_ms == pytest.approx(base)
    names, by = _by_name(resnet_latency.layer_block_ops(pr, gl, 4, 0.5))
    assert by['masker_fc'].launch_ms == pytest.approx(base)
    # the layer path on the fused spatial kernel (policy.LAYER_FUSED_CPU,
    # a 16-lane spec): its three regions (plan, conv1, conv2 - conv3 with
    # the add); the GEMMs and the add run inside them, and the add's
    # epilogue sums the kept rows for their means (no pass of its own)
    assert policy.LAYER_FUSED_CPU
    assert by['phases'].launch_ms == pytest.approx(3 * region)
    for k in ('conv1', 'conv2', 'conv3', 'add_relu3'):
        assert by[k].launch_ms == pytest.approx(base), k
    assert not {'relu1', 'relu2', 'relu3', 'mean_rows'} & set(names)
    # off it, the GEMM kernel (ops.sample_gemm) keeps conv1's ReLU and
    # conv3's bias / ReLU / sums pass inside its one region
    monkeypatch.setattr(policy, 'LAYER_FUSED_CPU', False)
    names, by = _by_name(resnet_latency.layer_block_ops(pr, gl, 4, 0.5))
    assert 'relu1' not in names and 'phases' not in names
    assert by['relu3'].launch_ms == pytest.approx(base)
    assert by['conv3'].launch_ms == pytest.approx(base + region)
    monkeypatch.undo()
    # the layer path, every sample skipped, the input not owned: a copy of
    # it and one ReLU pass (with the means) over the skipped rows
    g = resnet_geometries(50, (224, 224), 'layer')[0][1]
    alone = LatencyPredictor(r, implementation='eager', forced_gates=True,
                             owned_block_inputs=False)
    names, by = _by_name(resnet_latency.layer_block_ops(alone, g, 2, 0.))
    assert 'skipped_relu' not in names
    assert by['relu_skipped'].launch_ms == pytest.approx(base + region)
    gpu = LatencyPredictor(get_hardware('h200'), implementation='eager',
                           forced_gates=True, owned_block_inputs=False)
    assert 'skipped_relu' in _by_name(
        resnet_latency.layer_block_ops(gpu, g, 2, 0.))[0]
    # measured only with several threads on a CPU
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert parallel_region_us(torch.device('cpu')) == 0.
    finally:
        torch.set_num_threads(prev)
    assert parallel_region_us(torch.device('meta')) == 0.
    # with N threads: the N-thread time less the one-thread time's share
    # per thread, of an add of a grain per thread
    from laud_mm.latency import calibration
    sizes = []

    def fake_time_fn(fn, device, clock='auto', **kw):
        assert clock == 'wall'
        fn()
        return 50e-6 if torch.get_num_threads() == 2 else 20e-6
    real_add = torch.add

    def add(a, b, out=None):
        sizes.append(a.numel())
        return real_add(a, b, out=out)
    torch.set_num_threads(2)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(calibration, 'time_fn', fake_time_fn)
            mp.setattr(torch, 'add', add)
            assert calibration.parallel_region_us(torch.device('cpu')) == \
                pytest.approx(40.)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(prev)
    assert sizes == [2 * PARALLEL_GRAIN] * 2


def test_cold_streaming_reads_come_from_dram():
    """elementwise_latency(cold=True): bytes that would fit in the
    last-level cache are priced at the off-chip bandwidth (weights, last
    read a forward earlier); without it at the on-chip one."""
    cpu = get_hardware('cpu').replace(llc_mb=32., l2_factor=4.)
    n = 1e6  # 4 MB, read once
    warm = elementwise_latency(cpu, 'w', n, 1, 0, parallel=False)
    cold = elementwise_latency(cpu, 'w', n, 1, 0, parallel=False, cold=True)
    assert warm.memory_ms == pytest.approx(4e6 / cpu.l2_bandwidth * 1e3)
    assert cold.memory_ms == pytest.approx(4e6 / cpu.bandwidth * 1e3)
    big = 1e8  # 400 MB: from DRAM either way
    assert elementwise_latency(cpu, 'w', big, 1, 0, cold=True).ms == \
        pytest.approx(elementwise_latency(cpu, 'w', big, 1, 0).ms)


def test_scattered_runs_share_transactions():
    """elementwise_latency's ``density``: randomly placed runs of a
    scattered tensor share the transactions they touch, so the bytes moved
    grow as 1 - (1 - d)^k of the whole tensor (k = 1 / efficiency), from a
    lone run's (d -> 0) to the dense tensor once (d = 1); the fused spatial
    kernel's add at S = 1 (runs of one pixel) moves at most the whole map
    where a lone run's cost would have moved 6.4 times it at d = 0.4."""
    cpu = get_hardware('cpu').replace(vector_width=16, transaction_bytes=64)
    n = 1e6  # elements of the whole tensor
    lone = elementwise_latency(cpu, 'a', 1e-4 * n, 2, 1, run_elems=1.)
    tiny = elementwise_latency(cpu, 'a', 1e-4 * n, 2, 1, run_elems=1.,
                               density=1e-4)
    assert tiny.offchip_bytes == pytest.approx(lone.offchip_bytes, rel=1e-3)
    full = elementwise_latency(cpu, 'a', n, 2, 1, run_elems=1., density=1.)
    assert full.offchip_bytes == pytest.approx(3 * n * 4)
    prev = 0.
    for d in (0.05, 0.2, 0.4, 0.7, 0.99):
        o = elementwise_latency(cpu, 'a', d * n, 2, 1, run_elems=1.,
                                density=d)
        k = 64 / 4  # a 4-byte run moves one 64-byte transaction
        assert o.offchip_bytes == pytest.approx(3 * n * 4 * (1 - (1 - d) ** k))
        assert prev < o.offchip_bytes <= 3 * n * 4 + 1e-6
        prev = o.offchip_bytes
    for bad in (0., 1.5, -0.1):
        with pytest.raises(ValueError, match=f'density={bad}'):
            elementwise_latency(cpu, 'a', n, 2, 1, run_elems=1., density=bad)
    with pytest.raises(ValueError, match='needs run_elems'):
        elementwise_latency(cpu, 'a', n, 2, 1, density=0.5)
    p = LatencyPredictor(get_hardware('cpu').replace(vector_width=16),
                         implementation='eager', forced_gates=True)
    g = resnet_geometries(50, (224, 224), 'spatial', (1,) * 4)[0][1]
    by = _by_name(resnet_latency.spatial_block_ops(p, g, 2, 0.4))[1]
    map_bytes = 2 * 256 * 56 * 56 * 4
    assert by['add_relu3'].offchip_bytes <= 3 * map_bytes
    assert by['add_relu3'].offchip_bytes > 2.9 * map_bytes


def test_auto_layout_follows_the_backbones_dynamic_format(monkeypatch):
    """--layout auto is the format a LAUD-ResNet's dynamic_memory_format
    gives on this machine (channels_last where the fused kernels run), and
    NCHW with the policy switch off; unknown names are refused by name."""
    from laud_mm import LAUDResNet
    from laud_mm.latency import calibration
    from laud_mm.ops import policy
    net = LAUDResNet(50, paradigm='spatial', granularity=(4, 4, 2, 1),
                     dynamic_inference=True).eval()
    x = torch.zeros(1, 3, 64, 64)
    assert calibration.check_layout('auto') == net.dynamic_memory_format(x)
    monkeypatch.setattr(policy, 'CHANNELS_LAST_CPU', False)
    assert calibration.auto_layout() == 'NCHW'
    assert calibration.check_layout('auto') == torch.contiguous_format
    with pytest.raises(ValueError, match="--layout='NHWC'"):
        calibration.check_layout('NHWC')
    # the names the tables print, one per format; another is refused
    from laud_mm.models.layers.backbone import STATIC_LAYOUTS, layout_name
    assert {layout_name(f): k for k, f in STATIC_LAYOUTS.items()} == \
        {k: k for k in STATIC_LAYOUTS}
    with pytest.raises(ValueError, match='is not one of'):
        layout_name(torch.preserve_format)
    # both tools take the same option (a spec and its validation time the
    # same path)
    import importlib.util
    import os.path as osp
    from conftest import ROOT
    for tool in ('calibrate_hardware', 'validate_predictor'):
        spec = importlib.util.spec_from_file_location(
            f'laud_{tool}', osp.join(ROOT, 'tools', 'analysis_tools',
                                     f'{tool}.py'))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        # validate_predictor resolves an unset layout itself (NCHW, or the
        # layout of the results it re-predicts with --reuse)
        assert mod.parse_args([]).layout == (
            'NCHW' if tool == 'calibrate_hardware' else None)
        assert mod.parse_args(['--layout', 'auto']).layout == 'auto'
        with pytest.raises(SystemExit):
            mod.parse_args(['--layout', 'NHWC'])
