"""LAUD image classifier (paper sec. 3.5): training through mmengine's Runner
on real imagenette images with the sparsity loss and a frozen teacher,
evaluation with top-1/top-5 and predicted latency, checkpoints without the
teacher, the hand-off of the checkpoint into detection configs (masker
weights intact), torchvision conversion, the distillation loss by hand and
configuration errors."""
import math
import os.path as osp
import uuid

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner
from mmengine.runner.checkpoint import load_checkpoint

import laud_mm  # noqa: F401
from laud_mm.models.layers.checkpoint import classifier_to_backbone
from laud_mm.models.resnet.convert import torchvision_to_mmpretrain
from laud_mm.models.classifiers import LAUDImageClassifier
from laud_mm.models.losses import DistillationLoss, distillation_kl

from conftest import ROOT  # noqa: E402  (the repository root)
DEMO = osp.join(ROOT, 'configs/demo')
STATIC = osp.join(DEMO, 'resnet50_static_imagenette.py')
SPATIAL = osp.join(DEMO, 'laud-r50-spatial_imagenette.py')
CROP = 64
# one image of each of 4 classes (train.txt / val.txt are sorted by class)
TRAIN_IDX, VAL_IDX = [0, 50, 100, 150], [0, 20, 40, 60]


def _build(model_cfg):
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    # other tests leave mmdet as the current default scope
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return MODELS.build(model_cfg)


def small_cfg(config, work_dir, teacher_ckpt, max_iters=2):
    """A demo config cut to ``max_iters`` iterations on 4 real images at
    64 px, batch 2, no worker processes."""
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
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook',
                                        interval=max_iters, by_epoch=False)
    cfg.default_hooks.logger.interval = 1
    for key, idx in (('train_dataloader', TRAIN_IDX),
                     ('val_dataloader', VAL_IDX)):
        dl = cfg[key]
        dl.batch_size, dl.num_workers, dl.persistent_workers = 2, 0, False
        dl.dataset.indices = idx
        for t in dl.dataset.pipeline:
            if t['type'] == 'RandomResizedCrop':
                t['scale'] = CROP
            elif t['type'] == 'ResizeEdge':
                t['scale'] = CROP * 8 // 7
            elif t['type'] == 'CenterCrop':
                t['crop_size'] = CROP
    cfg.test_dataloader = cfg.val_dataloader
    if teacher_ckpt is not None and cfg.model.get('sparsity_loss'):
        # the paper's third term: distillation from the static demo model
        cfg.model.teacher = dict(
            config=Config.fromfile(STATIC).model.to_dict(),
            checkpoint=teacher_ckpt)
        cfg.model.distill_loss = cfg.laud_distill_loss
    cfg.randomness = dict(seed=0)
    return cfg


@pytest.fixture(scope='module')
def trained(tmp_path_factory, imagenette):
    """Static teacher checkpoint -> 2 LAUD training iterations -> eval."""
    tmp = tmp_path_factory.mktemp('cls')
    torch.manual_seed(0)
    static = _build(Config.fromfile(STATIC).model)
    static.init_weights()
    teacher_sd = {k: v.clone() for k, v in static.state_dict().items()}
    teacher_ckpt = str(tmp / 'static_teacher.pth')
    torch.save({'state_dict': teacher_sd}, teacher_ckpt)

    cfg = small_cfg(SPATIAL, tmp / 'run', teacher_ckpt, max_iters=2)
    runner = Runner.from_cfg(cfg)
    runner.train()  # validates once at the last iteration
    hub = runner.message_hub
    metrics = {k[4:]: hub.get_scalar(k).current() for k in hub.log_scalars
               if k.startswith('val/')}
    return dict(runner=runner, metrics=metrics, teacher_sd=teacher_sd,
                teacher_ckpt=teacher_ckpt, cfg=cfg,
                ckpt=osp.join(cfg.work_dir, 'iter_2.pth'), tmp=tmp)


