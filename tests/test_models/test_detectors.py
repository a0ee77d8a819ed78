"""Every framework the paper covers, from its LAUD config: Faster R-CNN,
RetinaNet, Mask R-CNN, DDQ-DETR and Mask2Former.

For each detector: the model of the full-COCO LAUD config is built, its
optimizer from the config's ``optim_wrapper`` (the backbone lr multiplier is
checked), one training step runs on 2 real coco_tiny images through the
framework's own training pipeline at a small scale (the demo configs' tiny
pipelines, resized to ~256 x 160 / 160 x 160), and a predict step on 2 real
val images goes through ``CocoMetric`` (box, and mask for Mask R-CNN /
Mask2Former) and ``laud_mm.BackboneLatencyMetric``.

Changes to the configs, all through the config (the architectures are
unchanged): for CPU time DDQ-DETR runs with 100 matching queries instead of
900 and Mask2Former with 1568 sampled points per mask instead of 12544; the
backbone starts from random weights (init_cfg=None: the LAUD ImageNet
checkpoints are not available offline); the box score threshold of Faster /
Mask R-CNN and RetinaNet is 0 instead of 0.05, because untrained heads score
below it and CocoMetric needs detections.

A second group of tests parses every detection config and checks the paper's
recipe against its file name (depth, paradigm, granularity, target, lr
multiplier, tau, evaluators, schedule, checkpoint hand-off).
"""
import glob
import os.path as osp
import random
import re

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate

from conftest import COCO_TINY

import laud_mm  # noqa: F401

from conftest import ROOT  # noqa: E402  (the repository root)
FRAMEWORKS = {
    # dir: (config pattern, mmdet class, backbone lr mult, mask AP?)
    'faster_rcnn': ('faster-rcnn_laud-{d}-{p}_t0.5_fpn_1x_coco.py',
                    'FasterRCNN', 0.5, False),
    'retinanet': ('retinanet_laud-{d}-{p}_t0.5_fpn_1x_coco.py',
                  'RetinaNet', 0.2, False),
    'mask_rcnn': ('mask-rcnn_laud-{d}-{p}_t0.5_fpn_1x_coco.py',
                  'MaskRCNN', 0.5, True),
    'ddq': ('ddq-detr-4scale_laud-{d}-{p}_t0.5_8xb2-12e_coco.py',
            'DDQDETR', 0.1, False),
    'mask2former': ('mask2former_laud-{d}-{p}_t0.5_8xb2-lsj-50e_coco.py',
                    'Mask2Former', 0.1, True),
}
TAGS = {'spatial-s4421': ('spatial', (4, 4, 2, 1)),
        'spatial-s4471': ('spatial', (4, 4, 7, 1)),
        'channel-g2': ('channel', (2, 2, 2, 2)),
        'layer': ('layer', None)}
# demo config whose tiny data pipelines each framework's CI step uses
DEMO = {
    'faster_rcnn': 'faster-rcnn_laud-r50-spatial_coco-tiny.py',
    'retinanet': 'retinanet_laud-r50-layer_coco-tiny.py',
    'mask_rcnn': 'mask-rcnn_laud-r50-channel_coco-tiny.py',
    'ddq': 'ddq-detr-4scale_laud-r50-layer_coco-tiny.py',
    'mask2former': 'mask2former_laud-r50-spatial_coco-tiny.py',
}
# paradigm of the CI step per framework: all three paradigms are covered,
# and none repeats the (framework, paradigm) of tests/test_models/test_detector_e2e.py
CI_CASES = [('faster_rcnn', 'channel-g2'), ('retinanet', 'spatial-s4421'),
            ('mask_rcnn', 'layer'), ('ddq', 'spatial-s4421'),
            ('mask2former', 'channel-g2')]
SMALL = (256, 160)   # (w, h) Resize scale of the CI images
LSJ_SMALL = (160, 160)


def _cfg_path(fw, depth, tag):
    return osp.join(ROOT, 'configs', fw,
                    FRAMEWORKS[fw][0].format(d=depth, p=tag))


def _small_pipeline(pipeline, fw, train):
    """The demo's tiny pipeline with every resize scaled down to SMALL."""
    out = []
    for t in pipeline:
        t = dict(t)
        if t['type'] == 'Resize':
            t['scale'] = SMALL
        elif t['type'] == 'RandomChoiceResize':
            t['scales'] = [SMALL]
        elif t['type'] == 'RandomResize':
            t['scale'] = LSJ_SMALL
        elif t['type'] == 'RandomCrop':
            t['crop_size'] = LSJ_SMALL
        out.append(t)
    return out


