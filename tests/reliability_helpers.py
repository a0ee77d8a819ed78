"""Shared by the reliability tests (test_distributed, test_resume, test_amp,
test_bad_input, test_determinism): a cheap real-data config and small hooks
that record per-rank losses / gate statistics, force gates, kill the process.

The hooks are importable in subprocesses started by the tests (``tools/
train.py``, ``tools/dist_train.sh``): the tests put this directory on
PYTHONPATH and the dumped configs carry
``custom_imports=dict(imports=['laud_mm', 'reliability_helpers'])``.
"""
import json
import os
import os.path as osp
import signal
import socket
import subprocess
import sys
import uuid

import torch
from mmengine.config import Config
from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(HERE)
DEMO = osp.join(ROOT, 'configs/demo/faster-rcnn_laud-r50-spatial_coco-tiny.py')


def small_cfg(work_dir, max_iters=2, n_train=4, n_val=4, config=DEMO,
              tau=(5.0, 0.1)):
    """The demo config cut to a few iterations on a few real images."""
    cfg = Config.fromfile(config)
    cfg.work_dir = str(work_dir)
    if 'laud_weights' in cfg.model:
        # the demo's stage-1 checkpoint is not in a fresh clone: the static
        # route (the demo backbone's init_cfg is None: nothing downloaded)
        cfg.model.laud_weights = None
    # a unique experiment name: mmengine shares its Visualizer / MessageHub
    # instances between Runners of the same name (config name + second)
    cfg.experiment_name = f'{osp.basename(str(work_dir))}_{uuid.uuid4().hex}'
    if cfg.get('visualizer') is not None:
        # mmdet/mmpretrain name their visualizer 'visualizer': a second Runner
        # in the process would reuse the first one and log into its work dir
        cfg.visualizer.name = cfg.experiment_name
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters,
                         val_interval=10 ** 6)
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1,
                                        by_epoch=False)
    cfg.default_hooks.logger.interval = 1
    cfg.custom_hooks = [dict(type='laud_mm.GumbelTemperatureHook',
                             tau0=tau[0], tau1=tau[1])]
    for key, n in (('train_dataloader', n_train), ('val_dataloader', n_val)):
        dl = cfg[key]
        dl.num_workers = 0
        dl.persistent_workers = False
        dl.dataset.indices = n
        dl.dataset.pipeline[1 if key == 'val_dataloader' else 2] = dict(
            type='Resize', scale=(256, 160), keep_ratio=True)
    cfg.test_dataloader = cfg.val_dataloader
    cfg.randomness = dict(seed=0)
    return cfg


def fast_cfg(work_dir, max_iters=2, n_train=4, n_val=4, scale=(256, 160),
             batch=2, val_batch=1, flip=False, tau=(5.0, 0.1),
             config=None):
    """:func:`small_cfg` (the demo Faster R-CNN LAUD-R50 spatial config on
    a few real coco_tiny images) with CPU-time knobs.

    Only cost knobs change: RPN proposals and RoI samples per image (the RoI
    head dominates CPU time at this image size), no random flip by default
    (flip draws from numpy's global generator; tests comparing runs with
    different process layouts need the same pixels), batch sizes, scale.
    The backbone, gates, sparsity loss and temperature hook are the demo's.
    """
    kwargs = {} if config is None else dict(config=config)
    cfg = small_cfg(work_dir, max_iters=max_iters, n_train=n_train,
                    n_val=n_val, tau=tau, **kwargs)
    for key in ('train_dataloader', 'val_dataloader'):
        pipe = cfg[key].dataset.pipeline
        for t in pipe:
            if t['type'] == 'Resize':
                t['scale'] = scale
        if not flip:
            cfg[key].dataset.pipeline = [t for t in pipe
                                         if t['type'] != 'RandomFlip']
    cfg.train_dataloader.batch_size = batch
    cfg.val_dataloader.batch_size = val_batch
    cfg.test_dataloader = cfg.val_dataloader
    m = cfg.model
    if 'rpn_proposal' in m.get('train_cfg', {}):
        m.train_cfg.rpn_proposal.update(nms_pre=400, max_per_img=200)
        m.train_cfg.rcnn.sampler.num = 128
        m.test_cfg.rpn.update(nms_pre=300, max_per_img=100)
        m.test_cfg.rcnn.max_per_img = 50
    cfg.default_hooks.checkpoint.save_optimizer = True
    return cfg


def dump_cfg(cfg, path, extra_hooks=()):
    """Write ``cfg`` as a .py config for a subprocess, with this module
    imported and ``extra_hooks`` appended to custom_hooks."""
    cfg = cfg.copy()
    cfg.custom_imports = dict(imports=['laud_mm', 'reliability_helpers'],
                              allow_failed_imports=False)
    cfg.custom_hooks = list(cfg.custom_hooks) + list(extra_hooks)
    cfg.dump(str(path))
    return str(path)


def subprocess_env(threads=1):
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [ROOT, HERE] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    env['OMP_NUM_THREADS'] = str(threads)
    env['MKL_NUM_THREADS'] = str(threads)
    return env


def run_tool(args, timeout=600, threads=1, check=True, env_extra=None):
    """Run a repository command (``['tools/train.py', ...]`` with python,
    or ``['bash', 'tools/dist_train.sh', ...]``); returns CompletedProcess."""
    cmd = args if args[0] == 'bash' else [sys.executable] + list(args)
    env = subprocess_env(threads)
    env.update(env_extra or {})
    proc = subprocess.run(cmd, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f'{cmd} failed with {proc.returncode}:\n'
                             f'{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}')
    return proc


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def read_records(work_dir, rank=0):
    """The per-iteration records of :class:`RecordTrainHook`."""
    path = osp.join(str(work_dir), f'records_rank{rank}.jsonl')
    with open(path) as f:
        return [json.loads(line) for line in f]


