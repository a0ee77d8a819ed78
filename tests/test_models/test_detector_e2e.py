"""LAUD detectors on real coco_tiny images through mmengine's Runner:
train steps with the sparsity loss and the temperature hook, evaluation with
COCO mAP and the backbone latency metric, checkpoint save and resume."""
import os.path as osp
import uuid

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

import laud_mm  # noqa: F401

from conftest import ROOT  # noqa: E402  (the repository root)
DEMO = osp.join(ROOT, 'configs/demo/faster-rcnn_laud-r50-spatial_coco-tiny.py')


def small_cfg(work_dir, max_iters=2, n_train=4, n_val=4, config=DEMO,
              tau=(5.0, 0.1)):
    """The demo config cut to a few iterations on a few real images."""
    cfg = Config.fromfile(config)
    cfg.work_dir = str(work_dir)
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
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
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


def test_train_evaluate_and_resume(tmp_path):
    cfg = small_cfg(tmp_path / 'run', max_iters=2)
    runner = Runner.from_cfg(cfg)
    runner.train()
    hub = runner.message_hub
    # loss_sparsity and act_rate are in the training log
    assert 'train/loss_sparsity' in hub.log_scalars
    assert 'train/act_rate' in hub.log_scalars
    tau = hub.get_scalar('train/gumbel_tau').current()
    assert tau == pytest.approx(5.0 * (0.1 / 5.0) ** (1 / 2))
    # evaluation: COCO mAP and the latency metric on one result dict
    metrics = runner.val()
    for key in ('coco/bbox_mAP', 'laud/activation_rate', 'laud/backbone_GFLOPs',
                'laud/latency_ms', 'laud/static_latency_ms', 'laud/speedup'):
        assert key in metrics, key
    assert 0 < metrics['laud/activation_rate'] <= 1.0 + 1e-6
    assert metrics['laud/latency_ms'] > 0 and metrics['laud/static_latency_ms'] > 0
    # determinism: a second evaluation gives identical metrics
    assert runner.val() == metrics

    # resume from iteration 1 and run to 3: iteration, tau and the optimizer
    # state continue where they stopped
    ckpt1 = osp.join(cfg.work_dir, 'iter_1.pth')
    cfg2 = small_cfg(tmp_path / 'resumed', max_iters=3)
    cfg2.resume, cfg2.load_from = True, ckpt1
    runner2 = Runner.from_cfg(cfg2)
    runner2.train()
    assert runner2.iter == 3
    tau3 = runner2.message_hub.get_scalar('train/gumbel_tau').current()
    assert tau3 == pytest.approx(5.0 * (0.1 / 5.0) ** (2 / 3))
    saved = torch.load(ckpt1, map_location='cpu')  # weights_only default
    assert saved['meta']['iter'] == 1
    assert any('masker' in k for k in saved['state_dict'])


def test_single_stage_retinanet_train_step_and_predict(coco_tiny):
    cfg = Config.fromfile(osp.join(
        ROOT, 'configs/demo/retinanet_laud-r50-layer_coco-tiny.py'))
    model_cfg = cfg.model
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    model = MODELS.build(model_cfg)
    assert type(model).__name__ == 'LAUDRetinaNet'
    runner_cfg = small_cfg('/tmp/unused', config=osp.join(
        ROOT, 'configs/demo/retinanet_laud-r50-layer_coco-tiny.py'))
    from mmengine.registry import DATASETS
    ds = DATASETS.build(runner_cfg.train_dataloader.dataset)
    from mmengine.dataset import pseudo_collate
    batch = pseudo_collate([ds[0], ds[1]])
    model.train()
    data = model.data_preprocessor(batch, True)
    losses = model(**data, mode='loss')
    assert 'loss_sparsity' in losses and 'loss_cls' in losses
    total, log_vars = model.parse_losses(losses)
    assert 'loss_sparsity' in log_vars and 'act_rate' in log_vars
    total.backward()
    assert all(p.grad is not None for p in model.backbone.layer2[0].masker.parameters())
    model.eval()
    with torch.no_grad():
        out = model(**model.data_preprocessor(batch, False), mode='predict')
    st = out[0].metainfo['laud_stats']
    assert len(st['block_density']) == 16 and st['flops'] <= st['dense_flops']