def _batch(dl_cfg, fw, train, n=2):
    """The first n images of a coco_tiny split through the (shrunk) demo
    pipeline, collated like a dataloader batch."""
    from mmdet.registry import DATASETS
    ds_cfg = dict(dl_cfg['dataset'])
    ds_cfg['pipeline'] = _small_pipeline(ds_cfg['pipeline'], fw, train)
    ds_cfg['indices'] = n
    ds = DATASETS.build(ds_cfg)
    assert len(ds) == n and ds_cfg['data_root'].rstrip('/').endswith(
        'coco_tiny')
    return pseudo_collate([ds[i] for i in range(n)]), ds.metainfo


def _seed(s=0):
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


@pytest.fixture(scope='module')
def mmdet_scope():
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)


@pytest.mark.parametrize('fw,tag', CI_CASES)
def test_train_step_and_coco_evaluation(fw, tag, coco_tiny, mmdet_scope):
    from mmdet.registry import MODELS
    from mmengine.evaluator import Evaluator
    from mmengine.optim import build_optim_wrapper

    _seed(0)
    cfg = Config.fromfile(_cfg_path(fw, 'r50', tag))
    demo = Config.fromfile(osp.join(ROOT, 'configs/demo', DEMO[fw]))
    paradigm, gran = TAGS[tag]
    mcfg = cfg.model
    # laud_weights = None: static torchvision weights, none offline
    assert cfg.laud_weights is None and \
        mcfg.backbone.init_cfg.checkpoint == 'torchvision://resnet50'
    mcfg.backbone.init_cfg = None
    if fw == 'ddq':
        mcfg.num_queries = 100          # 900 in the config (CPU time)
    # untrained heads score below mmdet's 0.05 threshold: keep every box so
    # that CocoMetric has detections to score
    if fw in ('faster_rcnn', 'mask_rcnn'):
        mcfg.test_cfg.rcnn.score_thr = 0.0
    if fw == 'retinanet':
        mcfg.test_cfg.score_thr = 0.0
    if fw == 'mask2former':
        mcfg.train_cfg.num_points = 1568    # 12544 in the config (CPU time)
        mcfg.data_preprocessor.batch_augments[0].size = LSJ_SMALL
    model = MODELS.build(mcfg)
    # as mmengine's Runner does: the detectors' own inits (DDQ-DETR's
    # transformer and focal-prior biases; without them its untrained matching
    # cost could reach NaN) and the maskers' keep bias
    model.init_weights()
    assert type(model).__name__ == 'LAUD' + FRAMEWORKS[fw][1]
    assert model.backbone.paradigm == paradigm
    assert model.backbone.granularity == gran

    # optimizer from the config: backbone params at lr x multiplier
    ow = build_optim_wrapper(model, cfg.optim_wrapper)
    base_lr = cfg.optim_wrapper.optimizer.lr
    bb_ids = {id(p) for p in model.backbone.parameters()}
    mults = {round(g['lr'] / base_lr, 6) for g in ow.optimizer.param_groups
             if any(id(p) in bb_ids for p in g['params'])}
    assert mults == {FRAMEWORKS[fw][2]}, mults

    # one training step on 2 real images through the framework's pipeline
    train_batch, _ = _batch(demo.train_dataloader, fw, True)
    # stage 1 is frozen (frozen_stages=1 in mmdet's configs), the rest train
    maskers = [m for m in model.backbone.maskers()
               if all(p.requires_grad for p in m.parameters())]
    assert maskers, 'no trainable masker'
    before = [p.detach().clone() for m in maskers for p in m.parameters()]
    model.train()
    log_vars = model.train_step(train_batch, ow)
    for key in ('loss', 'loss_sparsity', 'act_rate'):
        assert key in log_vars, (key, sorted(log_vars))
    assert np.isfinite(float(log_vars['loss']))
    assert 0.0 < float(log_vars['act_rate']) <= 1.0 + 1e-6
    after = [p.detach() for m in maskers for p in m.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(after, before)), \
        'the training step did not update any masker'

    # predict on 2 real val images -> CocoMetric + BackboneLatencyMetric
    val_batch, meta = _batch(demo.val_dataloader, fw, False)
    assert [e.type for e in cfg.val_evaluator] == \
        ['CocoMetric', 'laud_mm.BackboneLatencyMetric']
    coco_cfg = cfg.val_evaluator[0]   # its ann_file is data/coco's
    evaluator = Evaluator([
        dict(coco_cfg, ann_file=osp.join(
            COCO_TINY, 'annotations/instances_val2017.json')),
        cfg.val_evaluator[1]])
    evaluator.dataset_meta = meta
    # score the two predicted images only
    evaluator.metrics[0].img_ids = [ds.img_id for ds in
                                    val_batch['data_samples']]
    model.eval()
    with torch.no_grad():
        outputs = model.test_step(val_batch)
    assert len(outputs) == 2
    for o in outputs:
        st = o.metainfo['laud_stats']
        assert len(st['block_density']) == 16
        assert 0 < st['flops'] <= st['dense_flops'] * (1 + 1e-6)
        assert 'bboxes' in o.pred_instances
        if FRAMEWORKS[fw][3]:
            assert 'masks' in o.pred_instances
    evaluator.process(data_samples=outputs, data_batch=val_batch)
    metrics = evaluator.evaluate(2)
    keys = ['coco/bbox_mAP', 'coco/bbox_mAP_50', 'laud/activation_rate',
            'laud/backbone_GFLOPs', 'laud/latency_ms',
            'laud/static_latency_ms', 'laud/speedup']
    if FRAMEWORKS[fw][3]:
        keys += ['coco/segm_mAP', 'coco/segm_mAP_50']
    for k in keys:
        assert k in metrics, (k, sorted(metrics))
    for k in keys:
        if k.startswith('coco/'):
            assert -1.0 <= metrics[k] <= 1.0, (k, metrics[k])   # -1: no GT
    assert 0 < metrics['laud/activation_rate'] <= 1.0 + 1e-6
    assert metrics['laud/latency_ms'] > 0
    assert metrics['laud/speedup'] == pytest.approx(
        metrics['laud/static_latency_ms'] / metrics['laud/latency_ms'])


