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
