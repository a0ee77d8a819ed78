"""LAUD detectors on real coco_tiny images through mmengine's Runner:
train steps with the sparsity loss and the temperature hook, evaluation with
COCO mAP and the backbone latency metric, checkpoint save and resume."""
import os.path as osp

import pytest
import torch
from mmengine.runner import Runner

import laud_mm  # noqa: F401

from mmengine.config import Config  # noqa: E402

from conftest import ROOT  # noqa: E402
from reliability_helpers import small_cfg  # noqa: E402


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