# --------------------------------------------------------------- configs
def _detection_configs():
    """The LAUD-ResNet detection configs (other backbones, e.g. RegNet, have
    their own tests)."""
    out = []
    for fw in FRAMEWORKS:
        out += sorted(p for p in glob.glob(osp.join(ROOT, 'configs', fw, '*.py'))
                      if re.search(r'_laud-r(50|101)-', osp.basename(p)))
    return out


def test_every_framework_depth_and_paradigm_has_a_config():
    for fw in FRAMEWORKS:
        for depth in ('r50', 'r101'):
            for tag in ('spatial-s4421', 'channel-g2', 'layer'):
                assert osp.isfile(_cfg_path(fw, depth, tag)), \
                    _cfg_path(fw, depth, tag)


@pytest.mark.parametrize('path', _detection_configs(),
                         ids=lambda p: osp.basename(p))
def test_config_follows_the_paper_recipe(path):
    fw = osp.basename(osp.dirname(path))
    name = osp.basename(path)
    m = re.search(r'_laud-(r50|r101)-(spatial-s\d{4}|channel-g2|layer)'
                  r'_t([0-9.]+)_', name)
    assert m, f'{name} does not follow the naming scheme'
    depth, tag, target = int(m.group(1)[1:]), m.group(2), float(m.group(3))
    paradigm, gran = TAGS[tag]
    cfg = Config.fromfile(path)
    model = cfg.model
    assert model.type == 'laud_mm.LAUDDetector'
    assert model.detector == FRAMEWORKS[fw][1]
    bb = model.backbone
    assert (bb.type, bb.depth, bb.paradigm) == \
        ('laud_mm.LAUDResNet', depth, paradigm)
    assert (tuple(bb.granularity) if bb.granularity else None) == gran
    # sparsity term to the target only (authors' detection recipe), weight 1
    sl = model.sparsity_loss
    assert (sl.type, sl.target_rate, sl.loss_weight, sl.block_bounds) == \
        ('laud_mm.SparsityLoss', target, 1.0, False)
    # the temperature follows the weights route (tau0 = tau1 = None: read
    # from the model, laud_mm.models.layers.weights)
    hooks = [h for h in cfg.custom_hooks
             if h.type == 'laud_mm.GumbelTemperatureHook']
    assert len(hooks) == 1 and hooks[0].tau0 is None and \
        hooks[0].tau1 is None
    # backbone lr multiplier
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys['backbone'].lr_mult \
        == FRAMEWORKS[fw][2]
    # weights route: laud_weights at the top, None by default (static
    # torchvision weights of the same depth through the backbone's init_cfg;
    # a LAUD ImageNet checkpoint of configs/imagenet/ when set)
    assert cfg.laud_weights is None and model.laud_weights is None
    init = bb.init_cfg
    assert init.type == 'Pretrained' and \
        init.checkpoint == f'torchvision://resnet{depth}'
    ck_tag = tag if tag != 'spatial-s4471' else 'spatial-s4421'
    assert osp.isfile(osp.join(ROOT, 'configs/imagenet',
                               f'laud-r{depth}-{ck_tag}_8xb128_in1k.py'))
    # evaluators: COCO box (+ mask) AP and the latency metric
    for ev in (cfg.val_evaluator, cfg.test_evaluator):
        types = [e.type for e in ev]
        assert types == ['CocoMetric', 'laud_mm.BackboneLatencyMetric']
        metric = ev[0].metric
        metric = [metric] if isinstance(metric, str) else list(metric)
        assert metric == (['bbox', 'segm'] if FRAMEWORKS[fw][3]
                          else ['bbox'])
    # schedules
    if fw == 'ddq':
        assert cfg.optim_wrapper.optimizer.type == 'AdamW'
        assert cfg.optim_wrapper.optimizer.lr == 2e-4
        assert cfg.train_cfg.max_epochs == 12
    elif fw == 'mask2former':
        assert cfg.optim_wrapper.optimizer.type == 'AdamW'
        # 50 epochs of COCO train2017 (118k images) at batch 16
        assert cfg.train_cfg.max_iters == 368750
        assert tuple(cfg.model.data_preprocessor.batch_augments[0].size) == \
            (1024, 1024)
        rr = [t for t in cfg.train_pipeline if t.type == 'RandomResize'][0]
        assert tuple(rr.scale) == (1024, 1024) and \
            tuple(rr.ratio_range) == (0.1, 2.0)
    else:
        assert cfg.train_cfg.max_epochs == 12
        assert cfg.optim_wrapper.optimizer.type == 'SGD'


