"""tools/gpu_check.sh and the GPU benchmark, up to the point where they need
a GPU: without one they refuse at once and clearly (exit status 3, nothing
built or written); the report they write is checked on a synthetic result.

Source: issue #21 item 4 (one-command device check)."""
import json
import os
import os.path as osp
import subprocess

import pytest
import torch

from conftest import ROOT

pytestmark = pytest.mark.skipif(torch.cuda.is_available(),
                                reason='a GPU is visible: the refusal '
                                'cannot be observed here')


def test_gpu_check_refuses_without_gpu(tmp_path):
    out = tmp_path / 'out'
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='')
    r = subprocess.run(['bash', osp.join(ROOT, 'tools', 'gpu_check.sh'),
                        str(out)], env=env, text=True, capture_output=True,
                       timeout=120)
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert 'REFUSED: no GPU' in r.stderr
    assert not out.exists()  # nothing built, run or written
    usage = subprocess.run(['bash', osp.join(ROOT, 'tools', 'gpu_check.sh')],
                           text=True, capture_output=True, timeout=60)
    assert usage.returncode == 2 and 'usage' in usage.stderr


def test_benchmark_gpu_refuses_without_gpu(tmp_path, capsys):
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'benchmark_gpu', osp.join(ROOT, 'tools', 'analysis_tools',
                                  'benchmark_gpu.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main([str(tmp_path / 'o')]) == 3
    assert 'REFUSED' in capsys.readouterr().out
    assert not (tmp_path / 'o').exists()


def test_gpu_report_format(tmp_path):
    from laud_mm.analysis.benchmark.gpu import markdown, write_report
    row = dict(depth=101, paradigm='layer', rate=0.4, rate_real=0.41,
               flops_ratio=0.45, static_ms=60.0, static_nchw_ms_now=61.0,
               dynamic_ms=25.0, speedup=2.4, ideal=2.2, predicted_ms=26.0,
               predicted_speedup=2.3, max_rel_err=None, gpu_activities=576,
               gpu_busy_ms=16.03)
    res = dict(gpu='NVIDIA H200', torch='2.13.0', cuda='13.0', batch=128,
               size=224, dtype='float32', tf32=False, warmup=3, repeats=10,
               hardware='h200',
               statics=[dict(depth=101, nchw_ms=60.0, channels_last_ms=62.0,
                             best_ms=60.0, predicted_ms=58.0,
                             gpu_activities=209, gpu_busy_ms=35.16)],
               rows=[row, dict(row, rate=1.0, max_rel_err=2e-6)],
               validation=dict(mape=4.2, spearman=0.99, cases=3),
               goals=[dict(what='R101 layer r = 0.4', goal='>= 2.2x',
                           got=2.4, met=True),
                      dict(what='predictor MAPE (h200)', goal='<= 10.0 %',
                           got=4.2, met=True)], seconds=1.0)
    paths = write_report(res, str(tmp_path))
    assert json.load(open(paths['json']))['validation']['mape'] == 4.2
    md = open(paths['markdown']).read()
    assert md == markdown(res)
    assert '| R101 | layer | 0.4 | 0.410 | 60.00 | 25.00 | 2.40x |' in md
    assert '| 2.30x |  | 576 | 16.03 |' in md  # r = 0.4: no error cell
    assert '| 2.0e-06 | 576 | 16.03 |' in md
    assert '| 58.00 | 209 | 35.16 |' in md
    assert 'MAPE 4.2 %, Spearman 0.990' in md
    assert '| R101 layer r = 0.4 | >= 2.2x | 2.40x | yes |' in md
    # every table row has as many cells as its header
    for block in md.split('\n\n'):
        rows = [ln for ln in block.splitlines() if ln.startswith('|')]
        assert len({ln.count('|') for ln in rows}) <= 1, block


def test_gpu_benchmark_smoke_on_cpu(tmp_path, monkeypatch):
    """The whole benchmark run (gates forced at r, exactness at r = 1,
    FLOPs ratio, predictor, goals, report) on a tiny CPU input, through the
    CUDA path's logic (policy.DEVICE_PATH_ON_CPU): what gpu_check.sh runs
    on a GPU, minus the GPU."""
    from laud_mm.analysis.benchmark.gpu import run, write_report
    from laud_mm.ops import policy
    monkeypatch.setattr(policy, 'DEVICE_PATH_ON_CPU', True)
    res = run(depths=(50,), paradigms=('spatial',),
              rates={50: (0.5, 1.0)}, batch=2, size=64, warmup=0, repeats=1,
              log=lambda s: None, device='cpu')
    assert [(r['paradigm'], r['rate']) for r in res['rows']] == [
        ('spatial', 0.5), ('spatial', 1.0)]
    for r in res['rows']:
        assert r['dynamic_ms'] > 0 and r['predicted_ms'] > 0
        assert r['gpu_activities'] is None  # profiled on a GPU only
        if r['rate'] == 1.0:
            assert r['max_rel_err'] <= 1e-4
        else:
            assert r['flops_ratio'] < 1
    assert res['validation']['cases'] == 3  # one static + two dynamic
    assert res['goals'][-1]['what'] == 'predictor MAPE (h200)'
    write_report(res, str(tmp_path))
