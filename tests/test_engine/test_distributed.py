"""Distributed training and evaluation on CPU: 2 processes (gloo) started by
``tools/dist_train.sh`` (torchrun) on real coco_tiny images, with the LAUD
backbone's learned gates, the sparsity loss and the temperature hook.

What makes the 2-process run comparable with one process (see
docs/reliability.md): the same seed with ``diff_rank_seed=False`` (every
rank starts iteration 1 from the same generator state, hence the same
Gumbel-noise stream), batch 1 per rank, no random flip, constant tau, BN in
eval mode (``norm_eval=True``). The single-process reference runs the same
two images as two micro-batches of one image with ``accumulative_counts=2``
and replays the generator state of the first micro-batch for the second
(``ReplayRNGHook``), so each micro-batch sees exactly what its rank saw.
Then the per-rank losses must equal the reference's micro-batch losses and
the weights after the DDP step (gradients averaged over ranks) must equal
the weights after the accumulated step (gradients of the mean loss).
"""
import os.path as osp

import pytest
import torch
from mmengine.runner import Runner

from reliability_helpers import (dump_cfg, fast_cfg, free_port, read_json_log,
                                 read_records, read_test_json, run_tool)

SKIPPED_BLOCKS = ['layer2.3', 'layer3.1', 'layer3.2', 'layer4.1']
N_VAL = 5  # odd: the distributed sampler pads rank 1 with a duplicate


def _cfg(work_dir, **kw):
    cfg = fast_cfg(work_dir, max_iters=2, n_train=4, n_val=N_VAL, batch=1,
                   tau=(1.0, 1.0), **kw)
    cfg.randomness = dict(seed=0, diff_rank_seed=False)
    return cfg


FORCE = dict(type='ForceGatesHook', blocks=SKIPPED_BLOCKS, value=0.0)
HOOKS = [dict(type='MixedGatesHook'), FORCE, dict(type='RecordTrainHook')]


@pytest.fixture(scope='module')
def ddp_run(tmp_path_factory):
    """2-process training (2 iterations, distributed val at the end)."""
    work = tmp_path_factory.mktemp('ddp')
    cfg = _cfg(work / 'run')
    cfg.train_cfg.val_interval = 2
    path = dump_cfg(cfg, work / 'ddp_cfg.py', HOOKS)
    proc = run_tool(['bash', 'tools/dist_train.sh', path, '2'], timeout=900,
                    env_extra=dict(PORT=str(free_port())))
    return work / 'run', proc


def _load(path):
    return torch.load(path, map_location='cpu')  # weights_only (torch>=2.6)


def test_ddp_runs_on_gloo_without_unused_parameter_errors(ddp_run):
    run, _ = ddp_run
    env = [__import__('json').load(open(run / f'env_rank{r}.json'))
           for r in (0, 1)]
    for e in env:
        assert e['wrapper'] == 'MMDistributedDataParallel'
        assert e['find_unused_parameters'] is False and e['world_size'] == 2
    # whole blocks skipped (gates forced off) in both iterations: DDP with
    # find_unused_parameters=False would fail in iteration 2 otherwise
    for r in (0, 1):
        recs = read_records(run, r)
        assert [x['iter'] for x in recs] == [1, 2]
        for x in recs:
            assert x['finite']
            # layer2.3 is block 6, layer3.1 / 3.2 blocks 8 / 9, layer4.1 14
            for b in (6, 8, 9, 14):
                assert x['density'][b] == 0.0
            assert 0.05 < x['act_rate'][0] < 0.95  # learned gates are mixed
            assert 'loss_sparsity' in x['losses']
    # the two ranks trained on different images
    assert read_records(run, 0)[0]['img_ids'] != read_records(run, 1)[0]['img_ids']
    # the checkpoint (written by rank 0) carries both ranks' generator
    # states for an exact resume
    ck = _load(run / 'iter_2.pth')
    assert len(ck['laud_rng_state']) == 2
    assert 'backbone.layer3.1.masker.conv.weight' in ck['state_dict']


def test_iteration_1_matches_single_process(ddp_run, tmp_path):
    run, _ = ddp_run
    ref = _cfg(tmp_path / 'ref')
    ref.optim_wrapper.accumulative_counts = 2
    ref.custom_hooks = list(ref.custom_hooks) + HOOKS + [
        dict(type='ReplayRNGHook', every=2)]
    runner = Runner.from_cfg(ref)
    runner.train()
    single = read_records(tmp_path / 'ref')
    ranks = [read_records(run, r)[0] for r in (0, 1)]
    # micro-batch k of the reference = rank k's batch of DDP iteration 1
    for k, r in enumerate(ranks):
        assert single[k]['img_ids'] == r['img_ids']
        for key, v in r['losses'].items():
            assert single[k]['losses'][key] == pytest.approx(
                v, rel=1e-4, abs=1e-6), (k, key)
        assert single[k]['density'] == pytest.approx(r['density'], abs=1e-6)
    # the mean loss over ranks is the loss of the global batch
    mean_ddp = sum(r['losses']['loss'] for r in ranks) / 2
    mean_ref = sum(s['losses']['loss'] for s in single[:2]) / 2
    assert mean_ddp == pytest.approx(mean_ref, rel=1e-4)
    # weights after one DDP step (averaged gradients) = weights after the
    # accumulated step of the reference
    a = _load(run / 'iter_1.pth')['state_dict']
    b = _load(tmp_path / 'ref' / 'iter_2.pth')['state_dict']
    assert a.keys() == b.keys()
    for k in a:
        if a[k].is_floating_point():
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6,
                                       msg=lambda m: f'{k}: {m}')
    # the norm of the averaged gradient (clip_grad logs it) is the norm of
    # the accumulated gradient
    g_ddp = [x['grad_norm'] for x in read_json_log(run) if x.get('iter') == 1]
    g_ref = [x['grad_norm'] for x in read_json_log(tmp_path / 'ref')
             if x.get('iter') == 2]
    assert g_ddp[0] > 0 and g_ddp[0] == pytest.approx(g_ref[0], rel=1e-4)
    # the gates learned through DDP: MixedGatesHook zeroed every masker
    # bias, one step made those of the learned (not forced) blocks non-zero
    learned = [k for k in a if k.endswith('masker.conv.bias') and
               not any(f'backbone.{n}.' in k for n in SKIPPED_BLOCKS)]
    assert len(learned) == 16 - len(SKIPPED_BLOCKS)
    assert all(a[k].abs().sum() > 0 for k in learned)


