"""Latency prediction of a config or an architecture
(:mod:`laud_mm.analysis.prediction`, behind
``tools/analysis_tools/predict_latency.py``): activation rates measured on
real images with a checkpoint."""
import os.path as osp

import pytest
import torch

from laud_mm.analysis import prediction as predict_latency
from laud_mm.models.layers.gates import KEEP

from conftest import ROOT


def test_predict_latency_measures_checkpoint_densities(tmp_path, capsys):
    """--checkpoint: the prediction loads a trained classifier checkpoint,
    runs its backbone on real imagenette test images and predicts from the
    measured per-block densities (a block whose masker was set to skip
    measures 0)."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from laud_mm.registry import MODELS
    cfg_path = osp.join(ROOT, 'configs/demo/laud-r50-layer_imagenette.py')
    cfg = Config.fromfile(cfg_path)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
    with torch.no_grad():  # input-independent gates: keep (init bias), but
        for blk in model.backbone.blocks:  # block 2 always skips
            blk.masker.fc.weight.zero_()
        fc = model.backbone.blocks[2].masker.fc
        fc.bias.fill_(10.)
        fc.bias[KEEP] = -10.
    ckpt = tmp_path / 'epoch_1.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict(epoch=1)), ckpt)
    dens, hw = predict_latency.measure_densities(cfg, str(ckpt), 2)
    assert len(dens) == 16 and dens[2] == 0.0
    assert all(d == 1.0 for i, d in enumerate(dens) if i != 2)
    rep = predict_latency.predict_latency(cfg_path, checkpoint=str(ckpt),
                                          num_images=2, hardware='tx2')
    out = capsys.readouterr().out
    assert 'measured on 2 images' in out and f'{hw[0]}x{hw[1]}' in out
    assert rep.per_block_ms[2] < 0.2 * rep.per_block_ms[1]
    with pytest.raises(ValueError, match='num-images'):
        predict_latency.measure_densities(cfg, str(ckpt), 0)
    # the config's top-level data_preprocessor (mmpretrain) is merged into
    # the model as the Runner does: the masks are measured on normalised
    # pixels, as in tools/test.py
    from mmengine.registry import MODELS as MM_MODELS
    built, build = [], MM_MODELS.build

    def spy(*a, **k):
        m = build(*a, **k)
        built.append(m)
        return m
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(MM_MODELS, 'build', spy)
        predict_latency.measure_densities(cfg, str(ckpt), 1)
    dp = built[0].data_preprocessor
    assert dp.mean.flatten().tolist() == \
        pytest.approx(cfg.data_preprocessor['mean'])
    assert 'data_preprocessor' not in cfg.model   # the caller's cfg is intact


@pytest.mark.parametrize('shortcut,paradigm,gran,target', [
    ('resnet50', 'spatial', (4, 4, 2, 1), 0.5),
    ('resnet50', 'channel', (2, 2, 2, 2), 0.5),
    ('t2t-vit-t-14', 'layer', None, 0.7)])
def test_total_row_rate_is_the_target(capsys, shortcut, paradigm, gran,
                                      target):
    """The uniform density is chosen so that the backbone's FLOPs rate, the
    static stem included (as the sparsity loss counts it), equals the
    target: the table's total row shows that rate, the stem row its FLOPs
    (was 0.492 for 0.5: the stem was counted in the conversion only)."""
    predict_latency.predict_latency(shortcut, paradigm=paradigm,
                                    granularity=gran, target=target,
                                    hardware='tx2')
    out = capsys.readouterr().out
    rows = {}
    for line in out.splitlines():  # the stage table's rows (first ones)
        if line.split() and line.split()[0] in ('stem', 'total'):
            rows.setdefault(line.split()[0], line.split())
    assert float(rows['total'][3]) == pytest.approx(target, abs=5e-4)
    assert float(rows['stem'][3]) == 1.0
    assert float(rows['stem'][1]) == float(rows['stem'][2]) > 0


@pytest.mark.parametrize('kw,match', [
    (dict(config='resnet50', paradigm='channel', granularity=(3, 2, 2, 2)),
     r'granularity=\(3, 2, 2, 2\): G=3 does not divide the stage-0 '
     r'bottleneck width 64'),
    (dict(config='resnet50', paradigm='spatial', granularity=(4, 4, 2)),
     r'granularity=\(4, 4, 2\) must give one S per stage'),
    (dict(config='t2t-vit-t-14', paradigm='channel',
          granularity=(2, 2, 2, 2)), r'--granularity 2 2 2 2: only the '
     r'ResNet shortcuts'),
    (dict(config=osp.join(ROOT, 'configs/demo/laud-r50-layer_imagenette.py'),
          paradigm='spatial'), r'--paradigm spatial: only the shortcuts'),
    # options a shortcut would ignore, a batch the default would replace,
    # a target that measured rates would override
    (dict(config='resnet50', paradigm='layer', checkpoint='/nonexistent.pth'),
     r"--checkpoint='/nonexistent.pth': only configs take it, not the "
     r"shortcut 'resnet50'"),
    (dict(config='t2t-vit-t-14', paradigm='layer',
          cfg_options={'model.foo': 1}),
     r"--cfg-options \{'model.foo': 1\}: only configs take it"),
    # head skipping keeps the MLP: 0.6645 of the FLOPs with every head
    # off; the target suggested is rounded up, so that it passes
    (dict(config='t2t-vit-t-14', paradigm='channel', target=0.5),
     r"target rate=0.5 is below the lowest FLOPs rate this backbone "
     r"reaches, 0\.6645 .* use a target of at least 0\.665$"),
    (dict(config='resnet50', paradigm='layer', batch_size=0),
     r'--batch-size=0 must be a positive integer'),
    (dict(config=osp.join(ROOT, 'configs/demo/laud-r50-layer_imagenette.py'),
          checkpoint='x.pth', target=0.2),
     r'--target=0.2 cannot be used with --checkpoint'),
])
def test_bad_arguments_are_refused(kw, match):
    """A paradigm / granularity the model cannot be built with, or one the
    command would ignore, is refused naming the argument and value (no
    latency printed for a model that does not exist)."""
    with pytest.raises(ValueError, match=match):
        predict_latency.predict_latency(hardware='tx2', **kw)


def test_the_suggested_lowest_target_is_accepted():
    """The floor's refusal suggests a target (rounded up) that passes: at
    it every gate is (nearly) off."""
    from laud_mm.analysis.prediction import uniform_density_for_rate
    from laud_mm.models.t2t_vit import t2t_vit_geometries
    for arch, paradigm in (('t2t-vit-t-14', 'channel'),
                           ('t2t-vit-t-24', 'layer')):
        g, stem = t2t_vit_geometries(arch, (224, 224), paradigm)
        with pytest.raises(ValueError) as e:
            uniform_density_for_rate(g, 0.01, stem)
        least = float(str(e.value).rsplit(' ', 1)[1])
        assert 0 <= uniform_density_for_rate(g, least, stem) < 0.01