# ----------------------------------------------------------- Runner flow
def test_training_logs_sparsity_distill_and_act_rate(trained):
    hub = trained['runner'].message_hub
    for key in ('train/loss', 'train/loss_sparsity', 'train/loss_distill',
                'train/act_rate', 'train/gumbel_tau'):
        assert key in hub.log_scalars, key
    distill = hub.get_scalar('train/loss_distill').current()
    act = hub.get_scalar('train/act_rate').current()
    assert math.isfinite(distill) and distill > 0  # random student != teacher
    assert 0 < act <= 1 + 1e-6
    sparsity = hub.get_scalar('train/loss_sparsity').current()
    assert math.isfinite(sparsity) and sparsity >= 0


def test_teacher_frozen_loaded_and_not_in_checkpoint(trained):
    model = trained['runner'].model
    teacher = model.teacher
    assert teacher is not None and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    # loaded from the checkpoint and untouched by two optimizer steps
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, trained['teacher_sd'][k]), k
    # not a submodule: not in parameters(), state_dict() or the checkpoint
    student_ids = {id(p) for p in model.parameters()}
    assert not any(id(p) in student_ids for p in teacher.parameters())
    saved = torch.load(trained['ckpt'], map_location='cpu')  # weights_only
    keys = set(saved['state_dict'])
    assert keys == set(model.state_dict())
    assert not any('teacher' in k for k in keys)
    assert sum(v.numel() for v in saved['state_dict'].values()) == \
        sum(v.numel() for v in model.state_dict().values())
    assert any('.masker.' in k for k in keys)


def test_checkpoint_reloads_strictly(trained):
    cfg = trained['cfg']
    model = _build(cfg.model)
    load_checkpoint(model, trained['ckpt'], map_location='cpu', strict=True)
    saved = torch.load(trained['ckpt'], map_location='cpu')['state_dict']
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), k


def test_evaluation_reports_accuracy_and_latency(trained):
    m = trained['metrics']
    for key in ('accuracy/top1', 'accuracy/top5', 'laud/activation_rate',
                'laud/backbone_GFLOPs', 'laud/latency_ms',
                'laud/static_latency_ms', 'laud/speedup'):
        assert key in m, key
    assert 0 <= m['accuracy/top1'] <= m['accuracy/top5'] <= 100
    assert 0 < m['laud/activation_rate'] <= 1 + 1e-6
    assert m['laud/latency_ms'] > 0


def _det_backbone_matches(det_config, ckpt, prefix='backbone.'):
    """Build a detector whose backbone loads ``ckpt`` through the config's
    ``laud_weights`` (init_cfg=Pretrained(prefix='backbone.')); return the
    number of masker tensors compared (every backbone tensor, every masker
    tensor included, must equal the checkpoint's)."""
    from mmdet.registry import MODELS as DET_MODELS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(det_config)
    # the configs' weights route 1: a LAUD ImageNet checkpoint
    cfg.model.laud_weights = ckpt
    det = DET_MODELS.build(cfg.model)
    assert det.laud_tau_schedule == (0.1, 0.1)
    det.init_weights()
    saved = torch.load(ckpt, map_location='cpu')['state_dict']
    n_masker = 0
    for k, v in det.backbone.state_dict().items():
        assert torch.equal(v, saved[prefix + k]), k
        n_masker += '.masker.' in k
    return n_masker


def test_runner_checkpoint_loads_into_detection_config(trained):
    n = _det_backbone_matches(
        osp.join(DEMO, 'faster-rcnn_laud-r50-spatial_coco-tiny.py'),
        trained['ckpt'])
    assert n == 2 * 16  # conv weight + bias of each of 16 spatial maskers


@pytest.mark.parametrize('demo,det_config,n_masker', [
    ('laud-r50-channel_imagenette.py',
     'faster_rcnn/faster-rcnn_laud-r50-channel-g2_t0.5_fpn_1x_coco.py', 4 * 16),
    ('laud-r50-layer_imagenette.py',
     'demo/retinanet_laud-r50-layer_coco-tiny.py', 2 * 16),
])
def test_channel_and_layer_checkpoints_load_into_detectors(
        tmp_path, demo, det_config, n_masker):
    cfg = Config.fromfile(osp.join(DEMO, demo))
    cfg.model.teacher = None
    torch.manual_seed(1)
    model = _build(cfg.model)
    # masker weights unlike any initialisation
    for m in model.backbone.maskers():
        for p in m.parameters():
            p.data.normal_()
    ckpt = str(tmp_path / 'cls.pth')
    torch.save({'state_dict': model.state_dict()}, ckpt)
    assert _det_backbone_matches(osp.join(ROOT, 'configs', det_config),
                                 ckpt) == n_masker