def test_distributed_evaluation_equals_single_process(ddp_run, tmp_path):
    run, _ = ddp_run
    logged = [x for x in read_json_log(run) if 'laud/activation_rate' in x]
    assert len(logged) == 1
    dist_metrics = logged[0]
    cfg = _cfg(tmp_path / 'val')
    cfg.custom_hooks = list(cfg.custom_hooks) + [FORCE]
    cfg.load_from = str(run / 'iter_2.pth')
    metrics = Runner.from_cfg(cfg).val()
    for key in ('laud/activation_rate', 'laud/backbone_GFLOPs',
                'laud/latency_ms', 'laud/static_latency_ms', 'laud/speedup'):
        assert dist_metrics[key] == pytest.approx(metrics[key], rel=1e-9), key
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50'):
        assert dist_metrics[key] == pytest.approx(metrics[key], abs=1e-3), key
    # the mixed gates make the rate image-dependent, so a duplicated or lost
    # image (the sampler pads 5 images to 6) would change it
    assert 0.05 < metrics['laud/activation_rate'] < 0.95


def test_dist_test_sh_equals_single_process(ddp_run, tmp_path):
    run, _ = ddp_run
    cfg = _cfg(tmp_path / 'dt')
    cfg.custom_hooks = list(cfg.custom_hooks) + [FORCE]
    path = dump_cfg(cfg, tmp_path / 'dt_cfg.py')
    run_tool(['bash', 'tools/dist_test.sh', path, str(run / 'iter_2.pth'), '2'],
             timeout=600, env_extra=dict(PORT=str(free_port())))
    logged = [x for x in read_test_json(tmp_path / 'dt')
              if 'laud/activation_rate' in x]
    assert len(logged) == 1
    cfg.load_from = str(run / 'iter_2.pth')
    metrics = Runner.from_cfg(cfg).test()
    for key in ('laud/activation_rate', 'laud/latency_ms', 'laud/speedup'):
        assert logged[0][key] == pytest.approx(metrics[key], rel=1e-9), key


def test_cpu_distributed_setup_errors():
    from mmengine.config import Config
    from laud_mm.engine.dist import setup_cpu_distributed
    cfg = Config(dict(launcher='none'))
    assert setup_cpu_distributed(cfg) is False
    with pytest.raises(ValueError, match="launcher='slurm'"):
        setup_cpu_distributed(Config(dict(launcher='slurm')))
    import os
    saved = {k: os.environ.pop(k) for k in ('RANK', 'WORLD_SIZE')
             if k in os.environ}
    try:
        with pytest.raises(ValueError, match='RANK'):
            setup_cpu_distributed(Config(dict(launcher='pytorch')))
    finally:
        os.environ.update(saved)
    from conftest import ROOT
    assert osp.isfile(osp.join(ROOT, 'tools', 'dist_train.sh'))


@pytest.mark.parametrize('main_process', [True, False])
def test_test_json_written_by_main_process_only(tmp_path, monkeypatch,
                                                main_process):
    """Under dist_test.sh every rank runs the logger hook's after_test_epoch
    with the same timestamp; with ``laud_mm.MainProcessLoggerHook`` (the
    LAUD configs' logger) only the main process writes ``{ts}.json`` (two
    concurrent 'w' writes of different lengths left invalid json), and
    mmengine's own LoggerHook is left as it is (no global patch)."""
    import json
    from types import SimpleNamespace

    from mmengine.hooks import LoggerHook

    import laud_mm.engine.hooks.logger as dtl
    from laud_mm import MainProcessLoggerHook
    monkeypatch.setattr(dtl, 'is_main_process', lambda: main_process)
    logged = []
    tag = {'coco/bbox_mAP': 0.5, 'laud/speedup': 1.25}
    runner = SimpleNamespace(
        test_dataloader=[0, 1, 2], log_dir=str(tmp_path),
        logger=SimpleNamespace(info=logged.append),
        log_processor=SimpleNamespace(
            get_log_after_epoch=lambda r, n, mode, with_non_scalar: (
                dict(tag), f'{mode} {n} images')))
    hook = MainProcessLoggerHook()
    hook.json_log_path = 'ts.json'
    hook.after_test_epoch(runner)
    assert logged == ['test 3 images']  # every rank logs the line
    out = tmp_path / 'ts.json'
    if main_process:
        assert json.loads(out.read_text()) == tag
    else:
        assert not out.exists()
    # mmengine's LoggerHook itself is untouched
    assert LoggerHook.after_test_epoch.__module__ == 'mmengine.hooks.logger_hook'


def test_finish_distributed_without_process_group_is_a_no_op():
    """tools/train.py and tools/test.py call it last; in a single-process
    run (no process group) it must return, not end the process."""
    import torch.distributed as torch_dist
    from laud_mm.engine.dist import finish_distributed
    assert not torch_dist.is_initialized()
    assert finish_distributed() is None
