"""Folded convolution weights in their input's memory format
(laud_mm/models/layers/folding.py, ``LayoutWeight``): a channels_last
input gets a channels_last k x k weight, made once; an NCHW input and a
1 x 1 kernel keep the NCHW weight; the folded ResNet-50 blocks, stems,
the RegNetY blocks' grouped conv2 and the autocast copy of a fold use it,
and the features on real images are the same bit for bit as with the NCHW
weights."""
import pytest
import torch
import torch.nn.functional as F

from conftest import load_coco_images
from laud_mm import LAUDRegNetY, LAUDResNet
from laud_mm.analysis.benchmark.resnet import folded_stem as bench_stem
from laud_mm.models.layers.dynamic import cast_folded
from laud_mm.models.layers import stem as stem_module
from laud_mm.models.layers.folding import LayoutWeight
from laud_mm.models.regnet.dynamic import (folded_regnety,
                                           static_regnety_forward)
from laud_mm.models.resnet.dynamic import folded, static_bottleneck_forward
from laud_mm.ops.dispatch import runs_channels_last

CL = torch.channels_last


def test_layout_weight_formats():
    w = torch.randn(16, 8, 3, 3)
    lw = LayoutWeight(w)
    nchw = torch.randn(2, 8, 6, 6)
    cl = nchw.contiguous(memory_format=CL)
    assert lw.like(nchw) is w
    a = lw.like(cl)
    assert a is not w and a.is_contiguous(memory_format=CL) and \
        not a.is_contiguous() and torch.equal(a, w)
    assert lw.like(cl) is a  # made once
    assert lw.like(nchw) is w
    # a single pixel is NCHW as well: the NCHW weight
    assert lw.like(torch.randn(2, 8, 1, 1).contiguous(memory_format=CL)) \
        is w
    # a channel slice of a channels_last tensor (the spatial path's conv1
    # output without its logit channel) runs channels_last; of an NCHW
    # one, NCHW
    sl = torch.randn(2, 9, 6, 6).contiguous(memory_format=CL)[:, :8]
    assert runs_channels_last(sl) and lw.like(sl) is a
    assert F.conv2d(sl, w, padding=1).is_contiguous(memory_format=CL)
    assert not runs_channels_last(torch.randn(2, 9, 6, 6)[:, :8])
    assert not runs_channels_last(torch.randn(2, 9, 1, 1)[:, :8])
    assert not runs_channels_last(torch.randn(8, 6, 6).contiguous())
    # 1 x 1: the same memory in both formats
    w1 = torch.randn(16, 8, 1, 1)
    assert LayoutWeight(w1).like(cl) is w1
    # the convolution's output stays in its input's format
    assert F.conv2d(nchw, lw.like(nchw), padding=1).is_contiguous()
    assert F.conv2d(cl, lw.like(cl), padding=1).is_contiguous(
        memory_format=CL)


class _NCHWOnly(LayoutWeight):
    """The weight as folded, whatever the input (the behaviour before)."""
    __slots__ = ()

    def like(self, x):
        return self.nchw


def test_resnet50_features_equal_with_either_weight_format():
    """Every block of a LAUD-ResNet-50 in eval on two real COCO images,
    channels_last: the stem and each folded static block give the same
    tensor bit for bit with the channels_last conv2 weights as with the
    NCHW ones, and the channels_last copies are the ones used."""
    torch.manual_seed(0)
    net = LAUDResNet(50, 'layer', dynamic_inference=True).eval()
    x = load_coco_images(n=2, size=(160, 224)).contiguous(memory_format=CL)
    fbs = [folded(b) for b in net.blocks]
    stem = bench_stem(net)
    with torch.no_grad():
        h = stem(x)
        assert h.is_contiguous(memory_format=CL)
        for b, fb in zip(net.blocks, fbs):
            out = static_bottleneck_forward(b, h)
            # conv2 asked for its weight with a channels_last input
            # (the copy is made on that call only)
            cl_w = fb.w2_layout._channels_last
            assert cl_w is not None and cl_w.is_contiguous(memory_format=CL)
            assert out.is_contiguous(memory_format=CL)
            layout = fb.w2_layout
            fb.w2_layout = _NCHWOnly(fb.w2)
            try:
                ref = static_bottleneck_forward(b, h)
            finally:
                fb.w2_layout = layout
            assert torch.equal(out, ref)
            h = out
    assert float(h.abs().max()) > 0