def test_cls2backbone_conversion(trained, tmp_path):
    """The converter behind tools/model_converters/convert_checkpoint.py;
    its command line exits 1 naming the file for a wrong layout."""
    import subprocess
    import sys

    from laud_mm.models.resnet.convert import convert_checkpoint
    out = str(tmp_path / 'backbone.pth')
    n = convert_checkpoint('cls2backbone', trained['ckpt'], out)
    conv = torch.load(out, map_location='cpu')['state_dict']
    assert n == len(conv)
    saved = torch.load(trained['ckpt'], map_location='cpu')['state_dict']
    assert set(conv) == {k[9:] for k in saved if k.startswith('backbone.')}
    assert torch.equal(conv['layer1.0.masker.conv.weight'],
                       saved['backbone.layer1.0.masker.conv.weight'])
    # a non-classifier input is refused with the file named
    bad = str(tmp_path / 'bad.pth')
    torch.save({'state_dict': {'foo.weight': torch.zeros(1)}}, bad)
    proc = subprocess.run(
        [sys.executable, 'tools/model_converters/convert_checkpoint.py',
         'cls2backbone', bad, out], cwd=ROOT, capture_output=True,
        text=True, timeout=300)
    assert proc.returncode == 1 and 'bad.pth' in proc.stderr, proc.stderr
    with pytest.raises(ValueError, match='bad.pth'):
        convert_checkpoint('cls2backbone', bad, out)


def test_strip_resaves_untrusted_pickles_only_when_trusted(tmp_path):
    """A checkpoint pickling ``getattr`` (as Runner checkpoints saved without
    laud_mm do) is refused under weights_only, with the remedy named, and
    ``strip --trusted`` re-saves its tensors loadable under weights_only."""
    from laud_mm.models.resnet.convert import convert_checkpoint
    src = str(tmp_path / 'legacy.pth')
    w = torch.arange(6.).reshape(2, 3)
    torch.save({'state_dict': {'backbone.conv1.weight': w},
                'hook': torch.nn.Module.train}, src)  # pickles getattr
    out = str(tmp_path / 'weights.pth')
    with pytest.raises(ValueError, match='strip --trusted'):
        convert_checkpoint('strip', src, out)
    assert convert_checkpoint('strip', src, out, trusted=True) == 1
    sd = torch.load(out, map_location='cpu')['state_dict']  # weights_only
    assert list(sd) == ['backbone.conv1.weight']
    assert torch.equal(sd['backbone.conv1.weight'], w)


# ------------------------------------------------- torchvision weights
def torchvision_resnet50_state_dict(num_classes=1000):
    """A state dict with torchvision's ResNet-50 keys and shapes (written from
    torchvision's architecture: bottleneck layers [3, 4, 6, 3], expansion 4,
    downsample.0/1 in the first block of each layer, fc), random values."""
    g = torch.Generator().manual_seed(0)
    sd = {}

    def bn(name, c):
        sd[f'{name}.weight'] = torch.rand(c, generator=g) + 0.5
        sd[f'{name}.bias'] = torch.randn(c, generator=g) * 0.1
        sd[f'{name}.running_mean'] = torch.randn(c, generator=g) * 0.1
        sd[f'{name}.running_var'] = torch.rand(c, generator=g) + 0.5
        sd[f'{name}.num_batches_tracked'] = torch.tensor(7)

    def conv(name, cout, cin, k):
        sd[f'{name}.weight'] = torch.randn(cout, cin, k, k, generator=g) * \
            (2. / (cin * k * k)) ** 0.5

    conv('conv1', 64, 3, 7)
    bn('bn1', 64)
    cin = 64
    for li, (n, w) in enumerate(zip([3, 4, 6, 3], [64, 128, 256, 512]), 1):
        for b in range(n):
            p = f'layer{li}.{b}'
            conv(f'{p}.conv1', w, cin, 1)
            bn(f'{p}.bn1', w)
            conv(f'{p}.conv2', w, w, 3)
            bn(f'{p}.bn2', w)
            conv(f'{p}.conv3', 4 * w, w, 1)
            bn(f'{p}.bn3', 4 * w)
            if b == 0:
                conv(f'{p}.downsample.0', 4 * w, cin, 1)
                bn(f'{p}.downsample.1', 4 * w)
            cin = 4 * w
    sd['fc.weight'] = torch.randn(num_classes, 2048, generator=g) * 0.01
    sd['fc.bias'] = torch.randn(num_classes, generator=g) * 0.01
    return sd


