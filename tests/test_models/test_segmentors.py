"""mmseg segmentors with a LAUD backbone (``laud_mm.LAUDSegmentor``), on
real coco_tiny images as semantic segmentation (background + 80 COCO thing
classes, crowd regions ignored; ``laud_mm.COCOSemanticDataset`` writes the
label maps into a temporary directory).

- DeepLabV3+ (the demo config's model, dilated LAUD-R50): a training step
  through the demo's data pipeline gives mmseg's losses, ``loss_sparsity``
  and ``act_rate`` and moves the maskers; prediction attaches
  ``laud_stats``; ``IoUMetric`` and ``laud_mm.BackboneLatencyMetric`` give
  ``mIoU`` and the ``laud/`` figures in one result (one log line);
- dynamic inference gives the masked-dense predictions (label maps equal,
  logits to 1e-4) at output stride 8 in each paradigm, with mixed gates;
- mmseg's Mask2Former (semantic) from its LAUD config: a training step and a
  prediction;
- every segmentation config parses, follows the recipe its name states
  (weights route ``laud_weights=None``: torchvision's ResNet of its depth,
  temperature from the route) and one UPerNet config builds and predicts
  offline; config errors name the key;
- the weights route (``laud_weights``, laud_mm/models/layers/weights.py) of
  the segmentor: a LAUD checkpoint file loads into the backbone, maskers
  included, with tau fixed at 0.1; None keeps the static init_cfg with tau
  annealed 5 -> 0.1; a missing file is refused naming ``laud_weights``.

The backbones start from random weights (the LAUD ImageNet checkpoints are
not available offline). Source: docs/segmentation.md.
"""
import glob
import os.path as osp
import random
import re
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.dataset import pseudo_collate

from conftest import ROOT

import laud_mm  # noqa: F401

DEMO = osp.join(ROOT, 'configs/demo/'
                'deeplabv3plus_laud-r50-d16-spatial_coco-tiny-semantic.py')
SEG = osp.join(ROOT, 'configs/segmentation')
TAGS = {'spatial-s4421': ('spatial', (4, 4, 2, 1)),
        'channel-g2': ('channel', (2, 2, 2, 2)),
        'layer': ('layer', None)}
FRAMEWORKS = {  # dir: (mmseg decode head, backbone lr multiplier, dilated)
    'upernet': ('UPerHead', 0.5, False),
    'deeplabv3plus': ('DepthwiseSeparableASPPHead', 0.5, True),
    'mask2former': ('Mask2FormerHead', 0.1, False),
}
LATENCY_KEYS = ('laud/activation_rate', 'laud/backbone_GFLOPs',
                'laud/latency_ms', 'laud/static_latency_ms', 'laud/speedup')


def _seed(s=0):
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


@pytest.fixture(scope='module')
def mmseg_scope():
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=True)


@pytest.fixture(scope='module')
def one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope='module')
def label_root(tmp_path_factory, coco_tiny):
    return str(tmp_path_factory.mktemp('coco_tiny_semantic'))


def _batch(dl_cfg, label_root, n=2, scale=None):
    """The first n images of a split through the demo's pipeline (its label
    maps written into ``label_root``), collated like a dataloader batch."""
    from mmseg.registry import DATASETS
    ds_cfg = dict(dl_cfg['dataset'])
    split = osp.basename(ds_cfg['data_prefix']['img_path'].rstrip('/'))
    ds_cfg['data_prefix'] = dict(ds_cfg['data_prefix'],
                                 seg_map_path=osp.join(label_root, split))
    if scale is not None:
        ds_cfg['pipeline'] = [dict(t, scale=scale) if t['type'] == 'Resize'
                              else t for t in ds_cfg['pipeline']]
    ds_cfg['indices'] = n
    ds = DATASETS.build(ds_cfg)
    assert len(ds) == n
    return pseudo_collate([ds[i] for i in range(n)]), ds.metainfo


def _demo_model_cfg(**backbone):
    cfg = Config.fromfile(DEMO)
    mcfg = cfg.model
    assert mcfg.laud_weights == 'work_dirs/demo/stage1_spatial_t0.5.pth'
    assert mcfg.backbone.init_cfg is None
    mcfg.laud_weights = None      # no stage-1 checkpoint in CI
    mcfg.backbone.update(backbone)
    return cfg, mcfg


