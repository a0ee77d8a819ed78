"""Every config builds offline: loading the file and building its model
reads and downloads nothing (weights load when training starts: the
backbone's init_cfg, the LAUD ImageNet checkpoint of `laud_weights`, a
classifier's teacher). Network access while a config is built fails the
test."""
import glob
import os.path as osp
import socket

import pytest
from mmengine.config import Config

from conftest import ROOT

CONFIGS = sorted(
    osp.relpath(f, ROOT)
    for f in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'),
                       recursive=True)
    if '_base_' not in f.split(osp.sep))


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError('network access while building a config')
    monkeypatch.setattr(socket.socket, 'connect', refuse)
    monkeypatch.setattr(socket, 'create_connection', refuse)


@pytest.mark.parametrize('config', CONFIGS)
def test_config_builds_offline(config, tmp_path, no_network):
    from mmengine.registry import MODELS, init_default_scope
    cfg = Config.fromfile(osp.join(ROOT, config))
    weights = cfg.model.get('laud_weights')
    if weights and not osp.isfile(osp.join(ROOT, weights)):
        # a demo's stage-1 checkpoint (tools/run_demo.sh writes it): any
        # existing file stands in, it is not read at build time
        stand_in = tmp_path / 'stage1.pth'
        stand_in.write_bytes(b'')
        cfg.model.laud_weights = str(stand_in)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model = MODELS.build(cfg.model)
    assert hasattr(model.backbone, 'activation_stats')


def test_demo_stage3_adds_the_cpu_prediction_run_demo_points_at(tmp_path):
    """The demo's stage 3 evaluates with the stage-2 metrics plus the eager
    CPU model (laud_cpu/) at the test loader's batch size, on the spec
    tools/run_demo.sh calibrates and points its override at; stage 2's
    validation needs no spec file."""
    import re

    from laud_mm import BackboneLatencyMetric
    from laud_mm.latency import get_hardware, save_hardware
    cfg = Config.fromfile(osp.join(
        ROOT, 'configs/demo',
        'faster-rcnn_laud-r50-spatial_coco-tiny_cpu-latency.py'))
    script = open(osp.join(ROOT, 'tools/run_demo.sh')).read()
    stage3 = re.search(r'^STAGE3_CFG=(\S+)$', script, re.M).group(1)
    assert stage3 == ('configs/demo/'
                      'faster-rcnn_laud-r50-spatial_coco-tiny_cpu-latency.py')
    # the spec is calibrated where the evaluation of that config reads it
    # (inputs in the speed hook's format: predicted and measured speed-ups
    # of the same path)
    assert re.search(r'calibrate_hardware\.py --threads "\$THREADS" --fit'
                     r'\s*\\?\s*--layout auto --out "\$CPU_SPEC"', script)
    assert 'tools/test.py "$STAGE3_CFG"' in script
    index = int(re.search(r'test_evaluator\.(\d+)\.hardware="\$CPU_SPEC"',
                          script).group(1))
    cpu = cfg.test_evaluator[index]
    assert cpu['type'] == 'laud_mm.BackboneLatencyMetric'
    assert cpu['implementation'] == 'eager' and cpu['prefix'] == 'laud_cpu'
    assert cpu['batch_size'] == cfg.test_dataloader.batch_size
    assert cfg.test_evaluator[:index] == cfg.val_evaluator
    assert all(m.get('implementation') is None for m in cfg.val_evaluator)
    spec = tmp_path / 'cpu.yaml'
    save_hardware(get_hardware('cpu'), str(spec))
    args = {k: v for k, v in cpu.items() if k != 'type'}
    metric = BackboneLatencyMetric(**dict(args, hardware=str(spec)))
    assert metric.implementation == 'eager'
    assert metric.predictor.hw == get_hardware('cpu')
