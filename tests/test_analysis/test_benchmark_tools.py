"""The benchmarks of :mod:`laud_mm.analysis` (behind
``tools/analysis_tools/benchmark_*.py``): the gate forcing imposes the
paper's FLOPs-based per-block activation rate r_i (docs/method.md sec. 2),
the RegNetY benchmark shares the ResNet benchmark's machinery, and the
kernel micro-benchmarks compare equal results.

Source: paper sec. 3.4 and 4 (benchmarks at a uniform activation rate r in
every block)."""
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from laud_mm.analysis import kernels
from laud_mm.analysis.benchmark import common, regnet, resnet
from laud_mm.analysis.benchmark.spatial_steps import spatial_breakdown
from laud_mm.analysis.forced_gates import force_random_gates
from laud_mm import ops
from laud_mm.models import LAUDResNet

from conftest import ROOT


@pytest.mark.parametrize('paradigm', ['spatial', 'channel', 'layer'])
def test_flops_rate_forcing_matches_block_statistics(paradigm):
    """After forcing rate r, a real dynamic forward records per-block FLOPs
    rates r_i whose mean is the returned realised rate, close to r; the
    density mode keeps round(r * gates)."""
    torch.manual_seed(0)
    net = LAUDResNet(50, paradigm=paradigm,
                     granularity=common.PARADIGMS[paradigm],
                     dynamic_inference=True).eval()
    n, hw = 4, (96, 96)
    x = torch.randn(n, 3, *hw)
    real = force_random_gates(net, 0.5, n, hw, seed=1)
    with torch.no_grad():
        common.dynamic_forward(net, x)
    r_i = [float(b.last_stats['flops'].mean()) / b.last_stats['dense']
           for b in net.blocks]
    assert abs(sum(r_i) / len(r_i) - real) < 1e-6
    assert abs(real - 0.5) < 0.1
    ratio = common.backbone_flops_ratio(net, hw)
    assert 0.4 < ratio < 0.65  # the dense stem keeps it above 0.5
    force_random_gates(net, 0.5, n, hw, seed=1, mode='density')
    with torch.no_grad():
        common.dynamic_forward(net, x)
    dens = [float(b.last_stats['density'].float().mean()) for b in net.blocks]
    assert all(abs(d - 0.5) <= 0.13 for d in dens), dens
    with pytest.raises(ValueError, match='mode'):
        force_random_gates(net, 0.5, n, hw, 1, mode='x')


def test_layer_rate_forcing_small_batch():
    """Batch 1 (detection input): (block, sample) gates are switched on
    until the blocks' FLOPs reach the rate."""
    torch.manual_seed(0)
    net = LAUDResNet(50, paradigm='layer', dynamic_inference=True).eval()
    real = force_random_gates(net, 0.3, 1, (64, 64), 2)
    gates = torch.stack([b.masker.forced_gate for b in net.blocks])
    assert 0 < float(gates.sum()) < len(net.blocks) and 0.15 < real < 0.45


def test_regnet_benchmark_runs_and_checks_exactness():
    """Every row at each --threads count (one table), wall-clock speedup
    and CPU-time speedup beside it; torch's thread count restored."""
    prev = torch.get_num_threads()
    rows = regnet.benchmark_regnet(
        archs=['regnety_400mf'], paradigms=['channel'], rates=[0.5, 1.0],
        batch=2, size=64, repeats=1, warmup=0, threads=[1, 2])
    assert torch.get_num_threads() == prev
    assert [(r['threads'], r['rate']) for r in rows] == \
        [(1, 0.5), (1, 1.0), (2, 0.5), (2, 1.0)]
    rows = rows[:2]
    assert [r['rate'] for r in rows] == [0.5, 1.0]
    assert abs(rows[0]['rate_real'] - 0.5) < 0.15
    assert rows[1]['flops_ratio'] == pytest.approx(1.0)
    assert all(r['static_ms'] > 0 and r['dynamic_ms'] > 0 for r in rows)
    # the static baseline is the faster of its two timed memory formats
    for r in rows:
        assert set(r['static_layout_ms']) == {'NCHW', 'channels_last'}
        assert r['static_ms'] == min(r['static_layout_ms'].values()) == \
            r['static_layout_ms'][r['static_layout']]


def test_regnet_benchmark_det_input(monkeypatch):
    """--det adds the detection input after the square one, with its
    (H, W) in the rows and the table's input column (a small stand-in
    for 1 x 800 x 1216 here)."""
    monkeypatch.setattr(regnet, 'DET_INPUT', (1, (64, 96)))
    rows = regnet.benchmark_regnet(
        archs=['regnety_400mf'], paradigms=['layer'], rates=[0.5],
        batch=2, size=32, det=True, repeats=1, warmup=0, threads=[1])
    assert [(r['batch'], r['hw']) for r in rows] == [(2, [32, 32]),
                                                      (1, [64, 96])]
    assert regnet.fmt_row(rows[1]).startswith(
        '| regnety_400mf | 1x64x96 | layer | 1 | 0.50 |')
    assert all(r['static_ms'] > 0 and r['dynamic_ms'] > 0 for r in rows)


def test_table_columns_written_once():
    """The three backbone benchmarks build their tables from the shared
    columns: threads, then static / dynamic ms, speedup (wall) and speedup
    (CPU time) beside it; --threads lists default to 1 and every CPU."""
    import os
    from laud_mm.analysis.benchmark import t2t_vit
    for mod, timing in ((resnet, 'static ms | dynamic ms | speedup (wall) | '
                                 'speedup (CPU time)'),
                        (regnet, 'static ms | dynamic ms | speedup (wall) | '
                                 'speedup (CPU time)'),
                        (t2t_vit, 'static ms | dynamic ms | speedup (wall) | '
                                  'speedup (CPU time)')):
        head = mod.HEADER.split('\n')[0]
        assert '| threads |' in head and timing in head, mod.__name__
        assert mod.HEADER.split('\n')[1].count('---') == len(mod.COLUMNS)
    row = dict(depth=50, batch=8, hw=(224, 224), paradigm='spatial',
               threads=2, rate=0.5, rate_real=0.5, static_ms=400.,
               dynamic_ms=200., speedup=2., cpu_speedup=1.9,
               flops_ratio=0.5, static_layout='channels_last',
               static_layout_ms={'NCHW': 450., 'channels_last': 400.})
    assert resnet.fmt_row(row) == ('| R50 | 8x224x224 | spatial | 2 | 0.50 | '
                                   '0.500 | 400.0 | 200.0 | 2.00x | 1.90x | '
                                   'channels_last (450.0 / 400.0) | 2.00x |')
    for mod in (resnet, regnet):
        assert '| static layout (NCHW / channels_last ms) |' in mod.HEADER
    assert common.thread_counts(None) == sorted({1, os.cpu_count()})
    assert common.thread_counts(3) == [3]
    with pytest.raises(ValueError, match='--threads'):
        common.thread_counts([2, 0])


