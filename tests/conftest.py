"""Shared fixtures: paths of the real data sets and small builders."""
import os
import os.path as osp

import pytest

import laud_mm  # noqa: F401  (first: registers, torchvision compat)
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SHARED = osp.normpath(osp.join(ROOT, '..', 'shared', 'data'))
COCO_TINY = osp.join(SHARED, 'coco_tiny')
IMAGENETTE = osp.join(SHARED, 'imagenette_subset')

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope='session')
def coco_tiny():
    if not osp.isdir(COCO_TINY):
        pytest.fail(f'real data missing: {COCO_TINY} (../shared/data beside '
                    f'the repository)')
    return COCO_TINY


@pytest.fixture(scope='session')
def imagenette():
    if not osp.isdir(IMAGENETTE):
        pytest.fail(f'real data missing: {IMAGENETTE}')
    return IMAGENETTE


def load_coco_images(split='val2017', n=2, size=(160, 224)):
    """n real COCO images from coco_tiny, resized to ``size`` (H, W), as a
    normalised float batch (n, 3, H, W)."""
    import mmcv
    import numpy as np
    files = sorted(os.listdir(osp.join(COCO_TINY, split)))[:n]
    imgs = []
    for f in files:
        img = mmcv.imread(osp.join(COCO_TINY, split, f), channel_order='rgb')
        img = mmcv.imresize(img, (size[1], size[0])).astype(np.float32)
        img = (img - [123.675, 116.28, 103.53]) / [58.395, 57.12, 57.375]
        imgs.append(torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1))
    return torch.stack(imgs)


def check_channels_last_forward(net, x):
    """Run a dynamic CNN backbone ``net`` (eval, ``dynamic_inference``, its
    gates forced) on ``x`` fed channels_last, fed NCHW, then masked-dense,
    and assert what its dynamic forward promises in either format: the
    same gates, features in the input's format, channels_last equal to
    NCHW within 1e-5 and to masked-dense within 1e-4 of the masked-dense
    output's largest value. Returns the masked-dense features."""
    cl = torch.channels_last
    with torch.no_grad():
        out = net(x.contiguous(memory_format=cl))
        gates = [b.last_stats['gate'].clone() for b in net.blocks]
        nchw = net(x)
        net.dynamic_inference = False
        dense = net(x)
        net.dynamic_inference = True
    for b, g in zip(net.blocks, gates):
        assert torch.equal(b.last_stats['gate'], g)
    for a, b, c in zip(out, nchw, dense):
        assert a.is_contiguous(memory_format=cl)
        assert b.is_contiguous() and c.is_contiguous()
        scale = float(c.abs().max())
        assert float((a - b).abs().max()) <= 1e-5 * scale
        assert float((a - c).abs().max()) <= 1e-4 * scale
    return dense