def test_demo_train_step_and_miou_with_latency_on_one_line(
        mmseg_scope, label_root, one_thread):
    from mmengine.evaluator import Evaluator
    from mmengine.optim import build_optim_wrapper
    from mmseg.registry import MODELS
    _seed(0)
    cfg, mcfg = _demo_model_cfg()
    model = MODELS.build(mcfg)
    model.init_weights()
    assert type(model).__name__ == 'LAUDEncoderDecoder'
    bb = model.backbone
    assert (bb.paradigm, bb.granularity) == ('spatial', (4, 4, 2, 1))
    assert [b.dilation for b in bb.blocks][-3:] == [1, 2, 2]  # d16
    ow = build_optim_wrapper(model, cfg.optim_wrapper)

    train_batch, _ = _batch(cfg.train_dataloader, label_root)
    maskers = bb.maskers()
    before = [p.detach().clone() for m in maskers for p in m.parameters()]
    model.train()
    log_vars = model.train_step(train_batch, ow)
    for key in ('loss', 'decode.loss_ce', 'aux.loss_ce', 'loss_sparsity',
                'act_rate'):
        assert key in log_vars, (key, sorted(log_vars))
    assert np.isfinite(float(log_vars['loss']))
    assert 0.0 < float(log_vars['act_rate']) <= 1.0 + 1e-6
    after = [p.detach() for m in maskers for p in m.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(after, before)), \
        'the training step did not update any masker'

    val_batch, meta = _batch(cfg.val_dataloader, label_root)
    assert [e.type for e in cfg.val_evaluator] == \
        ['IoUMetric', 'laud_mm.BackboneLatencyMetric']
    evaluator = Evaluator(cfg.val_evaluator)
    evaluator.dataset_meta = meta
    model.eval()
    for i in range(2):   # mmseg evaluates one image per batch
        one = {k: v[i:i + 1] for k, v in val_batch.items()}
        with torch.no_grad():
            outputs = model.val_step(one)
        o = outputs[0]
        st = o.metainfo['laud_stats']
        assert len(st['block_density']) == 16
        assert 0 < st['flops'] <= st['dense_flops'] * (1 + 1e-6)
        assert o.pred_sem_seg.data.shape[-2:] == o.gt_sem_seg.data.shape[-2:]
        evaluator.process(data_samples=outputs, data_batch=one)
    metrics = evaluator.evaluate(2)   # one dict: one log line
    for k in ('mIoU',) + LATENCY_KEYS:
        assert k in metrics, (k, sorted(metrics))
    assert 0 <= metrics['mIoU'] <= 100
    assert 0 < metrics['laud/activation_rate'] <= 1.0 + 1e-6
    assert metrics['laud/speedup'] == pytest.approx(
        metrics['laud/static_latency_ms'] / metrics['laud/latency_ms'])