def test_t2t_benchmark_times_the_backbone_and_its_prediction(
        tmp_path, monkeypatch, capsys):
    """The T2T-ViT benchmark times the whole backbone a user runs,
    ``static_forward(x)`` against ``backbone(x)``, and puts the predictor's
    milliseconds beside them: a calibrated CPU spec at the benchmark's batch
    (eager kernels) on rows of the thread count the spec models, '-' on the
    others; the V100 at batch 128 by default; the error line is the MAPE
    of those milliseconds; an unknown --hardware, or a GPU's, is refused
    by name."""
    from laud_mm.analysis.benchmark import t2t_vit
    from laud_mm.latency import get_hardware, save_hardware
    from laud_mm.models import LAUDT2TViT
    calls = []
    for name in ('static_forward', 'forward'):
        orig = getattr(LAUDT2TViT, name)

        def spy(self, x, _orig=orig, _name=name):
            calls.append(_name)
            return _orig(self, x)
        monkeypatch.setattr(LAUDT2TViT, name, spy)
    spec = tmp_path / 'cpu1.yaml'  # as calibrate_hardware writes a CPU's
    save_hardware(get_hardware('cpu').replace(name='cpu1', num_pe=1,
                                              max_tile_batch=1), str(spec))
    pred, batch = t2t_vit.predictor(str(spec), 8)
    assert (pred.hw.num_pe, pred.eager, batch) == (1, True, 8)
    pred, batch = t2t_vit.predictor(None, 8)
    assert (pred.hw.name, pred.eager, batch) == ('v100', False, 128)
    with pytest.raises(ValueError, match='nosuchgpu'):
        t2t_vit.benchmark_t2t_vit(tiny=True, hardware='nosuchgpu')
    for name in ('tx2', 'cpu'):  # a GPU's, the placeholder's
        with pytest.raises(ValueError, match=rf"--hardware='{name}' is not "
                           r'a spec calibrated on a CPU'):
            t2t_vit.benchmark_t2t_vit(tiny=True, hardware=name)
    # the exactness check refuses a NaN and a shape change
    with pytest.raises(RuntimeError, match='r = 1'):
        common.check_exact(torch.ones(2, 3),
                           torch.tensor([[1., float('nan'), 1.]] * 2), 1e-4)
    with pytest.raises(RuntimeError, match='differ in shape'):
        common.check_exact(torch.ones(2, 3), torch.ones(2, 4), 1e-4)
    rows = t2t_vit.benchmark_t2t_vit(tiny=True, rates=[0.5], repeats=1,
                                     warmup=0, paradigms=['layer'],
                                     threads=[1, 2], hardware=str(spec))
    # per row (no warm-up, one pair, r < 1: no exactness check): the
    # static forward (which runs forward inside), the timed dynamic
    # forward, the one whose statistics the row reads
    assert calls == ['static_forward', 'forward', 'forward', 'forward'] * 2
    one, two = rows
    assert one['predicted_static_ms'] > 0 and \
        one['predicted_dynamic_ms'] < one['predicted_static_ms']
    assert two['predicted_static_ms'] is None and \
        t2t_vit.fmt_row(two).endswith('| - | - / - |')
    line = t2t_vit.prediction_errors([dict(
        predicted_static_ms=90., static_ms=100., predicted_dynamic_ms=60.,
        dynamic_ms=50., speedup=2.), dict(two)])
    assert line == ('# predicted vs measured ms, 1 rows: MAPE 15.0 % '
                    '(static 10.0 %, dynamic 20.0 %); speedup off by 0.50x '
                    'on average')
    assert t2t_vit.prediction_errors([two, {}]) is None
    # a spec of another thread count than any row's: said so
    spec3 = tmp_path / 'cpu3.yaml'
    save_hardware(get_hardware(str(spec)).replace(num_pe=3), str(spec3))
    t2t_vit.benchmark_t2t_vit(tiny=True, rates=[1.0], repeats=1, warmup=0,
                              paradigms=['spatial'], threads=1,
                              hardware=str(spec3))
    assert '# no row at the thread count the spec models (num_pe=3)' in \
        capsys.readouterr().out


def test_kernel_benchmark_rows_compare_equal_results():
    """The kernel micro-benchmarks time pairs that compute the same thing:
    the kept-weight gather rows report bit-equal results and positive
    times."""
    rows = kernels.kept_weight_rows()
    assert len(rows) == 3
    for kernel, _, _, ta, _, tb, note in rows:
        assert kernel == 'kept_weights' and note == 'equal'
        assert ta > 0 and tb > 0
    rows = kernels.max_pool_rows(shapes=[(2, 8, 30, 41)])
    assert [r[2] for r in rows] == ['F.max_pool2d', 'oneDNN pool'][
        :1 + torch.backends.mkldnn.is_available()]
    for kernel, shape, _, ta, b, tb, _ in rows:
        assert kernel == 'max_pool' and shape == '2 x 8 x 30 x 41, 3x3 / 2'
        assert b == 'ops.max_pool2d' and ta > 0 and tb > 0
    assert rows[0][-1] == 'equal'


def test_static_1x1_gemm_equals_conv2d():
    """The GEMM form the static_1x1 rows time against F.conv2d computes the
    same 1x1 convolution (stride 1 and 2, batch 1 and 2, odd sizes)."""
    g = torch.Generator().manual_seed(0)
    for n, stride in ((1, 1), (2, 1), (1, 2), (2, 2)):
        x = torch.randn(n, 12, 9, 14, generator=g)
        w = torch.randn(20, 12, 1, 1, generator=g)
        b = torch.randn(20, generator=g)
        ref = F.conv2d(x, w, b, stride)
        got = kernels.gemm_conv1x1(x, w, b, stride)
        assert got.shape == ref.shape
        assert torch.allclose(got, ref, rtol=1e-5, atol=1e-5), (n, stride)


def test_spatial_dense_threshold_option():
    """--spatial-dense-threshold overrides the module constant; a
    non-positive value is refused, naming the option."""
    from laud_mm.ops import policy as dynamic
    with pytest.raises(ValueError, match='--spatial-dense-threshold'):
        resnet.benchmark_resnet(spatial_dense_threshold=0, quick=True,
                                rates=[1.0], plot_path='')
    assert dynamic.SPATIAL_DENSE_THRESHOLD == 0.8


