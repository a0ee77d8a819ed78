"""Resume after a crash: a training process SIGKILLed mid-run and resumed
with ``tools/train.py --resume`` continues with the same iteration, tau,
learning rate, optimizer state, Gumbel noise, data order and augmentation,
so its per-iteration losses equal those of an uninterrupted run with the
same seed. Checkpoints load with ``torch.load(weights_only=True)`` while a
checkpoint carrying a non-allowlisted global is still refused.

All three runs are ``tools/train.py`` subprocesses with one thread each (the
same float summation order). The gates start mixed (equal keep/skip biases)
so that the Gumbel noise decides many gates: a resumed run that re-seeded the
noise instead of restoring it would differ at once.
"""
import os
import pickle
import random

import numpy as np

import pytest
import torch

from reliability_helpers import (dump_cfg, fast_cfg, read_json_log,
                                 read_records, run_tool)

MAX_ITERS = 5
KILL_AT = 3  # 0-based: killed at the start of the 4th iteration


def _cfg(work_dir):
    cfg = fast_cfg(work_dir, max_iters=MAX_ITERS, n_train=4, batch=2,
                   flip=True, tau=(5.0, 0.1))
    # lr changes every iteration, so a wrong scheduler state shows
    cfg.param_scheduler = [dict(type='LinearLR', start_factor=0.1,
                                by_epoch=False, begin=0, end=MAX_ITERS + 1)]
    cfg.default_hooks.checkpoint.interval = 2
    return cfg


HOOKS = [dict(type='MixedGatesHook'), dict(type='RecordTrainHook')]


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp('resume')
    ref = dump_cfg(_cfg(root / 'ref'), root / 'ref.py', HOOKS)
    run_tool(['tools/train.py', ref], timeout=900)
    crash = dump_cfg(_cfg(root / 'crash'), root / 'crash.py',
                     HOOKS + [dict(type='KillAtIterHook', at=KILL_AT)])
    killed = run_tool(['tools/train.py', crash], timeout=900, check=False)
    ckpts_at_kill = sorted(f for f in os.listdir(root / 'crash')
                           if f.endswith('.pth'))
    resume = dump_cfg(_cfg(root / 'crash'), root / 'resume.py', HOOKS)
    resumed = run_tool(['tools/train.py', resume, '--resume'], timeout=900)
    return dict(root=root, killed=killed, ckpts_at_kill=ckpts_at_kill,
                resumed=resumed)


def test_process_was_killed_after_iter_2_checkpoint(runs):
    assert runs['killed'].returncode == -9  # SIGKILL, no clean-up
    assert runs['ckpts_at_kill'] == ['iter_2.pth']
    recs = read_records(runs['root'] / 'crash')
    # the killed run trained iteration 3 (lost: no checkpoint), then the
    # resumed run started again at iteration 3
    assert [r['iter'] for r in recs] == [1, 2, 3, 3, 4, 5]
    assert 'resumed epoch: 0, iter: 2' in runs['resumed'].stdout + \
        runs['resumed'].stderr


def test_resumed_loss_curve_matches_uninterrupted_run(runs):
    ref = {r['iter']: r for r in read_records(runs['root'] / 'ref')}
    recs = read_records(runs['root'] / 'crash')
    killed, resumed = recs[:3], recs[3:]
    assert sorted(ref) == [1, 2, 3, 4, 5]
    for r in killed + resumed:
        a = ref[r['iter']]
        assert r['img_ids'] == a['img_ids'], r['iter']  # same data order
        assert r['tau'] == pytest.approx(a['tau'], rel=1e-12)
        assert r['lr'] == pytest.approx(a['lr'], rel=1e-12)
        # the noise decided the same gates
        assert r['density'] == pytest.approx(a['density'], abs=1e-6)
        for k, v in a['losses'].items():
            assert r['losses'][k] == pytest.approx(v, rel=1e-5, abs=1e-7), \
                (r['iter'], k)
        assert r['finite']
    # tau and lr really change along the run (the comparison is not trivial)
    assert len({round(ref[i]['tau'], 9) for i in ref}) == MAX_ITERS
    assert len({round(ref[i]['lr'], 12) for i in ref}) == MAX_ITERS
    # mmengine's json log (smoothed losses over its window, restored from
    # the MessageHub) agrees after the resume too
    log_ref = {x['iter']: x for x in read_json_log(runs['root'] / 'ref')
               if 'loss' in x}
    log_res = [x for x in read_json_log(runs['root'] / 'crash')
               if 'loss' in x]
    assert [x['iter'] for x in log_res] == [1, 2, 3, 3, 4, 5]
    for x in log_res[3:]:
        for k in ('loss', 'gumbel_tau', 'lr', 'act_rate', 'loss_sparsity'):
            assert x[k] == pytest.approx(log_ref[x['iter']][k], rel=1e-5), \
                (x['iter'], k)