def _cls_cfg(paradigm=None, granularity=None, num_classes=1000, **kw):
    cfg = Config.fromfile(STATIC).model
    cfg.backbone.paradigm = paradigm
    cfg.backbone.granularity = granularity
    cfg.head.num_classes = num_classes
    cfg.update(kw)
    return cfg


def test_torchvision_weights_initialise_student_and_teacher(tmp_path):
    from laud_mm.models.resnet.convert import convert_checkpoint
    tv = torchvision_resnet50_state_dict()
    tv_file = str(tmp_path / 'resnet50_tv.pth')
    torch.save(tv, tv_file)  # a bare state dict, as torchvision ships it
    # 1) the conversion tool: every key mapped, strict load into a static
    # LAUD classifier
    out = str(tmp_path / 'resnet50_cls.pth')
    assert convert_checkpoint('tv2cls', tv_file, out) == len(tv)
    static = _build(_cls_cfg())
    load_checkpoint(static, out, map_location='cpu', strict=True)
    assert torch.equal(static.head.fc.weight, tv['fc.weight'])
    assert torch.equal(static.backbone.layer3[5].conv2.weight,
                       tv['layer3.5.conv2.weight'])
    # 2) the torchvision-cls:// scheme as the student's init_cfg: backbone
    # and fc from torchvision, maskers keep their keep-biased init
    student = _build(_cls_cfg('spatial', (4, 4, 2, 1), init_cfg=dict(
        type='Pretrained', checkpoint='torchvision-cls://' + tv_file)))
    student.init_weights()
    assert torch.equal(student.backbone.layer4[2].bn3.running_var,
                       tv['layer4.2.bn3.running_var'])
    assert torch.equal(student.head.fc.bias, tv['fc.bias'])
    keep_bias = student.backbone.layer2[0].masker.conv.bias
    assert keep_bias[0].item() == pytest.approx(5.0)  # keep logit bias
    # 3) a teacher given the raw torchvision file maps the keys on load; it
    # is read when training starts (init_weights), not when the model is
    # built (building a config never reads or downloads weights)
    model = _build(_cls_cfg('layer', None, teacher=dict(
        config=_cls_cfg(), checkpoint=tv_file)))
    assert not model.teacher.laud_teacher_loaded
    assert not torch.equal(model.teacher.backbone.conv1.weight,
                           tv['conv1.weight'])
    model.init_weights()
    assert model.teacher.laud_teacher_loaded
    assert torch.equal(model.teacher.backbone.conv1.weight, tv['conv1.weight'])
    assert torch.equal(model.teacher.head.fc.weight, tv['fc.weight'])
    # the converted file and the raw file give the same teacher
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(model.teacher_logits(x),
                          static.eval()(x, mode='tensor'), atol=1e-5)


def test_torchvision_conversion_rejects_other_layouts():
    with pytest.raises(ValueError, match='torchvision'):
        torchvision_to_mmpretrain({'backbone.conv1.weight': torch.zeros(1),
                                   'head.fc.weight': torch.zeros(1)})
    with pytest.raises(ValueError, match="prefix='backbone.'"):
        classifier_to_backbone({'conv1.weight': torch.zeros(1)})