def test_dynamic_nchw_option(monkeypatch):
    """--dynamic-nchw runs the dynamic path with the channels_last switch
    off (a channel backbone's dynamic forward then takes NCHW), restored
    afterwards; by default the switch stays on."""
    from laud_mm.ops import policy
    seen = []

    def fake(*args):
        net = resnet.build(50, 'channel')
        seen.append((policy.CHANNELS_LAST_CPU,
                     net.dynamic_memory_format(torch.zeros(1, 3, 32, 32))))
        return {}
    monkeypatch.setattr(resnet, '_benchmark', fake)
    resnet.benchmark_resnet(quick=True, rates=[1.0], dynamic_nchw=True)
    resnet.benchmark_resnet(quick=True, rates=[1.0])
    assert seen[0] == (False, torch.contiguous_format)
    assert seen[1][0] is True and policy.CHANNELS_LAST_CPU is True
    import importlib.util
    import os.path as osp
    spec = importlib.util.spec_from_file_location(
        'laud_benchmark_latency',
        osp.join(ROOT, 'tools', 'analysis_tools', 'benchmark_latency.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.parse_args(['--dynamic-nchw']).dynamic_nchw
    assert not tool.parse_args([]).dynamic_nchw


def test_regnet_dynamic_nchw_option(monkeypatch):
    """benchmark_regnet.py --dynamic-nchw: the RegNetY benchmark times the
    dynamic backbone fed NCHW (its dynamic_memory_format with the switch
    off), by default channels_last; the switch is restored."""
    import importlib.util
    import os.path as osp
    from laud_mm.analysis.benchmark import regnet
    from laud_mm.ops import policy
    seen = []

    def fake(archs, paradigms, *args):
        from laud_mm.models import LAUDRegNetY
        net = LAUDRegNetY(archs[0], paradigm=paradigms[0])
        seen.append(net.dynamic_memory_format(torch.zeros(1, 3, 32, 32)))
        return []
    monkeypatch.setattr(regnet, 'run', fake)
    spec = importlib.util.spec_from_file_location(
        'laud_benchmark_regnet',
        osp.join(ROOT, 'tools', 'analysis_tools', 'benchmark_regnet.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    common = ['--archs', 'regnety_400mf', '--paradigms', 'layer',
              '--rates', '1.0', '--threads', '1']
    tool.main(common + ['--dynamic-nchw'])
    tool.main(common)
    assert seen == [torch.contiguous_format, torch.channels_last]
    assert policy.CHANNELS_LAST_CPU is True


def test_compare_unplanned_adds_the_unplanned_path(monkeypatch):
    """--compare-unplanned: each row also times the dynamic path with the
    per-forward plan off (no sequence planned during those forwards, the
    policy restored after), and the table gets its two columns."""
    from laud_mm.models.layers import forward_plan
    from laud_mm.ops import policy
    builds = []
    real = forward_plan.SequencePlan.build

    def spy(self, x):
        builds.append(x.shape)
        return real(self, x)
    monkeypatch.setattr(forward_plan.SequencePlan, 'build', spy)
    row, = resnet.run([50], ['224'], ['layer'], [1.0], 1, 'flops', 0, 1,
                      compare_unplanned=True)
    # planned: the exactness check and one timed pair (no warm-up); the
    # unplanned timing (as many dynamic forwards) builds no plan
    assert len(builds) == 2
    assert policy.FORWARD_PLAN is True
    assert row['unplanned_ms'] > 0 and row['unplanned_speedup'] > 0 and \
        row['unplanned_cpu_speedup'] > 0
    cols = resnet.table_columns(True)
    assert len(cols) == len(resnet.COLUMNS) + 2
    assert resnet.fmt_row(row).count('|') == len(cols) + 1
    assert 'unplanned speedup (wall)' in common.header(cols)


def test_spatial_breakdown_rows(monkeypatch):
    """--spatial-breakdown: one row per sparse-path spatial block of R50,
    with its granularity S of 4-4-2-1, the active-patch fraction the forced
    gates give, and positive times for every step (the gather / scatter
    path's, the fused kernel's and the masker's); each network in its
    deployed format: the static block timed in NCHW and channels_last, its
    steps in the faster (on a scripted clock where a step whose
    convolutions all read channels_last is the faster), the gather path's
    conv1 in NCHW, the fused kernel on the input in the backbone's dynamic
    format (forced to channels_last here, also where the fused kernels
    are not built); a bad ``hw`` is refused."""
    from laud_mm.analysis.benchmark import spatial_steps
    import laud_mm.models.resnet.dynamic as dyn
    import torch.nn.functional as F
    net = resnet.build(50, 'spatial')
    net.dynamic_memory_format = lambda t: torch.channels_last
    conv_inputs, fused_cl, timed = [], set(), []
    conv2d, branch = F.conv2d, dyn._spatial_branch

    def recording_conv2d(x, *args, **kw):
        conv_inputs.append(x.is_contiguous(memory_format=torch.channels_last))
        return conv2d(x, *args, **kw)

    def spatial_branch(out, x, *args, **kw):
        fused_cl.add(x.is_contiguous(memory_format=torch.channels_last))
        return branch(out, x, *args, **kw)

    def scripted_ms(fn, warmup, repeats):
        """One call; 1 ms where every convolution read channels_last."""
        conv_inputs.clear()
        fn()
        timed.append(set(conv_inputs))
        return 1. if set(conv_inputs) == {True} else 2.
    monkeypatch.setattr(F, 'conv2d', recording_conv2d)
    monkeypatch.setattr(dyn, '_spatial_branch', spatial_branch)
    monkeypatch.setattr(spatial_steps, 'cpu_ms', scripted_ms)
    rows = spatial_breakdown(net, resnet.folded_stem(net), batch=1,
                             block_rate=0.5, rate_mode='flops', repeats=1)
    assert rows, 'no spatial block ran the sparse path at r = 0.5'
    # both formats of the static block were timed
    assert {False} in timed and {True} in timed
    assert fused_cl == {True}
    table = spatial_steps.format_spatial_steps(rows)
    assert table.count('\n') == len(rows) + 1
    for r in rows:
        assert r['static_layout'] == 'channels_last'
        assert r['static_block'] == r['static_conv1'] == \
            r['static_conv23'] == 1.
        assert r['conv1'] == r['patch_convs'] == 2.  # NCHW
        assert r['dynamic_layout'] == 'channels_last'
        assert '| channels_last / channels_last |' in table
    # timed for real
    monkeypatch.undo()
    net.dynamic_memory_format = lambda t: torch.channels_last
    rows = spatial_breakdown(net, resnet.folded_stem(net), batch=1,
                             block_rate=0.5, rate_mode='flops', repeats=1)
    assert rows
    table = spatial_steps.format_spatial_steps(rows)
    stage_s = dict(zip('0123', common.PARADIGMS['spatial']))
    for r in rows:
        assert r['S'] == stage_s[r['block'][0]]
        assert 0 < r['density'] < 0.8
        assert r['static_layout'] in ('NCHW', 'channels_last')
        assert r['dynamic_layout'] == 'channels_last'
        assert f"| {r['static_layout']} / channels_last |" in table
        for k in ('static_conv1', 'static_conv23', 'static_block', 'conv1',
                  'patch_convs', 'scatter', 'gather_block', 'masker',
                  'fused', 'dynamic_block'):
            assert r[k] > 0, (r['block'], k)
        # window_conv1 (stride-2 blocks, few patches) includes the gather
        assert (r['gather'] == 0) == r['windows']
        assert not r['windows'] or r['block'].endswith('.0')
    with pytest.raises(ValueError, match=r'hw=\(224,\) must be'):
        spatial_breakdown(net, resnet.folded_stem(net), 1, 0.5, 'flops', 1,
                          hw=(224,))


def test_masker_rows_compare_equal_logits():
    """The kernel benchmarks' masker rows time the masker module's order
    (pool all channels, then the 1x1 conv) against the dynamic path's
    one-channel conv + pool: the logit differences agree up to float
    rounding."""
    with torch.no_grad():
        rows = kernels.masker_rows()
    assert len(rows) == 4
    for kernel, _, _, ta, _, tb, note in rows:
        assert kernel == 'masker' and ta > 0 and tb > 0
        assert float(note.split()[-1]) <= 1e-4


def test_layout_weight_rows_compare_equal_results():
    """The layout_weight rows time a channels_last input's 3x3 convolution
    (dense, and grouped as RegNetY's conv2) with the NCHW weight against
    the channels_last copy LayoutWeight keeps: the outputs are equal bit
    for bit, the times positive; a malformed shape is refused."""
    shapes = [(32, 9, 1), (16, 12, 2), (32, 7, 2, 4)]
    with torch.no_grad():
        rows = kernels.layout_weight_rows(shapes=shapes)
    assert len(rows) == 3
    for (kernel, shape, a, ta, b, tb, note), (c, hw, n, *g) in zip(
            rows, shapes):
        assert kernel == 'layout_weight' and ta > 0 and tb > 0
        kind = f'3x3, {g[0]} groups' if g else '3x3 ('
        assert shape.startswith(f'{n} x {c} ch {hw}x{hw}, {kind}'), shape
        assert a.startswith('NCHW weight') and \
            b.startswith('channels_last weight')
        assert note.endswith('; equal'), note
    for bad in ((32, 7), (32, 7, 2, 5)):
        with pytest.raises(ValueError, match='layout_weight: shape='):
            kernels.layout_weight_rows(shapes=[bad])


def test_row_gather_rows_compare_equal_results():
    """The row_gather rows time index_select of whole sample rows against
    the RegNetY layer path's torch.gather: equal outputs, positive times;
    a kept sample outside the batch is refused."""
    with torch.no_grad():
        rows = kernels.row_gather_rows(batch=4, kept=(1, 3),
                                       shapes=[(8, 6), (16, 5)])
    assert [r[1].split(' (')[0] for r in rows] == [
        '2 of 4 rows of 8 x 6x6', '2 of 4 rows of 16 x 5x5']
    for kernel, _, a, ta, b, tb, note in rows:
        assert kernel == 'row_gather' and ta > 0 and tb > 0
        assert a.startswith('index_select') and b.startswith('gather')
        assert note.endswith('; equal'), note
    with pytest.raises(ValueError, match=r'row_gather: kept=\[0, 4\]'):
        kernels.row_gather_rows(batch=4, kept=(0, 4))


def test_window_conv1_rows_compare_equal_results():
    """The kernel benchmarks' window_conv1 rows time window_conv1 against
    the dense conv1 + gather on the same windows: equal up to float
    rounding."""
    with torch.no_grad():
        rows = kernels.window_conv1_rows()
    assert [r[1].split(',')[0] for r in rows] == ['stride 2'] * 3 + \
        ['stride 1']
    for kernel, _, _, ta, _, tb, note in rows:
        assert kernel == 'window_conv1' and ta > 0 and tb > 0
        assert float(note.split()[-1]) < 1e-4


def test_soft_split_rows_compare_equal_tokens():
    """The kernel benchmarks' soft_split rows time the T2T image split and
    the whole T2T module both ways; both pairs give equal results (the
    note says so) and every time is positive."""
    with torch.no_grad():
        rows = kernels.soft_split_rows(batch=1, size=64)
    assert [r[2] for r in rows] == ['F.unfold + transpose copy',
                                    'nn.Unfold split']
    for kernel, _, _, ta, _, tb, note in rows:
        assert kernel == 'soft_split' and ta > 0 and tb > 0
        assert note == 'equal'


def test_scatter_rows_compare_equal_results():
    """The kernel benchmarks' scatter rows: the compiled in-place scatter
    with identity_nonneg equals the PyTorch reference bit for bit at the R50
    shapes of every stage (S = 4, 4, 2, 1), with the memory-speed floor in
    the note; ``--only`` runs just the chosen rows (the command line refuses
    an unknown row name, naming the option)."""
    with torch.no_grad():
        rows = kernels.scatter_rows()
    assert [r[1].split(',')[0] for r in rows] == ['S=4', 'S=4', 'S=2', 'S=1']
    for kernel, _, _, ta, _, tb, note in rows:
        assert kernel == 'scatter' and ta > 0 and tb > 0
        assert note.startswith('equal;') and note.endswith(' ms')
    with pytest.raises(ValueError, match='--only'):
        kernels.benchmark_kernels(only=['nonsense'])
    proc = subprocess.run(
        [sys.executable, 'tools/analysis_tools/benchmark_kernels.py',
         '--only', 'nonsense'], cwd=ROOT, capture_output=True, text=True,
        timeout=300)
    assert proc.returncode == 2 and '--only' in proc.stderr, proc.stderr


@pytest.mark.skipif(ops.extension() is None, reason='laud_mm._ext not built')
def test_load_balance_simulation():
    """simulate_load_balance: the kernels' own partition over every block
    of R50 for random masks; at 2 threads every paradigm is within 3 % of
    an even split, at 64 threads the small stage-4 maps leave threads idle
    (> 1) but the figure stays below the thread count; bad options are
    refused by name."""
    from laud_mm.analysis import load_balance
    rows = load_balance.simulate(sizes=['224'], rates=[0.5],
                                 threads=[2, 64], seeds=1)
    assert {(r['paradigm'], r['threads']) for r in rows} == {
        (p, t) for p in ('spatial', 'channel', 'layer') for t in (2, 64)}
    for r in rows:
        assert r['blocks'] > 0 and 1.0 <= r['backbone'] <= r['worst_block']
        if r['threads'] == 2:
            assert r['backbone'] < 1.03, r
        else:
            assert r['backbone'] < 64, r
    table = load_balance.format_table(rows)
    assert '| 8x224x224 | spatial | 0.50 |' in table
    assert '2 threads | 64 threads | worst block at 64 |' in table
    with pytest.raises(ValueError, match='--paradigms'):
        load_balance.simulate(paradigms=['x'])
    with pytest.raises(ValueError, match='--threads'):
        load_balance.simulate(threads=[0])


@pytest.mark.skipif(ops.extension() is None, reason='laud_mm._ext not built')
@pytest.mark.parametrize('fused', [True, False])
def test_load_balance_layer_blocks_follow_the_path(monkeypatch, fused):
    """A layer block's simulated work is the partition of the kernel its
    path runs: the fused spatial kernel with a patch (S = the map's side)
    per kept sample (policy.LAYER_FUSED_CPU), else the per-sample GEMM
    kernel's columns of conv1 and conv3, for the same drawn gates; none
    where every sample or none is kept (the static block, or nothing)."""
    from laud_mm.analysis import load_balance
    from laud_mm.ops import policy
    from laud_mm.models import resnet_geometries
    monkeypatch.setattr(policy, 'LAYER_FUSED_CPU', fused)
    geoms, _ = resnet_geometries(50, (224, 224), 'layer', None)
    g = next(b for b in geoms if b.stride == 2)
    work, dens = load_balance.block_work(
        g, 8, 0.5, 4, torch.Generator().manual_seed(3))
    on = torch.rand(8, generator=torch.Generator().manual_seed(3)) < 0.5
    kept = int(on.sum())
    assert 0 < kept < 8 and dens == kept / 8
    if fused:
        idx = torch.stack([on.nonzero()[:, 0], torch.zeros(kept).long(),
                           torch.zeros(kept).long()], 1).contiguous()
        expect = ops.spatial_partition_work(
            idx, 8, g.in_channels, g.in_hw, g.width, g.out_channels,
            max(g.out_hw), g.stride, g.dilation, 4)
    else:
        px_in, px_out = g.in_hw[0] * g.in_hw[1], g.out_hw[0] * g.out_hw[1]
        expect = torch.stack([
            ops.sample_gemm_partition(kept, px_in, 4).double() *
            g.in_channels * g.width,
            ops.sample_gemm_partition(kept, px_out, 4).double() *
            g.width * g.out_channels])
    assert torch.equal(work, expect)
    assert float(work.sum()) > 0
    # every sample kept (the static block) or none: no kernel work; at
    # batch 1 that is every layer block, which the table prints as '-'
    for rate in (0., 1.):
        work, dens = load_balance.block_work(
            g, 8, rate, 4, torch.Generator().manual_seed(3))
        assert work.shape == (0, 4) and dens == rate
    rows = load_balance.simulate(sizes=['det'], paradigms=['layer'],
                                 rates=[0.5], threads=[2], seeds=1)
    assert rows[0]['blocks'] == 0
    assert '| 1x800x1216 | layer | 0.50 | - | - |' in \
        load_balance.format_table(rows)


def test_bench_pair_speedup_is_the_median_pair_ratio(monkeypatch):
    """A slow spell of the machine that hits both calls of a pair cancels in
    the pair's ratio: the speedup is the median of the per-pair ratios, not
    the ratio of two medians a drift can pull apart."""
    from laud_mm.analysis import timing
    # (wall s, CPU s) per timed call, static then dynamic: dynamic is 2x
    # faster within every pair; a 3x slower spell starts between the two
    # calls of pair 3 (a ratio of medians would say 0.2 / 0.3 = 0.67x)
    slow_static, slow_dynamic = (1, 1, 1, 3, 3), (1, 1, 3, 3, 3)
    script = []
    for ks, kd in zip(slow_static, slow_dynamic):
        script += [(0.2 * ks, 0.2 * ks), (0.1 * kd, 0.1 * kd)]
    calls = iter(script)
    monkeypatch.setattr(timing, 'timed', lambda fn, x: next(calls))
    warm = []
    tm = timing.bench_pair(warm.append, warm.append, 'x', warmup=1,
                           repeats=5)
    assert warm == ['x', 'x']  # one untimed call of each
    assert tm.speedup == pytest.approx(2.0)
    assert tm.cpu_speedup == pytest.approx(2.0)
    assert tm.static_ms == pytest.approx(200.) and \
        tm.dynamic_ms == pytest.approx(300.)
    assert next(calls, None) is None


def test_bench_best_static_takes_the_faster_layout(monkeypatch):
    """The static function runs on the input in NCHW and in channels_last
    in every round; the format with the smaller median is the baseline,
    and the speedups are the per-round ratios against it. The dynamic
    function gets the input as given."""
    from laud_mm.analysis import timing
    x = torch.zeros(1, 4, 3, 5)
    seen = []
    # wall s per call by what runs: channels_last static 0.3 s, NCHW static
    # 0.5 s, dynamic 0.2 s; a 2x slower spell in round 2 hits all three
    slow = iter([1, 1, 1, 2, 2, 2, 1, 1, 1])

    def fake_timed(fn, t):
        k = next(slow)
        cl = t.is_contiguous(memory_format=torch.channels_last) and \
            not t.is_contiguous()
        seen.append((fn, 'CL' if cl else 'N'))
        w = 0.2 if fn is dyn else (0.3 if cl else 0.5)
        return w * k, w * k / 2
    static, dyn = (lambda t: None), (lambda t: None)
    monkeypatch.setattr(timing, 'timed', fake_timed)
    tm = timing.bench_best_static(static, dyn, x, warmup=0, repeats=3)
    assert seen == [(static, 'N'), (static, 'CL'), (dyn, 'N')] * 3
    assert tm.static_layout == 'channels_last'
    assert tm.static_layout_ms == pytest.approx(
        {'NCHW': 500., 'channels_last': 300.})
    assert tm.static_ms == pytest.approx(300.)
    assert tm.dynamic_ms == pytest.approx(200.)
    assert tm.speedup == pytest.approx(1.5)
    assert tm.cpu_speedup == pytest.approx(1.5)
    with pytest.raises(ValueError, match='layouts'):
        timing.bench_best_static(static, dyn, x, 0, 1, layouts=['NHWC'])
    with pytest.raises(ValueError, match=r'\(N, C, H, W\)'):
        timing.bench_best_static(static, dyn, x[0], 0, 1)


def test_layer_rows_compare_equal_results(monkeypatch):
    """The kernel benchmarks' layer rows time the per-sample GEMM kernel
    against the gathered oneDNN path, then the fused spatial kernel against
    the way the policy takes without it, on the same block and input
    (equal up to float rounding, every path really taken) and name the
    path the policy takes; the policy is restored afterwards."""
    import laud_mm.models.resnet.dynamic as dyn
    from laud_mm.ops import policy
    calls = dict(gemm=0, fused=0)

    def spy(name, real):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(dyn, '_sample_gemm', spy('gemm', dyn._sample_gemm))
    monkeypatch.setattr(dyn, '_spatial_branch',
                        spy('fused', dyn._spatial_branch))
    choose, fused = policy.layer_sample_gemm, policy.LAYER_FUSED_CPU
    threads = torch.get_num_threads()
    with torch.no_grad():
        rows = kernels.layer_rows()
    assert policy.layer_sample_gemm is choose
    assert policy.LAYER_FUSED_CPU is fused
    # the fused kernel's row only where the dynamic path can take it
    fast = ops.fast_spatial_branch(torch.zeros(1, 1024, 7, 7), 256,
                                   1024) and policy.fused_cpu_threads()
    per = 2 if fast else 1
    cases = ['1024 ch 14x14, 4 of 8 kept', '2048 ch 7x7, 4 of 8 kept']
    assert [r[1] for r in rows] == [c for c in cases for _ in range(per)]
    # per shape: 2 warm-up + 9 timed calls per timed path, 1 per compared
    # pair; the GEMM kernel runs conv1 and conv3 (2 calls per forward),
    # the fused kernel the whole branch (1)
    unfused = ['kernel' if choose(hw * hw, threads) else 'gathered'
               for hw in (14, 7)]
    forwards = {'kernel': 0, 'fused': 0}
    for u in unfused:
        forwards['kernel'] += 12 + (12 if fast and u == 'kernel' else 0)
        forwards['fused'] += 12 if fast else 0
    assert calls['gemm'] == 2 * forwards['kernel']
    assert calls['fused'] == forwards['fused']
    names = ['fused spatial kernel (wall)', 'sample_gemm kernel (wall)',
             'gathered, oneDNN (wall)']
    for (kernel, _, a, ta, b, tb, note), u in zip(rows, [
            v for v in unfused for _ in range(per)]):
        assert kernel == 'layer' and ta > 0 and tb > 0
        assert a in names and b in names and a != b
        diff, chosen = note.split('; policy: ')
        assert float(diff.split()[-1]) < 1e-4
        assert chosen == ('fused' if fused and fast else u)


def test_handoff_rows_compare_equal_results(monkeypatch):
    """The kernel benchmarks' handoff rows: the one-pass epilogue with the
    next masker's logits equals torch's add_ / relu_ and the logit pass
    bit for bit at every R50 stage's shape (compiled kernels; the
    reference path rounds the logits differently), and the backbone row
    runs the spatial backbone with the hand-off really off, then on (every
    block but the last records its successor's logits, on either spatial
    path); the policy switch is restored afterwards."""
    import laud_mm.models.layers.spatial_logit_record as sr
    from laud_mm.ops import policy
    recorded = []
    real = sr.record_spatial_logit
    monkeypatch.setattr(sr, 'record_spatial_logit',
                        lambda *a: recorded.append(1) or real(*a))
    with torch.no_grad():
        rows = kernels.handoff_rows(batch=1, size=64)
    assert policy.SPATIAL_LOGIT_HANDOFF is True
    assert [r[1] for r in rows] == [
        '8 x 256 x 56x56, grid 14x14', '8 x 512 x 28x28, grid 7x7',
        '8 x 1024 x 14x14, grid 7x7', '8 x 2048 x 7x7, grid 7x7',
        'R50 spatial 1 x 64, r = 1']
    for kernel, _, _, ta, _, tb, note in rows:
        assert kernel == 'handoff' and ta > 0 and tb > 0
    if ops.extension() is not None:
        assert all(r[-1] == 'bit-equal' for r in rows[:4])
        # 11 forwards with the hand-off on (2 warm-up + 9 timed), 15
        # records each; none with it off
        assert len(recorded) == 11 * 15, len(recorded)
    else:
        assert not recorded
    assert rows[4][-1].startswith('static ')


def test_detector_benchmark_pairs_share_weights_and_roi_work():
    """The training-iteration comparison (docs/benchmarks.md, issue #17):
    both Faster R-CNNs sample RoIAlign at a fixed ratio, the LAUD one holds
    the static one's weights (maskers aside), so their proposals agree; one
    timed pair on a real coco_tiny image runs."""
    from laud_mm.analysis.benchmark import detector as bd
    dets = bd.paired_detectors('spatial', root=str(ROOT))
    sd_l, sd_s = dets['laud'].state_dict(), dets['static'].state_dict()
    assert set(sd_s) < set(sd_l)
    assert all('.masker.' in k for k in set(sd_l) - set(sd_s))
    assert all(torch.equal(sd_l[k], v) for k, v in sd_s.items()
               if k != 'backbone.laud_paradigm')
    for det in dets.values():
        roi = det.roi_head.bbox_roi_extractor.roi_layers[0]
        assert roi.sampling_ratio == bd.ROI_SAMPLING_RATIO
    # the same image through both (eval): the same RPN proposals while
    # every gate keeps (the maskers' keep-biased init)
    data = bd._coco_batch(dets['static'], 'val', 1, (320, 192), str(ROOT))
    props = []
    for det in dets.values():
        det.eval()
        with torch.no_grad():
            feats = det.extract_feat(data['inputs'])
            props.append(det.rpn_head.predict(feats, data['data_samples'])[0])
    assert torch.allclose(props[0].bboxes, props[1].bboxes, atol=1e-3)
    r = bd.time_training('spatial', 1, (320, 192), 0, 1, root=str(ROOT))
    assert r['laud_ms'] > 0 and r['static_ms'] > 0


def test_count_dispatch_tool():
    """tools/analysis_tools/count_dispatch.py: operators dispatched per
    block by both dynamic paths and the static block. With every gate on
    a CUDA-path block dispatches the static block's convolutions plus its
    masker, index and host-read operators (so more, and a bounded number);
    the static reference is the same for both paths; bad options name
    themselves."""
    from laud_mm.analysis.benchmark.dispatch import (count_dispatch,
                                                     format_dispatch)
    rows = count_dispatch(50, ['spatial'], [1.0], batch=1, size=32,
                          repeats=1)
    assert [r['path'] for r in rows] == ['cpu', 'cuda']
    assert rows[0]['static_all_ops'] == rows[1]['static_all_ops'] > 0
    for r in rows:
        assert r['static_top_ops'] < r['top_ops'] < 4 * r['static_top_ops']
    table = format_dispatch(rows)
    assert 'CUDA (logic on CPU)' in table and table.count('\n') == 3
    for kw, msg in [(dict(paths=['gpu']), 'paths'),
                    (dict(paradigms=['token']), 'paradigms'),
                    (dict(batch=0), 'batch'), (dict(batch=True), 'batch'),
                    (dict(rates=[1.5]), 'rate')]:
        with pytest.raises(ValueError, match=msg):
            count_dispatch(50, **{'paradigms': ['spatial'], **kw})
    out = subprocess.run(
        [sys.executable, 'tools/analysis_tools/count_dispatch.py',
         '--paradigms', 'layer', '--rates', '1.0', '--paths', 'cuda',
         '--batch', '1', '--size', '32', '--repeats', '1'],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert '| layer | CUDA (logic on CPU) | 1.00 |' in out


class _Clock:
    """A scripted clock for :mod:`laud_mm.analysis.benchmark.in_network`:
    wall and CPU time advance only when a part of the fake network runs,
    each by its own amount."""

    def __init__(self):
        self.wall = self.cpu = 0.

    def tick(self, wall, cpu):
        self.wall += wall
        self.cpu += cpu

    def perf_counter(self):
        return self.wall

    def process_time(self):
        return self.cpu


def test_in_network_block_times_arithmetic(monkeypatch):
    """--per-block in-network: each part's time is the difference of the
    stamps around it within one forward, the speedups are medians of the
    per-pair ratios (not ratios of medians), the CPU speedup comes from
    CPU time, and 'total' spans the stem and every block within each
    forward (not the sum of the parts' medians). A fake network on a
    scripted clock: wall units per timed pair, static / dynamic, stem 2 / 2,
    block 0.0 3, 3, 6 / 1, 2, 2 (ratios 3, 1.5, 3: median 3, ratio of the
    medians 1.5), block 0.1 4, 4, 4 / 2, 2, 1; static blocks burn two
    CPU seconds a wall second, the rest one."""
    from laud_mm.analysis.benchmark import in_network
    clock = _Clock()
    monkeypatch.setattr(in_network, 'time', clock)
    static_wall = {0: (3, 3, 6), 1: (4, 4, 4)}
    dynamic_wall = {0: (1, 2, 2), 1: (2, 2, 1)}
    calls = {'static': 0, 'dynamic': 0}

    class Block:
        downsample = None

        def __init__(self, stage, index):
            self.stage, self.index = stage, index

        def __call__(self, t):  # the dynamic forward
            # forward 0 is the warm-up, 1 - 3 the timed pairs
            pair = calls['dynamic'] // 2 - 1
            calls['dynamic'] += 1
            w = dynamic_wall[self.index][pair] if pair >= 0 else 1
            clock.tick(w, w)
            return t

    def static_block(blk, t):
        # forward 0 is the shape pass, 1 the warm-up, 2 - 4 the timed pairs
        pair = calls['static'] // 2 - 2
        calls['static'] += 1
        w = static_wall[blk.index][pair] if pair >= 0 else 1
        clock.tick(w, 2 * w)
        return t

    def stem(x):
        clock.tick(2, 2)
        return x

    net = type('Net', (), {})()
    net.blocks = [Block(0, 0), Block(0, 1)]
    net.dynamic_memory_format = lambda t: torch.contiguous_format
    rows = in_network.block_times_in_network(
        net, stem, static_block, torch.zeros(1, 3, 8, 8), warmup=1,
        repeats=3, layouts=('NCHW',))
    assert calls == {'static': 2 * 5, 'dynamic': 2 * 4}
    assert {r['static_layout'] for r in rows} == {'NCHW'}
    assert [r['block'] for r in rows] == ['stem', '0.0', '0.1', 'total']
    stem_row, b0, b1, total = rows
    assert stem_row['static_ms'] == stem_row['dynamic_ms'] == 2e3
    assert stem_row['speedup'] == stem_row['cpu_speedup'] == 1.0
    assert (b0['static_ms'], b0['dynamic_ms']) == (3e3, 2e3)
    assert b0['speedup'] == pytest.approx(3.0)      # not 3 / 2
    assert b0['cpu_speedup'] == pytest.approx(6.0)  # CPU time, not wall
    assert (b1['static_ms'], b1['dynamic_ms']) == (4e3, 2e3)
    assert b1['speedup'] == pytest.approx(2.0)
    # totals per pair: static 9, 9, 12, dynamic 5, 6, 5 (the parts'
    # medians would add up to 6 for dynamic)
    assert (total['static_ms'], total['dynamic_ms']) == (9e3, 5e3)
    assert total['speedup'] == pytest.approx(1.8)
    # CPU per pair: static 2 + 2 x 7, 2 + 2 x 7, 2 + 2 x 10; dynamic 5, 6, 5
    assert total['cpu_speedup'] == pytest.approx(16 / 5)
    assert total['in_shape'] == (1, 3, 8, 8)
    with pytest.raises(ValueError, match='--repeats=0'):
        in_network.block_times_in_network(net, stem, static_block,
                                          torch.zeros(1), 0, 0)
    with pytest.raises(ValueError, match='--warmup=-1'):
        in_network.block_times_in_network(net, stem, static_block,
                                          torch.zeros(1), -1, 1)
    with pytest.raises(ValueError, match=r"layouts=\['NHWC'\]"):
        in_network.block_times_in_network(net, stem, static_block,
                                          torch.zeros(1, 3, 8, 8), 0, 1,
                                          layouts=('NHWC',))


def test_in_network_baseline_is_the_faster_static_format(monkeypatch):
    """--per-block in-network with both static formats: the static blocks
    run in each format every round, the format whose whole forward is
    faster is the baseline of every row (here channels_last: a block takes
    3 wall units on an NCHW input, 2 on a channels_last one), and the
    dynamic blocks get the input in the network's dynamic format."""
    from laud_mm.analysis.benchmark import in_network
    clock = _Clock()
    monkeypatch.setattr(in_network, 'time', clock)
    dynamic_inputs = []

    def is_cl(t):
        return t.is_contiguous(memory_format=torch.channels_last) and \
            not t.is_contiguous()

    class Block:
        downsample = None

        def __init__(self, index):
            self.stage, self.index = 0, index

        def __call__(self, t):
            dynamic_inputs.append(is_cl(t))
            clock.tick(1, 1)
            return t

    def static_block(blk, t):
        w = 2 if is_cl(t) else 3
        clock.tick(w, w)
        return t

    net = type('Net', (), {})()
    net.blocks = [Block(0), Block(1)]
    net.dynamic_memory_format = lambda x: torch.channels_last
    rows = in_network.block_times_in_network(
        net, lambda t: t, static_block, torch.zeros(2, 3, 8, 8), warmup=0,
        repeats=3)
    assert {r['static_layout'] for r in rows} == {'channels_last'}
    assert [r['static_ms'] for r in rows[1:]] == [2e3, 2e3, 4e3]
    assert rows[-1]['speedup'] == pytest.approx(2.0)
    assert dynamic_inputs == [True] * 6
    with pytest.raises(ValueError, match=r'x must be \(N, C, H, W\)'):
        in_network.block_times_in_network(net, lambda t: t, static_block,
                                          torch.zeros(3, 8, 8), 0, 1)


def test_in_network_per_block_rows_on_r50():
    """--per-block in-network on a real LAUD-ResNet-50 (spatial, forced
    gates at r = 1): a stem row, the 16 blocks with the input shapes of the
    static network's activations, and a total row; the dynamic forward ran
    as the backbone runs it (inside owned_block_inputs: every block knows
    its successor; every block counted its statistics); an unknown mode is
    refused, naming the option."""
    from laud_mm.analysis.benchmark import in_network
    from laud_mm.models.layers.dynamic import next_block
    net = resnet.build(50, 'spatial')
    stem = resnet.folded_stem(net)
    x = torch.randn(1, 3, 64, 64)
    force_random_gates(net, 1.0, 1, (64, 64), seed=1, mode='flops')
    blocks = list(net.blocks)
    # the dynamic format, channels_last also where the fused kernels are
    # not built (the backbone's own choice would be NCHW there)
    fmt = torch.channels_last
    net.dynamic_memory_format = lambda t: fmt
    seen, static_formats = [], []
    handle = blocks[0].register_forward_pre_hook(
        lambda m, args: seen.append(
            (next_block(m), args[0].is_contiguous(memory_format=fmt))))

    def static_block(blk, t):
        if blk is blocks[0]:
            static_formats.append(
                t.is_contiguous(memory_format=torch.channels_last))
        return resnet.static_bottleneck_forward(blk, t)
    try:
        rows = in_network.block_times_in_network(net, stem, static_block,
                                                 x, 0, 1)
    finally:
        handle.remove()
    # the one dynamic forward, in the context, on its input in the
    # backbone's dynamic format
    assert seen == [(blocks[1], True)]
    assert next_block(blocks[0]) is None  # and the context was left
    # the shape pass, then the timed round in NCHW and in channels_last
    assert static_formats == [False, False, True]
    assert rows[0]['static_layout'] in ('NCHW', 'channels_last')
    names = [r['block'] for r in rows]
    assert names[0] == 'stem' and names[-1] == 'total' and len(rows) == 18
    assert names[1:-1] == [f'{b.stage}.{b.index}' for b in blocks]
    assert rows[1]['in_shape'] == (1, 64, 16, 16)
    assert rows[-2]['in_shape'] == (1, 2048, 2, 2)
    for r in rows:
        assert r['static_ms'] > 0 and r['dynamic_ms'] > 0 and r['speedup'] > 0
    assert all(float(b.last_stats['density'].min()) == 1.0 for b in blocks)
    rows = resnet.per_block(50, ['layer'], 1, 0.5, 'flops', 1,
                            mode='in-network', warmup=0)
    assert {r['mode'] for r in rows} == {'in-network'} and len(rows) == 18
    assert len({r['static_layout'] for r in rows}) == 1
    assert 'static layout' in resnet.format_blocks(rows).splitlines()[0]
    # each block alone: the static block in its faster format, per block
    rows = resnet.per_block(50, ['channel'], 1, 0.5, 'flops', 1)
    assert len(rows) == 16 and {r['mode'] for r in rows} == {'alone'}
    assert {r['static_layout'] for r in rows} <= {'NCHW', 'channels_last'}
    with pytest.raises(ValueError, match="--per-block='bad'"):
        resnet.per_block(50, ['spatial'], 1, 1.0, 'flops', 1, mode='bad')
    with pytest.raises(ValueError, match="--per-block='bad'"):
        resnet.benchmark_resnet(quick=True, rates=[1.0], plot_path='',
                                per_block_table=True, per_block_mode='bad')


def test_channel_branch_rows_time_the_kernel_that_matches():
    """The kernel benchmarks' channel_branch rows time the fused channel
    kernel on an identity block of each R50 stage against the static
    block: positive times, the kept count and the FLOPs ratio r_i of the
    gate (conv1 and conv3 linear, conv2 quadratic in the kept count), and
    the kernel within float tolerance of the PyTorch reference."""
    if ops.extension() is None:
        pytest.skip('laud_mm._ext is not built')
    with torch.no_grad():
        rows = kernels.channel_branch_rows(batch=1)
    assert [r[1].split(',')[0] for r in rows] == [
        'stage 1', 'stage 2', 'stage 3', 'stage 4']
    for (kernel, shape, a, ta, b, tb, note), (c_in, width, hw) in zip(
            rows, ((256, 64, 56), (512, 128, 28), (1024, 256, 14),
                   (2048, 512, 7))):
        assert kernel == 'channel_branch' and ta > 0 and tb > 0
        assert (a, b) == ('static block', 'fused channel kernel')
        assert f'1 x {c_in} x {hw}x{hw}, ' in shape
        kept = float(shape.split(', ')[-1].split(' of ')[0])
        assert shape.endswith(f' of {width} kept') and 0 < kept < width
        assert kept == int(kept) and int(kept) % 2 == 0  # G = 2, batch 1
        r_i = float(note.split('r_i ')[1].split(' ')[0])
        want = (2 * c_in * kept + 9 * kept ** 2) / (2 * c_in * width +
                                                      9 * width ** 2)
        assert abs(r_i - want) <= 0.006, (r_i, want)
        assert note.startswith('paired wall ')
        assert float(note.split('max diff ')[1]) <= 1e-4
    with pytest.raises(ValueError, match='batch=0 must be'):
        kernels.channel_branch_rows(batch=0)
    with pytest.raises(ValueError, match=r'rate=1.5 must be in \(0, 1\]'):
        kernels.channel_branch_rows(rate=1.5)


def test_channel_split_rows_name_the_split_and_match():
    """The kernel benchmarks' channel_split rows time the fused channel
    kernel's column split against its panels gathered up front at batch
    1: at 2 threads the plan splits columns (the row says so) and the two
    give the same bits; at one thread both split pixels."""
    if ops.extension() is None:
        pytest.skip('laud_mm._ext is not built')
    prev = torch.get_num_threads()
    try:
        for threads, first in ((2, 'columns split (wall)'),
                               (1, 'pixels split (wall)')):
            torch.set_num_threads(threads)
            with torch.no_grad():
                rows = kernels.channel_split_rows()
            assert [r[1].split(',')[0] for r in rows] == [
                '1024 ch 14x14 -> 7x7', '2048 ch 7x7 -> 7x7']
            for kernel, _, a, ta, b, tb, note in rows:
                assert kernel == 'channel_split' and ta > 0 and tb > 0
                assert a == first, threads
                assert b == 'panels up front, pixels split (wall)'
                assert note == 'bit-equal: True'
    finally:
        torch.set_num_threads(prev)


def test_detector_inference_times_working_formats(monkeypatch):
    """benchmark_detector.py's inference rows: the whole static and LAUD
    detectors run NCHW only (mmcv's CPU RoIAlign reads channels_last FPN
    maps wrongly: a channels_last static detector would be a baseline that
    returns wrong boxes), while the backbone row takes the static network's
    faster format and feeds the dynamic backbone its dynamic_memory_format.
    A real coco_tiny image at a small scale, one timed pair."""
    from laud_mm.analysis.benchmark import detector
    real = detector.bench_best_static
    calls = []

    def spy(static_fn, dyn_fn, x, warmup, repeats, layouts=('NCHW',
                                                            'channels_last')):
        with torch.no_grad():
            out = dyn_fn(x)
        calls.append((tuple(layouts), out))
        return real(static_fn, dyn_fn, x, warmup, repeats, layouts)

    monkeypatch.setattr(detector, 'bench_best_static', spy)
    r = detector.time_inference('channel', 0.5, (160, 128), 0, 1, ROOT)
    assert [c[0] for c in calls] == [('NCHW',), ('NCHW', 'channels_last')]
    assert r['static_layout'] == 'NCHW'
    assert r['backbone_static_layout'] in ('NCHW', 'channels_last')
    feats = calls[1][1]
    det = detector._detector('channel', ROOT)
    fmt = det.backbone.dynamic_memory_format(torch.zeros(1, 3, 32, 32))
    assert all(f.is_contiguous(memory_format=fmt) for f in feats)
    assert 0 < r['rate_real'] < 1
    assert r['static_ms'] > 0 and r['backbone_dynamic_ms'] > 0
