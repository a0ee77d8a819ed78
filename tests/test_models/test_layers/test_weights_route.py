"""The weights route of the dense-prediction configs (`laud_weights`):
a LAUD ImageNet checkpoint is loaded into the backbone, maskers included,
with the temperature fixed at 0.1; None keeps the backbone's static
ImageNet init_cfg with the temperature annealed 5 -> 0.1; a missing local
file is refused at build time naming the key and both routes
(laud_mm/models/layers/weights.py, paper appendix B.3)."""
import os.path as osp
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config

from conftest import ROOT
from laud_mm import GumbelTemperatureHook
from laud_mm.models.layers.weights import (TAU_FROM_LAUD_CHECKPOINT,
                                           TAU_FROM_STATIC_WEIGHTS)

CFG = osp.join(ROOT, 'configs/faster_rcnn/'
               'faster-rcnn_laud-r50-layer_t0.5_fpn_1x_coco.py')


def _build(laud_weights):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(CFG)
    cfg.model.laud_weights = laud_weights
    return MODELS.build(cfg.model)


def test_static_route_keeps_the_upstream_init_and_anneals_tau():
    det = _build(None)
    assert det.backbone.init_cfg['checkpoint'] == 'torchvision://resnet50'
    assert 'prefix' not in det.backbone.init_cfg
    assert det.laud_tau_schedule == TAU_FROM_STATIC_WEIGHTS == (5.0, 0.1)


def test_laud_route_loads_every_backbone_tensor(tmp_path):
    det = _build(None)
    ref = {k: torch.randn_like(v) if v.is_floating_point() else v
           for k, v in det.backbone.state_dict().items()}
    ckpt = str(tmp_path / 'laud_in1k.pth')
    torch.save({'state_dict': {'backbone.' + k: v for k, v in ref.items()},
                'meta': {}}, ckpt)
    det = _build(ckpt)
    assert det.laud_tau_schedule == TAU_FROM_LAUD_CHECKPOINT == (0.1, 0.1)
    det.init_weights()
    maskers = 0
    for k, v in det.backbone.state_dict().items():
        assert torch.equal(v, ref[k]), k
        maskers += '.masker.' in k
    assert maskers == 2 * 16  # fc weight + bias of 16 layer maskers


def test_missing_checkpoint_names_the_key_and_both_routes(tmp_path):
    missing = str(tmp_path / 'no_such.pth')
    det = _build(missing)  # building, inspecting, testing: no file needed
    with pytest.raises(ValueError) as e:
        det.init_weights()  # training start
    msg = str(e.value)
    assert 'laud_weights' in msg and 'no_such.pth' in msg
    assert 'LAUD ImageNet checkpoint' in msg and 'laud_weights=None' in msg
    with pytest.raises(ValueError, match='laud_weights=3'):
        _build(3)


def test_gumbel_hook_takes_the_schedule_of_the_route():
    logged = []
    det = _build(None)
    runner = SimpleNamespace(model=det, logger=SimpleNamespace(
        info=logged.append), iter=0, max_iters=4,
        message_hub=SimpleNamespace(update_scalar=lambda *a: None))
    hook = GumbelTemperatureHook(tau0=None, tau1=None)
    hook.before_train(runner)
    assert hook.tau_at(0, 4) == pytest.approx(5.0)
    assert hook.tau_at(4, 4) == pytest.approx(0.1)
    assert 'static ImageNet weights' in logged[0]
    # a model without a weights route: give tau0 and tau1
    runner.model = SimpleNamespace(modules=det.modules)
    with pytest.raises(RuntimeError, match='give tau0 and tau1'):
        GumbelTemperatureHook(None, None).before_train(runner)
    with pytest.raises(ValueError, match='tau0=None'):
        GumbelTemperatureHook(None, 0.1)