@pytest.mark.parametrize('name', sorted(DEMO.values()))
def test_demo_configs_use_coco_tiny(name):
    cfg = Config.fromfile(osp.join(ROOT, 'configs/demo', name))
    assert cfg.model.backbone.init_cfg is None    # no weights offline
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert cfg[key].dataset.data_root == '../shared/data/coco_tiny/', key
    for ev in (cfg.val_evaluator, cfg.test_evaluator):
        assert ev[0].ann_file.startswith('../shared/data/coco_tiny/')
        assert ev[1].type == 'laud_mm.BackboneLatencyMetric'
        if name.startswith(('mask-rcnn', 'mask2former')):
            assert list(ev[0].metric) == ['bbox', 'segm']
    # the pipeline's stage 2 / 3 (docs/detection_demos.md): temperature of
    # the weights route, training gates annealed to the inference gates,
    # measured backbone speed-up at test time
    hooks = {h.type: h for h in cfg.custom_hooks}
    assert list(hooks) == ['laud_mm.GumbelTemperatureHook',
                           'laud_mm.GumbelNoiseHook',
                           'laud_mm.BackboneSpeedHook'], name
    assert hooks['laud_mm.GumbelTemperatureHook'].tau0 is None
    assert (hooks['laud_mm.GumbelNoiseHook'].scale0,
            hooks['laud_mm.GumbelNoiseHook'].scale1) == (1.0, 0.1)


@pytest.mark.parametrize('cfg_name', [
    'faster_rcnn/faster-rcnn_laud-r50-spatial-s4421_t0.5_fpn_1x_coco.py',
    'faster_rcnn/faster-rcnn_laud-regnety-400mf-layer_t0.5_fpn_1x_coco.py'])
def test_frozen_stage_maskers_train_on_the_static_weights_route(cfg_name):
    """mmdet's frozen_stages=1 freezes stage 1 and, in the authors' release,
    its maskers with it. From static ImageNet weights (laud_weights=None,
    the shipped default) those maskers are new: frozen at their keep-biased
    init, stage 1 could never skip. There they train (gradients, Gumbel
    gates in training mode) while stage 1's convolutions stay frozen; from
    a LAUD checkpoint they stay frozen with their stage."""
    from conftest import load_coco_images
    from laud_mm import SparsityLoss
    from laud_mm.registry import MODELS
    cfg = Config.fromfile(osp.join(ROOT, 'configs', cfg_name))
    cfg.model.backbone.init_cfg = None
    assert cfg.model.backbone.frozen_stages == 1 and \
        cfg.model.laud_weights is None
    for route in ('static', 'laud'):
        if route == 'laud':
            cfg.model.laud_weights = 'work_dirs/laud_imagenet.pth'
        bb = MODELS.build(cfg.model).train().backbone
        frozen = [b for b in bb.blocks if b.stage == 0]
        assert frozen and all(not b.training for b in frozen)
        assert not any(p.requires_grad for b in frozen
                       for n, p in b.named_parameters()
                       if not n.startswith('masker.'))
        masker_grad = [p.requires_grad for b in frozen
                       for p in b.masker.parameters()]
        masker_mode = [b.masker.training for b in frozen]
        if route == 'laud':
            assert not any(masker_grad) and not any(masker_mode)
            continue
        assert all(masker_grad) and all(masker_mode)
        bb(load_coco_images(n=2, size=(96, 128)))
        SparsityLoss(0.3)(bb.activation_stats(),
                          progress=1.)['loss_sparsity'].backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0
                   for b in frozen for p in b.masker.parameters()
                   if p.dim() > 1)
        bb.eval()
        assert not any(b.masker.training for b in bb.blocks)