def test_regnety_conv2_weight_follows_the_input():
    """The first blocks of a LAUD-RegNetY-400MF (channel skipping, G = 2,
    about half of each sample's channel groups kept) on two real COCO
    images in channels_last: the static block's and the channel path's
    grouped conv2 run on the channels_last copy of the folded weight, and
    both outputs equal bit for bit what the NCHW weight gives."""
    torch.manual_seed(0)
    net = LAUDRegNetY('regnety_400mf', paradigm='channel',
                      granularity=(2, 2, 2, 2), dynamic_inference=True).eval()
    x = load_coco_images(n=2, size=(64, 96)).contiguous(memory_format=CL)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        h = F.conv2d(x, net.conv1.weight, None, 2, 1)
        h = F.relu(net.bn1(h)).contiguous(memory_format=CL)
        for b in net.blocks[:4]:
            width = b.conv2.out_channels
            b.masker.forced_gate = (torch.rand(2, width // 2, generator=g)
                                    < 0.5).float()
            fb = folded_regnety(b)
            assert fb.w2_layout._channels_last is None
            static = static_regnety_forward(b, h)
            # the static block's conv2 asked for the channels_last copy
            cl_w = fb.w2_layout._channels_last
            assert cl_w is not None and cl_w.is_contiguous(memory_format=CL)
            fb.w2_layout._channels_last = None
            dyn = b(h)
            # ... and so did the channel path's
            assert fb.w2_layout._channels_last is not None
            assert torch.equal(fb.w2_layout._channels_last, cl_w)
            layout = fb.w2_layout
            fb.w2_layout = _NCHWOnly(fb.w2)
            try:
                static_ref, dyn_ref = static_regnety_forward(b, h), b(h)
            finally:
                fb.w2_layout = layout
            assert static.is_contiguous(memory_format=CL)
            assert dyn.is_contiguous(memory_format=CL)
            assert torch.equal(static, static_ref)
            assert torch.equal(dyn, dyn_ref)
            assert not torch.equal(dyn, static)  # the gates dropped work
            h = dyn
    assert float(h.abs().max()) > 0


def test_backbone_stem_weight_follows_the_input():
    torch.manual_seed(0)
    net = LAUDResNet(50, 'spatial', (4, 4, 2, 1), base_channels=16,
                     dynamic_inference=True).eval()
    net.force_gates(1.0)
    x = load_coco_images(n=1, size=(96, 128))
    with torch.no_grad():
        a = net(x.contiguous(memory_format=CL))
        b = net(x)
    # the fold the forward cached (stem.folded_stem)
    (w, *_), = getattr(net, stem_module._ATTR)[1].convs
    assert w._channels_last is not None
    for u, v in zip(a, b):
        assert u.is_contiguous(memory_format=CL) and v.is_contiguous()
        assert float((u - v).abs().max()) <= 1e-5 * float(v.abs().max())


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float64])
def test_cast_fold_rebuilds_the_layout_weight(dtype):
    torch.manual_seed(0)
    net = LAUDResNet(50, 'layer', base_channels=16).eval()
    fb = folded(net.blocks[0])
    c = cast_folded(fb, dtype)
    assert c.w2.dtype == dtype and c.w2_layout.nchw is c.w2
    assert fb.w2_layout.nchw is fb.w2 and fb.w2.dtype == torch.float32
    h = torch.randn(1, fb.w2.shape[1], 6, 6, dtype=dtype).contiguous(
        memory_format=CL)
    with torch.no_grad():
        y = c.conv2(h)
    assert y.dtype == dtype and y.is_contiguous(memory_format=CL)


def test_regnety_cast_fold_rebuilds_the_layout_weight():
    torch.manual_seed(0)
    net = LAUDRegNetY('regnety_400mf', paradigm='layer').eval()
    fb = folded_regnety(net.blocks[0])
    c = cast_folded(fb, torch.float64)
    assert c.w2.dtype == torch.float64 and c.w2_layout.nchw is c.w2
    assert fb.w2_layout.nchw is fb.w2 and fb.w2.dtype == torch.float32