def test_resumed_checkpoint_equals_uninterrupted(runs):
    a = torch.load(runs['root'] / 'ref' / 'iter_4.pth', map_location='cpu',
                   weights_only=True)
    b = torch.load(runs['root'] / 'crash' / 'iter_4.pth', map_location='cpu',
                   weights_only=True)
    assert a['meta']['iter'] == b['meta']['iter'] == 4
    for k, v in a['state_dict'].items():
        torch.testing.assert_close(b['state_dict'][k], v, rtol=1e-5,
                                   atol=1e-7, msg=lambda m: f'{k}: {m}')
    # optimizer state: SGD momentum buffers of every parameter
    sa, sb = a['optimizer']['state'], b['optimizer']['state']
    assert sa.keys() == sb.keys() and len(sa) > 100
    for i in sa:
        torch.testing.assert_close(sb[i]['momentum_buffer'],
                                   sa[i]['momentum_buffer'], rtol=1e-5,
                                   atol=1e-7)
    assert a['param_schedulers'] == b['param_schedulers']
    # the random states are part of the checkpoint (one entry per rank)
    assert len(a['laud_rng_state']) == 1
    assert torch.equal(a['laud_rng_state'][0]['torch'],
                       b['laud_rng_state'][0]['torch'])


def test_checkpoint_loads_with_weights_only_and_unsafe_one_is_refused(
        runs, tmp_path):
    path = runs['root'] / 'ref' / 'iter_4.pth'
    ck = torch.load(path, map_location='cpu', weights_only=True)
    assert {'meta', 'state_dict', 'optimizer', 'message_hub',
            'param_schedulers'} <= set(ck)
    # mmengine's loader (load_from, resume, Pretrained) uses torch's default
    from mmengine.runner.checkpoint import _load_checkpoint
    assert _load_checkpoint(str(path), map_location='cpu')['meta']['iter'] == 4
    # weights_only is not weakened globally: no getattr / eval / os in the
    # allow-list, and a checkpoint with any other global is refused
    names = {f'{getattr(g, "__module__", "")}.{getattr(g, "__name__", g)}'
             if not isinstance(g, tuple) else g[1]
             for g in torch.serialization.get_safe_globals()}
    assert not any(n.split('.')[-1] in ('getattr', 'eval', 'exec', 'system')
                   for n in names), names
    marker = tmp_path / 'pwned'

    class Evil:
        def __reduce__(self):
            return (os.system, (f'touch {marker}',))

    evil = tmp_path / 'evil.pth'
    with open(evil, 'wb') as f:
        torch.save({'state_dict': {}, 'meta': {'x': Evil()}}, f)
    with pytest.raises(pickle.UnpicklingError, match='system'):
        torch.load(evil, map_location='cpu')
    with pytest.raises(pickle.UnpicklingError):
        _load_checkpoint(str(evil), map_location='cpu')
    assert not marker.exists()
    # a harmless but non-allowlisted global (old scripts pickled their args)
    import argparse
    odd = tmp_path / 'namespace.pth'
    torch.save({'state_dict': {}, 'meta': argparse.Namespace(lr=0.1)}, odd)
    with pytest.raises(pickle.UnpicklingError, match='Namespace'):
        torch.load(odd, map_location='cpu')