# ---------------------------------------------------- distillation loss
def test_distillation_loss_hand_computed():
    zs = torch.tensor([[1., 2., 3.], [0., 0., 0.]], requires_grad=True)
    zt = torch.tensor([[3., 2., 1.], [1., 0., -1.]], requires_grad=True)
    T, beta = 2.0, 0.5

    def softmax(row):
        e = [math.exp(v / T) for v in row]
        return [v / sum(e) for v in e]

    kl = 0.
    for s, t in zip(zs.tolist(), zt.tolist()):
        ps, pt = softmax(s), softmax(t)
        kl += sum(a * math.log(a / b) for a, b in zip(pt, ps))
    expected = beta * T * T * kl / 2  # mean over the 2 samples
    loss = DistillationLoss(temperature=T, loss_weight=beta)(zs, zt)
    assert set(loss) == {'loss_distill'}
    assert loss['loss_distill'].item() == pytest.approx(expected, rel=1e-5)
    assert expected > 0.1  # the case is not degenerate
    loss['loss_distill'].backward()
    assert zs.grad is not None and zs.grad.abs().sum() > 0
    assert zt.grad is None  # the teacher is a constant
    # zero iff the softened distributions agree (shift invariance)
    same = distillation_kl(zt.detach() + 3., zt.detach(), T)
    assert same.item() == pytest.approx(0., abs=1e-6)
    with pytest.raises(ValueError, match='logits'):
        distillation_kl(zs, zt[:, :2], T)


def test_classifier_loss_matches_hand_computed_distillation(trained):
    """loss_distill of the LAUD classifier on 2 real images equals
    beta * T^2 * KL recomputed from its own student and teacher logits."""
    import copy
    from mmengine.dataset import pseudo_collate
    runner = trained['runner']
    model = copy.deepcopy(runner.model)
    ds = runner.train_dataloader.dataset
    data = model.data_preprocessor(pseudo_collate([ds[0], ds[1]]), True)
    model.train()
    model.backbone.force_gates(1.0)  # deterministic gates
    losses = model.loss(**data)
    assert {'loss', 'loss_sparsity', 'loss_distill', 'act_rate'} <= set(losses)
    zs = model(data['inputs'], mode='tensor')  # BN batch stats: same logits
    zt = model.teacher(data['inputs'], mode='tensor')
    T = 4.0
    ps = torch.softmax(zs.double() / T, 1)
    pt = torch.softmax(zt.double() / T, 1)
    kl = (pt * (pt.log() - ps.log())).sum(1).mean()
    assert losses['loss_distill'].item() == pytest.approx(
        0.5 * T * T * kl.item(), rel=1e-4)
    # all gates on: the whole backbone computes (plus the maskers)
    assert losses['act_rate'].item() >= 1.0 - 1e-6


def test_teacher_follows_device_and_dtype_moves():
    model = _build(_cls_cfg('layer', None, num_classes=10, teacher=dict(
        config=_cls_cfg(num_classes=10), checkpoint=None)))
    assert isinstance(model, LAUDImageClassifier)
    assert next(model.teacher.parameters()).dtype == torch.float32
    model.double()
    assert next(model.teacher.parameters()).dtype == torch.float64
    assert next(model.parameters()).dtype == torch.float64
    model.train()
    assert model.training and not model.teacher.training
    assert not any('teacher' in k for k in model.state_dict())