def read_json_log(work_dir):
    """mmengine's json training log (list of dicts, one per logged step)
    of the (single) run in ``work_dir``; several runs: concatenated in
    time order."""
    out = []
    for ts in sorted(os.listdir(str(work_dir))):
        p = osp.join(str(work_dir), ts, 'vis_data', 'scalars.json')
        if osp.isfile(p):
            with open(p) as f:
                out += [json.loads(line) for line in f if line.strip()]
    return out


def read_test_json(work_dir):
    """The metrics ``tools/test.py`` logged (mmengine's LoggerHook dumps the
    test epoch to ``{work_dir}/{timestamp}/{timestamp}.json``)."""
    found = []
    for ts in sorted(os.listdir(str(work_dir))):
        p = osp.join(str(work_dir), ts, f'{ts}.json')
        if osp.isfile(p):
            with open(p) as f:
                found.append(json.load(f))
    return found


def unwrap(runner):
    return runner.model.module if is_model_wrapper(runner.model) \
        else runner.model


@HOOKS.register_module(force=True)
class RecordTrainHook(Hook):
    """After every training iteration, append to ``records_rank{r}.jsonl``
    in the work dir: the 1-based iteration, this rank's losses (the
    un-reduced log_vars of its own batch), tau, lr, the backbone's activation
    rate per sample and per-block densities, and whether every gate / rate /
    loss is finite. Before training, write ``env_rank{r}.json`` (model
    wrapper type, find_unused_parameters, world size)."""

    priority = 'LOWEST'

    def before_train(self, runner):
        model = runner.model
        info = dict(wrapper=type(model).__name__,
                    find_unused_parameters=getattr(
                        model, 'find_unused_parameters', None),
                    world_size=get_world_size(), rank=get_rank(),
                    iter=runner.iter,
                    optim_wrapper=type(runner.optim_wrapper).__name__)
        with open(osp.join(runner.work_dir, f'env_rank{get_rank()}.json'),
                  'w') as f:
            json.dump(info, f)
        # the dtype the backbone computes in (autocast shows here)
        self._dtype = None

        def grab(module, args, out):
            self._dtype = str(out[0].dtype)
        unwrap(runner).backbone.register_forward_hook(grab)

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        bb = unwrap(runner).backbone
        st = bb.activation_stats()
        gates = [b.last_stats['gate'] for b in bb.blocks
                 if b.last_stats['gate'] is not None]
        rec = dict(
            iter=runner.iter + 1, rank=get_rank(),
            losses={k: float(torch.as_tensor(v).detach())
                    for k, v in (outputs or {}).items()},
            tau=float(bb.maskers()[0].tau),
            lr=float(runner.optim_wrapper.get_lr()['lr'][0]),
            act_rate=st['activation_rate'].detach().float().tolist(),
            density=[float(d.detach().float().mean())
                     for d in st['block_density']],
            finite=bool(all(torch.isfinite(g).all() for g in gates) and
                        torch.isfinite(st['activation_rate']).all() and
                        all(torch.isfinite(torch.as_tensor(v).detach()).all()
                            for v in (outputs or {}).values())),
            feat_dtype=getattr(self, '_dtype', None),
            img_ids=[ds.metainfo.get('img_id') for ds in
                     data_batch['data_samples']] if data_batch else None)
        with open(osp.join(runner.work_dir, f'records_rank{get_rank()}.jsonl'),
                  'a') as f:
            f.write(json.dumps(rec) + '\n')


@HOOKS.register_module(force=True)
class ForceGatesHook(Hook):
    """Impose ``value`` on every gate of the named blocks (e.g.
    ``['layer3.1', 'layer3.2']``; 0.0 skips the whole residual branch)."""

    def __init__(self, blocks, value=0.0):
        self.blocks, self.value = list(blocks), value

    def _apply(self, runner):
        bb = unwrap(runner).backbone
        for name in self.blocks:
            stage, idx = name.split('.')
            getattr(bb, stage)[int(idx)].masker.forced_gate = self.value

    def before_train(self, runner):
        self._apply(runner)

    def before_val(self, runner):
        self._apply(runner)

    def before_test(self, runner):
        self._apply(runner)


@HOOKS.register_module(force=True)
class MixedGatesHook(Hook):
    """At the start of a fresh run (not on resume: the checkpoint has the
    weights) set every masker's keep/skip biases equal, so that the gates
    start data-dependent and mixed instead of all on (keep bias +5), making
    Gumbel noise and per-image densities matter in the tests."""

    def before_train(self, runner):
        if runner.iter == 0:
            mixed_gates(unwrap(runner).backbone)


def mixed_gates(backbone):
    with torch.no_grad():
        for m in backbone.maskers():
            layer = getattr(m, 'conv', None) or getattr(m, 'fc2', None) or m.fc
            layer.bias.zero_()


@HOOKS.register_module(force=True)
class KillAtIterHook(Hook):
    """SIGKILL this process at the start of iteration ``at`` (0-based):
    no clean-up, no checkpoint, like a node failure."""

    def __init__(self, at):
        self.at = at

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter == self.at:
            os.kill(os.getpid(), signal.SIGKILL)


@HOOKS.register_module(force=True)
class ReplayRNGHook(Hook):
    """Single-process stand-in for ``every`` DDP ranks: every micro-batch of
    an accumulation group starts from the generator state of the group's
    first one, as every rank of a ``diff_rank_seed=False`` DDP run starts
    from the same state."""

    priority = 'HIGHEST'

    def __init__(self, every=2):
        self.every, self._state = every, None

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter % self.every == 0:
            self._state = torch.get_rng_state()
        else:
            torch.set_rng_state(self._state)