def _randomize(model, seed):
    """Random BN statistics (non-trivial folding) and masker weights that
    give mixed gates (as the family contract's exactness clause)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, m in model.backbone.named_modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g) * 0.6 + 0.2)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            elif 'masker' in name and isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) /
                               m.weight[0].numel() ** 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


@pytest.mark.parametrize('tag', sorted(TAGS))
def test_dynamic_inference_gives_the_masked_dense_predictions(
        tag, mmseg_scope, label_root, one_thread):
    """Output stride 8 (dilations 1-1-2-4, contract_dilation) on real
    images: the dilated blocks of every paradigm on the dynamic path."""
    from mmseg.registry import MODELS
    paradigm, gran = TAGS[tag]
    _seed(0)
    cfg, mcfg = _demo_model_cfg(
        paradigm=paradigm, granularity=gran, strides=(1, 2, 1, 1),
        dilations=(1, 1, 2, 4), contract_dilation=True)
    model = MODELS.build(mcfg)
    model.init_weights()
    _randomize(model, 1)
    model.eval()
    batch, _ = _batch(cfg.val_dataloader, label_root, n=3, scale=(160, 96))
    results = {False: [], True: []}
    for i in range(3):   # mmseg evaluates one image per batch
        one = {k: v[i:i + 1] for k, v in batch.items()}
        for dyn in (False, True):
            model.backbone.dynamic_inference = dyn
            with torch.no_grad():
                results[dyn] += model.test_step(one)
    gates = torch.cat([b.last_stats['gate'].flatten()
                       for b in model.backbone.blocks])
    assert 0 < float(gates.mean()) < 1, 'gates not mixed'
    for ref, out in zip(results[False], results[True]):
        a, b = out.seg_logits.data, ref.seg_logits.data
        tol = 1e-4 * max(1., float(b.abs().max()))
        assert (a - b).abs().max() <= tol
        # the label maps are equal wherever the masked-dense top-2 logits
        # differ by more than the float rounding of BN folding (the random
        # heads here leave near-ties; a trained head has few)
        top2 = b.topk(2, dim=0).values
        decided = (top2[0] - top2[1]) > 2 * tol
        same = out.pred_sem_seg.data[0] == ref.pred_sem_seg.data[0]
        assert bool(same[decided].all())
        assert float(same.float().mean()) > 0.99
        sa, sb = out.metainfo['laud_stats'], ref.metainfo['laud_stats']
        assert sa['block_density'] == sb['block_density']
        assert sa['flops'] == pytest.approx(sb['flops'])
        assert [g.dilation for g in sa['geometries']][-3:] == [2, 4, 4]


def test_mmseg_mask2former_train_step_and_prediction(
        mmseg_scope, label_root, one_thread):
    from mmengine.optim import build_optim_wrapper
    from mmseg.registry import MODELS
    _seed(0)
    cfg = Config.fromfile(osp.join(
        SEG, 'mask2former',
        'mask2former_laud-r50-spatial-s4421_t0.5_8xb2-160k_ade20k-512x512.py'))
    demo = Config.fromfile(DEMO)
    mcfg = cfg.model
    mcfg.backbone.init_cfg = None
    mcfg.backbone.norm_cfg = dict(type='BN', requires_grad=False)
    mcfg.data_preprocessor.size = (96, 96)
    mcfg.decode_head.num_classes = 81
    mcfg.decode_head.loss_cls.class_weight = [1.0] * 81 + [0.1]
    mcfg.decode_head.train_cfg.num_points = 1568   # 12544 (CPU time)
    model = MODELS.build(mcfg)
    model.init_weights()
    assert type(model).__name__ == 'LAUDEncoderDecoder'
    ow = build_optim_wrapper(model, cfg.optim_wrapper)
    bb_ids = {id(p) for p in model.backbone.parameters()}
    base_lr = cfg.optim_wrapper.optimizer.lr
    assert {round(g['lr'] / base_lr, 6) for g in ow.optimizer.param_groups
            if any(id(p) in bb_ids for p in g['params'])} == {0.1}
    dl = demo.train_dataloader
    dl.dataset.pipeline = [
        dict(t, crop_size=(96, 96)) if t['type'] == 'RandomCrop' else
        dict(t, scale=(160, 96)) if t['type'] == 'RandomResize' else t
        for t in dl.dataset.pipeline]
    batch, _ = _batch(dl, label_root)
    model.train()
    log_vars = model.train_step(batch, ow)
    assert 'loss_sparsity' in log_vars and 'act_rate' in log_vars
    assert np.isfinite(float(log_vars['loss']))
    val_batch, _ = _batch(demo.val_dataloader, label_root, n=1,
                          scale=(128, 96))
    model.eval()
    with torch.no_grad():
        out = model.test_step(val_batch)
    assert 'laud_stats' in out[0].metainfo
    assert out[0].pred_sem_seg.data.max() <= 80


def test_segmentor_errors_name_the_key(mmseg_scope, tmp_path):
    from mmseg.registry import MODELS
    _, mcfg = _demo_model_cfg()
    missing = str(tmp_path / 'no_such.pth')
    model = MODELS.build(dict(mcfg, laud_weights=missing))  # builds offline
    with pytest.raises(ValueError) as e:
        model.init_weights()  # training start: the file is needed
    msg = str(e.value)
    assert msg.startswith('LAUDSegmentor: laud_weights=') and \
        'no_such.pth' in msg and 'no such file' in msg
    assert 'LAUD ImageNet checkpoint' in msg and 'laud_weights=None' in msg
    with pytest.raises(ValueError, match='laud_weights=3'):
        MODELS.build(dict(mcfg, laud_weights=3))
    with pytest.raises(ValueError, match=r"segmentor='FCNHead' is not an "
                                         r'mmseg EncoderDecoder'):
        MODELS.build(dict(mcfg, segmentor='FCNHead'))
    with pytest.raises(ValueError, match='paradigm=None'):
        MODELS.build(dict(mcfg, backbone=dict(mcfg.backbone, paradigm=None,
                                              granularity=None)))
    with pytest.raises(TypeError, match='needs a LAUD backbone'):
        MODELS.build(dict(mcfg, backbone=dict(type='ResNetV1c', depth=50)))
    model = MODELS.build(dict(mcfg, test_cfg=dict(
        mode='slide', crop_size=(64, 64), stride=(32, 32)))).eval()
    with pytest.raises(ValueError, match=r"test_cfg.mode='slide'"):
        with torch.no_grad():
            model.predict(torch.zeros(1, 3, 64, 64))


# --------------------------------------------------------- weights route
def _tau_hook_on(model):
    """The runtime's GumbelTemperatureHook (tau0 = tau1 = None) after
    ``before_train`` on ``model``, and what it logged."""
    from laud_mm import GumbelTemperatureHook
    hook_cfg = Config.fromfile(DEMO).custom_hooks
    hook_cfg = [h for h in hook_cfg
                if h.type == 'laud_mm.GumbelTemperatureHook']
    assert len(hook_cfg) == 1
    assert hook_cfg[0].tau0 is None and hook_cfg[0].tau1 is None
    logged = []
    runner = SimpleNamespace(model=model,
                             logger=SimpleNamespace(info=logged.append))
    hook = GumbelTemperatureHook(tau0=None, tau1=None)
    hook.before_train(runner)
    return hook, logged


def test_static_route_keeps_the_init_cfg_and_anneals_tau(mmseg_scope):
    from mmseg.registry import MODELS
    cfg = Config.fromfile(osp.join(
        SEG, 'upernet',
        'upernet_laud-r50-layer_t0.5_4xb4-160k_ade20k-512x512.py'))
    assert cfg.model.laud_weights is None
    model = MODELS.build(cfg.model)   # nothing downloaded at build time
    assert model.backbone.init_cfg == dict(
        type='Pretrained', checkpoint='torchvision://resnet50')
    assert model.laud_weights_route == 'static ImageNet weights'
    assert model.laud_tau_schedule == (5.0, 0.1)
    hook, logged = _tau_hook_on(model)
    assert hook.tau_at(0, 10) == pytest.approx(5.0)
    assert hook.tau_at(10, 10) == pytest.approx(0.1)
    assert 'static ImageNet weights' in logged[0]


def test_laud_checkpoint_route_loads_the_backbone_maskers_included(
        mmseg_scope, tmp_path):
    """A LAUD ImageNet checkpoint as the classifier writes it (keys
    'backbone.*' and the classifier's head) in a local file: every
    backbone tensor of the segmentor, maskers included, becomes the
    file's; the heads keep their own initialisation."""
    from mmseg.registry import MODELS
    _seed(0)
    _, mcfg = _demo_model_cfg()
    ref = {k: torch.randn_like(v) if v.is_floating_point() else v
           for k, v in MODELS.build(mcfg).backbone.state_dict().items()}
    ckpt = str(tmp_path / 'laud_in1k.pth')
    torch.save({'state_dict': dict(
        {'backbone.' + k: v for k, v in ref.items()},
        **{'head.fc.weight': torch.randn(10, 2048),
           'head.fc.bias': torch.randn(10)}), 'meta': {}}, ckpt)
    model = MODELS.build(dict(mcfg, laud_weights=ckpt))
    assert model.laud_weights_route == 'LAUD ImageNet checkpoint'
    assert model.laud_tau_schedule == (0.1, 0.1)
    assert model.backbone.init_cfg == dict(type='Pretrained',
                                           prefix='backbone.',
                                           checkpoint=ckpt)
    masker_keys = [k for k in ref if '.masker.' in k]
    assert masker_keys
    k = masker_keys[0]
    assert not torch.equal(model.backbone.state_dict()[k], ref[k])
    model.init_weights()
    loaded = model.backbone.state_dict()
    assert torch.equal(loaded[k], ref[k])   # a masker weight: the file's
    for key, v in loaded.items():
        assert torch.equal(v, ref[key]), key
    hook, logged = _tau_hook_on(model)
    assert hook.tau_at(0, 10) == hook.tau_at(10, 10) == pytest.approx(0.1)
    assert 'LAUD ImageNet checkpoint' in logged[0]


# --------------------------------------------------------------- configs
def _seg_configs():
    return sorted(glob.glob(osp.join(SEG, '*', '*.py')))


def test_every_framework_dataset_depth_and_paradigm_has_a_config():
    names = {osp.basename(p) for p in _seg_configs()}
    assert len(names) == 3 * 2 * 2 * 3
    for fw in FRAMEWORKS:
        for ds in ('ade20k', 'cityscapes'):
            for depth in ('r50', 'r101'):
                for tag in TAGS:
                    assert any(n.startswith(f'{fw}_laud-{depth}') and
                               f'-{tag}_t0.5_' in n and ds in n
                               for n in names), (fw, ds, depth, tag)


@pytest.mark.parametrize('path', _seg_configs(),
                         ids=lambda p: osp.basename(p))
def test_config_follows_its_recipe(path):
    fw = osp.basename(osp.dirname(path))
    name = osp.basename(path)
    m = re.search(r'_laud-(r50|r101)(-d8)?-(spatial-s4421|channel-g2|layer)'
                  r'_t([0-9.]+)_.*_(ade20k|cityscapes)-', name)
    assert m, f'{name} does not follow the naming scheme'
    depth, tag, target = int(m.group(1)[1:]), m.group(3), float(m.group(4))
    paradigm, gran = TAGS[tag]
    cfg = Config.fromfile(path)
    assert 'laud_mm' in cfg.custom_imports.imports
    model = cfg.model
    assert (model.type, model.segmentor) == ('laud_mm.LAUDSegmentor',
                                             'EncoderDecoder')
    assert model.decode_head.type == FRAMEWORKS[fw][0]
    assert model.get('pretrained') is None
    bb = model.backbone
    assert (bb.type, bb.depth, bb.paradigm) == \
        ('laud_mm.LAUDResNet', depth, paradigm)
    assert (tuple(bb.granularity) if bb.granularity else None) == gran
    assert bb.get('norm_eval') is False
    if FRAMEWORKS[fw][2]:   # DeepLabV3+: output stride 8
        assert m.group(2) == '-d8'
        assert (tuple(bb.strides), tuple(bb.dilations),
                bb.contract_dilation) == ((1, 2, 1, 1), (1, 1, 2, 4), True)
    sl = model.sparsity_loss
    assert (sl.type, sl.target_rate, sl.loss_weight, sl.block_bounds) == \
        ('laud_mm.SparsityLoss', target, 1.0, False)
    # the temperature schedule of the model's weights route
    hooks = [h for h in cfg.custom_hooks
             if h.type == 'laud_mm.GumbelTemperatureHook']
    assert len(hooks) == 1 and hooks[0].tau0 is None and \
        hooks[0].tau1 is None
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys['backbone'].lr_mult \
        == FRAMEWORKS[fw][1]
    # weights route: laud_weights=None, static torchvision weights of the
    # config's depth (LAUDResNet has torchvision's 7x7 stem)
    assert cfg.laud_weights is None and model.laud_weights is None
    assert bb.init_cfg.to_dict() == dict(
        type='Pretrained', checkpoint=f'torchvision://resnet{depth}')
    # the LAUD ImageNet checkpoint of the same depth and paradigm, named
    # in the file's comment
    ck = f'work_dirs/laud-r{depth}-{tag}_8xb128_in1k/epoch_100.pth'
    with open(path) as f:
        assert f"#   laud_weights = '{ck}'" in f.read()
    assert osp.isfile(osp.join(ROOT, 'configs/imagenet',
                               f'laud-r{depth}-{tag}_8xb128_in1k.py'))
    for ev in (cfg.val_evaluator, cfg.test_evaluator):
        assert [e.type for e in ev] == ['IoUMetric',
                                        'laud_mm.BackboneLatencyMetric']
    assert cfg.default_hooks.logger.type == 'laud_mm.MainProcessLoggerHook'
    assert cfg.model.test_cfg.mode == 'whole'


def test_a_upernet_config_builds_and_predicts_offline(mmseg_scope,
                                                      one_thread):
    from mmseg.registry import MODELS
    cfg = Config.fromfile(osp.join(
        SEG, 'upernet',
        'upernet_laud-r101-channel-g2_t0.5_4xb2-80k_cityscapes-512x1024.py'))
    model = MODELS.build(cfg.model).eval()   # no download at build time
    assert model.backbone.depth == 101
    assert model.backbone.init_cfg == dict(
        type='Pretrained', checkpoint='torchvision://resnet101')
    assert model.laud_tau_schedule == (5.0, 0.1)
    with torch.no_grad():
        out = model.predict(torch.randn(1, 3, 64, 96))
    assert out[0].pred_sem_seg.data.shape[-2:] == (64, 96)
    assert len(out[0].metainfo['laud_stats']['block_density']) == 33


@pytest.mark.parametrize('name', ['upernet_laud-r101-channel-g2_t0.5_4xb2'
                                  '-80k_cityscapes-512x1024.py',
                                  'mask2former_laud-r101-layer_t0.5_8xb2'
                                  '-160k_ade20k-512x512.py'])
def test_laud_weights_set_in_an_r101_config_reaches_the_model(name,
                                                               tmp_path):
    """mmengine resolves a variable where the file that uses it is, so
    the R101 configs re-state ``model.laud_weights``: a value set in the
    R101 file (not in its R50 parent) reaches the model."""
    fw = name.split('_', 1)[0]
    src = osp.join(SEG, fw, name)
    with open(src) as f:
        text = f.read()
    parent = re.search(r"_base_ = '\./([^']+)'", text).group(1)
    root = tmp_path / 'configs'
    shutil.copytree(osp.join(ROOT, 'configs/_base_'), root / '_base_')
    (root / 'segmentation' / fw).mkdir(parents=True)
    shutil.copy(osp.join(SEG, fw, parent), root / 'segmentation' / fw)
    assert text.count('\nlaud_weights = None\n') == 1
    ck = 'work_dirs/laud-r101-x_8xb128_in1k/epoch_100.pth'
    child = root / 'segmentation' / fw / name
    child.write_text(text.replace('\nlaud_weights = None\n',
                                  f"\nlaud_weights = '{ck}'\n"))
    cfg = Config.fromfile(str(child))
    assert cfg.laud_weights == cfg.model.laud_weights == ck
    assert cfg.model.backbone.depth == 101
    assert cfg.model.backbone.init_cfg.checkpoint == \
        'torchvision://resnet101'


def test_demo_config_uses_coco_tiny_and_the_stage1_backbone():
    cfg = Config.fromfile(DEMO)
    # the stage-1 checkpoint through the weights route (tau fixed at 0.1);
    # no static weights offline
    assert cfg.model.laud_weights == cfg.laud_weights \
        == 'work_dirs/demo/stage1_spatial_t0.5.pth'
    assert cfg.model.backbone.init_cfg is None
    assert cfg.model.decode_head.num_classes == 81
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        ds = cfg[key].dataset
        assert ds.type == 'laud_mm.COCOSemanticDataset'
        assert ds.data_root is None   # nothing left of the ADE20K recipe
        assert set(ds) - {'_scope_'} == {'type', 'data_root', 'data_prefix',
                                         'coco_ann_file', 'pipeline'}
        assert ds.data_prefix.img_path.startswith(
            '../shared/data/coco_tiny/')
        assert ds.data_prefix.seg_map_path.startswith(
            'work_dirs/coco_tiny_semantic/')
    assert [e.type for e in cfg.test_evaluator] == \
        ['IoUMetric', 'laud_mm.BackboneLatencyMetric']