# ------------------------------------------------------ config errors
def test_bad_configs_raise_errors_naming_the_key(tmp_path):
    with pytest.raises(ValueError, match='temperature=0'):
        DistillationLoss(temperature=0)
    with pytest.raises(ValueError, match='temperature=-4.0'):
        DistillationLoss(temperature=-4.0)
    with pytest.raises(ValueError, match='loss_weight=-0.5'):
        DistillationLoss(loss_weight=-0.5)
    missing = str(tmp_path / 'no_such_teacher.pth')
    with pytest.raises(ValueError, match=r"teacher\.checkpoint=.*"
                       r"no_such_teacher\.pth.*no such file"):
        _build(_cls_cfg('layer', None, teacher=dict(
            config=_cls_cfg(), checkpoint=missing)))
    with pytest.raises(ValueError, match=r'teacher\.config=.*no such config'):
        _build(_cls_cfg('layer', None, teacher=dict(
            config=str(tmp_path / 'nope.py'), checkpoint=None)))
    with pytest.raises(ValueError, match='config=...'):
        _build(_cls_cfg('layer', None, teacher=dict(checkpoint=None)))
    with pytest.raises(ValueError, match="unknown keys.*'ckpt'"):
        _build(_cls_cfg('layer', None, teacher=dict(config=_cls_cfg(),
                                                    ckpt='x.pth')))
    # a checkpoint of another network: strict loading refuses it
    bad = str(tmp_path / 'other.pth')
    torch.save({'state_dict': {'foo.weight': torch.zeros(2)}}, bad)
    # (when the weights are read: at the start of training)
    model = _build(_cls_cfg('layer', None, teacher=dict(config=_cls_cfg(),
                                                        checkpoint=bad)))
    with pytest.raises(ValueError, match=r'teacher\.checkpoint=.*other\.pth'
                       r'.*does not match'):
        model.init_weights()
    with pytest.raises(ValueError, match='temperature=0'):
        _build(_cls_cfg('layer', None, teacher=dict(
            config=_cls_cfg(), checkpoint=None),
            distill_loss=dict(type='laud_mm.DistillationLoss',
                              temperature=0)))
    with pytest.raises(ValueError, match='static'):
        _build(_cls_cfg(None, None, sparsity_loss=dict(
            type='laud_mm.SparsityLoss', target_rate=0.5)))
    with pytest.raises(TypeError, match='LAUD backbone'):
        _build(dict(type='laud_mm.LAUDImageClassifier',
                    backbone=dict(type='ResNet', depth=18),
                    neck=dict(type='GlobalAveragePooling'),
                    head=dict(type='LinearClsHead', num_classes=10,
                              in_channels=512)))


def test_imagenet_configs_parse():
    """The 6 ImageNet configs: paradigm, depth, target, schedule, hooks and
    evaluators as the paper's recipe (paper sec. 3.5 / appendix B)."""
    expected = {'spatial-s4421': ('spatial', (4, 4, 2, 1)),
                'channel-g2': ('channel', (2, 2, 2, 2)),
                'layer': ('layer', None)}
    for depth in (50, 101):
        for name, (paradigm, gran) in expected.items():
            cfg = Config.fromfile(osp.join(
                ROOT, f'configs/imagenet/laud-r{depth}-{name}_8xb128_in1k.py'))
            m = cfg.model
            assert m.type == 'laud_mm.LAUDImageClassifier'
            assert (m.backbone.depth, m.backbone.paradigm) == (depth, paradigm)
            assert (tuple(m.backbone.granularity)
                    if m.backbone.granularity else None) == gran
            assert m.backbone.norm_eval is False
            assert cfg.target_rate == 0.5 == m.sparsity_loss.target_rate
            assert m.sparsity_loss.loss_weight == 10.0
            assert m.sparsity_loss.block_bounds is True
            assert (m.distill_loss.temperature, m.distill_loss.loss_weight) \
                == (4.0, 0.5)
            assert m.teacher.checkpoint == f'torchvision://resnet{depth}'
            assert f'resnet{depth}' in m.teacher.config
            assert m.init_cfg.checkpoint == f'torchvision-cls://resnet{depth}'
            opt = cfg.optim_wrapper.optimizer
            assert (opt.type, opt.nesterov, opt.momentum) == ('SGD', True, 0.9)
            batch = 8 * cfg.train_dataloader.batch_size
            assert opt.lr == pytest.approx(0.01 * batch / 128)
            assert cfg.train_cfg.max_epochs == 100
            assert cfg.param_scheduler.type == 'CosineAnnealingLR'
            assert cfg.train_dataloader.dataset.data_root == 'data/imagenet'
            assert cfg.custom_hooks == [dict(
                type='laud_mm.GumbelTemperatureHook', tau0=5.0, tau1=0.1)]
            types = [e['type'] for e in cfg.val_evaluator]
            assert types == ['Accuracy', 'laud_mm.BackboneLatencyMetric']
            assert 'laud_mm' in cfg.custom_imports.imports