def test_load_from_does_not_restore_rng_but_resume_does(tmp_path):
    """The RNG states are restored only by a resume (fine-tuning from a
    checkpoint with load_from keeps the config's seed)."""
    from laud_mm.engine.hooks import rng_state

    class FakeRunner:
        _resume = False

    hook = rng_state.RNGStateHook()
    ck = {rng_state.KEY: [rng_state.capture_rng_state()]}
    hook.after_load_checkpoint(FakeRunner(), ck)
    assert hook._resume_states is None
    FakeRunner._resume = True
    hook.after_load_checkpoint(FakeRunner(), ck)
    assert hook._resume_states is ck[rng_state.KEY]
    # capture -> apply round trip through weights_only serialisation
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    p = tmp_path / 's.pth'
    torch.save(ck | {rng_state.KEY: [rng_state.capture_rng_state()]}, p)
    expect = (torch.rand(3), np.random.rand(3), random.random())
    rng_state.apply_rng_state(torch.load(p, weights_only=True)[rng_state.KEY][0])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expect[0], got[0])
    assert np.array_equal(expect[1], got[1]) and expect[2] == got[2]


class _Draws(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return dict(x=torch.tensor([float(i)]))


def _toy_runner(work, loop, val, workers, resume, draws):
    """A Runner whose model draws ``torch.rand(1)`` on the global generator
    in every training forward, as the Gumbel gates do; checkpoints every 2
    iterations / every epoch, validation right after each (or never)."""
    import uuid

    from mmengine.evaluator import BaseMetric
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    from laud_mm.engine.hooks import WeightsOnlyCheckpointHook
    from laud_mm.engine.hooks.rng_state import RNGStateHook

    class Model(BaseModel):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, x, data_samples=None, mode='tensor'):
            x = torch.stack(x)
            if mode == 'loss':
                noise = torch.rand(1)
                draws.append(float(noise))
                return dict(loss=(self.w * x.sum() * noise).sum())
            return [dict(y=float(v)) for v in (self.w * x).flatten()]

    class Count(BaseMetric):
        def process(self, data_batch, data_samples):
            self.results += data_samples

        def compute_metrics(self, results):
            return dict(n=len(results))

    dl = dict(dataset=_Draws(), batch_size=2, num_workers=0,
              sampler=dict(type='DefaultSampler', shuffle=True))
    train_dl = dict(dl, num_workers=workers, persistent_workers=workers > 0)
    by_epoch = loop == 'epoch'
    every = 1 if by_epoch else 2
    train_cfg = dict(by_epoch=by_epoch, val_interval=every if val else 10**6,
                     **(dict(max_epochs=2) if by_epoch else
                        dict(max_iters=4)))
    return Runner(
        model=Model(), work_dir=str(work), experiment_name=uuid.uuid4().hex,
        train_dataloader=train_dl,
        val_dataloader=dict(dl, sampler=dict(type='DefaultSampler',
                                             shuffle=False)),
        val_evaluator=[Count()], val_cfg=dict(), train_cfg=train_cfg,
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook',
                                           interval=every, by_epoch=by_epoch),
                           logger=dict(type='LoggerHook', interval=100)),
        custom_hooks=[RNGStateHook(), WeightsOnlyCheckpointHook()],
        randomness=dict(seed=0), resume=resume, load_from=None)


@pytest.mark.parametrize('loop, val, workers', [
    ('iter', True, 0), ('epoch', True, 0), ('epoch', False, 1),
    ('epoch', True, 1)])
def test_resume_draws_the_uninterrupted_noise_across_validation_and_workers(
        tmp_path, loop, val, workers):
    """What the shipped configs do between a checkpoint and the next
    iteration: validate (making the val iterator draws from the global
    generator after the checkpoint was written) and, epoch-based with
    persistent workers (mmdet's default), reuse the train iterator that a
    resumed run must make anew (it draws its workers' base seed). A run
    resumed from the checkpoint draws the uninterrupted run's numbers in
    the iterations after it (it drew others before the hook put the
    generators back after validation and deferred a persistent-worker
    restore past the iterator)."""
    import shutil
    ref = []
    _toy_runner(tmp_path / 'ref', loop, val, workers, False, ref).train()
    ckpt = 'epoch_1.pth' if loop == 'epoch' else 'iter_2.pth'
    (tmp_path / 'crash').mkdir()
    shutil.copy(tmp_path / 'ref' / ckpt, tmp_path / 'crash' / ckpt)
    (tmp_path / 'crash' / 'last_checkpoint').write_text(
        str(tmp_path / 'crash' / ckpt))
    res = []
    _toy_runner(tmp_path / 'crash', loop, val, workers, True, res).train()
    done = 4 if loop == 'epoch' else 2  # iterations before the checkpoint
    assert len(ref) == 2 * done and len(res) == done
    assert res == ref[done:]
