"""Dynamic inference == masked-dense evaluation under every input: a
property-based test (hypothesis) over families (LAUD-ResNet, -RegNetY,
-T2T-ViT), depths, paradigms, granularities, dilations and strides, input
sizes, batch sizes below and above the thread count, gate patterns
(learned, forced on / off, random per gate), intra-op thread counts, op
backends and CPU autocast (float32 and bfloat16); and one regression test
per input that once broke it.

Criterion: float32, ``max |dynamic - masked-dense| <= 1e-4 * max(1,
max |masked-dense|)`` with the same gates (the family contract's bound);
bfloat16 autocast (forced gates: a learned gate near a tie may round either
way in half precision), both compared to the float64 masked-dense model
with the same gates: the dynamic error is at most twice the masked-dense
one (or 1e-2 of the output scale).

``LAUD_FUZZ_EXAMPLES`` sets the number of random examples; without it (CI)
the same 30 are drawn every run (``derandomize``; under a minute on 2
cores); docs/reliability.md gives the command that runs 1000.

Source: paper sec. 3.4 (dynamic inference computes the masked-dense
function); docs/method.md sec. 1.
"""
import contextlib
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import laud_mm  # noqa: F401  (first: registers, torchvision compat)
from laud_mm import ops  # noqa: E402
from laud_mm.models.layers.masks import masked_avg_pool  # noqa: E402
from laud_mm.models.regnet.block import LAUDRegNetYBlock  # noqa: E402
from laud_mm.models.resnet.dynamic import folded  # noqa: E402
from laud_mm.models.resnet.dynamic import spatial_patch_convs  # noqa: E402
from laud_mm.registry import MODELS  # noqa: E402

from conftest import load_coco_images  # noqa: E402

BACKENDS = ['pytorch'] + (['cpp'] if ops.extension() is not None else [])
FUZZ_EXAMPLES = int(os.environ.get('LAUD_FUZZ_EXAMPLES', 30))
#: CI's default run draws the same examples every time (a run fails on the
#: code, not on a newly drawn example); ``LAUD_FUZZ_EXAMPLES=N`` explores N
#: random ones (docs/reliability.md)
FUZZ_DERANDOMIZE = 'LAUD_FUZZ_EXAMPLES' not in os.environ
TOL = 1e-4

#: (strides, dilations) of the four ResNet stages: mmdet's default, a
#: dilated last stage (output stride 16) and mmseg's output stride 8
RESNET_STRIDES_DILATIONS = [((1, 2, 2, 2), (1, 1, 1, 1)),
                            ((1, 2, 2, 1), (1, 1, 1, 2)),
                            ((1, 2, 1, 1), (1, 1, 2, 4))]
#: a small RegNetY (group width 8) so that an example builds and runs fast
REGNET_TINY = dict(widths=(8, 16, 24, 32), group_width=8)


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    """One intra-op thread unless a test sets another (results do not
    depend on it; 2 threads on a shared 2-core machine wait on each
    other)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def randomize(net: nn.Module, seed: int) -> None:
    """Random BN affine and statistics, SE weights that matter and masker
    weights that give mixed learned gates."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, m in net.named_modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g) * 0.6 + 0.2)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            elif isinstance(m, (nn.Conv2d, nn.Linear)) and (
                    'masker' in name or '.se.' in name):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) /
                               m.weight[0].numel() ** 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


@st.composite
def models(draw):
    """(registry config, family name) of a small model of any family."""
    family = draw(st.sampled_from(['resnet', 'regnety', 't2t_vit']))
    paradigm = draw(st.sampled_from(['spatial', 'channel', 'layer']))
    if family == 'resnet':
        strides, dilations = draw(st.sampled_from(RESNET_STRIDES_DILATIONS))
        cfg = dict(type='laud_mm.LAUDResNet',
                   depth=draw(st.sampled_from([50, 101])), base_channels=8,
                   strides=strides, dilations=dilations,
                   zero_init_residual=False)
        channel_g = [1, 2, 4, 8]
    elif family == 'regnety':
        depths = tuple(draw(st.integers(1, 2)) for _ in range(4))
        cfg = dict(type='laud_mm.LAUDRegNetY',
                   arch=dict(REGNET_TINY, depths=depths))
        channel_g = [1, 2, 4, 8]
    else:
        heads = draw(st.sampled_from([2, 4]))
        cfg = dict(type='laud_mm.LAUDT2TViT', img_size=64, embed_dims=32,
                   num_layers=draw(st.integers(1, 3)),
                   t2t_cfg=dict(token_dims=8),
                   layer_cfgs=dict(num_heads=heads, feedforward_channels=64,
                                   qkv_bias=draw(st.booleans())),
                   out_type='raw', out_indices=(-1,))
        return dict(cfg, paradigm=paradigm), family
    if paradigm == 'spatial':
        cfg['granularity'] = tuple(draw(st.sampled_from([1, 2, 3, 4, 7]))
                                   for _ in range(4))
    elif paradigm == 'channel':
        cfg['granularity'] = tuple(draw(st.sampled_from(channel_g))
                                   for _ in range(4))
    return dict(cfg, paradigm=paradigm), family


def force(net: nn.Module, pattern: str, seed: int) -> None:
    """Impose gates: 'learned' (none), 'on', 'off' or 'random' (per gate,
    shapes of the last forward)."""
    if pattern in ('learned', 'on', 'off'):
        net.force_gates({'learned': None, 'on': 1.0, 'off': 0.0}[pattern])
        return
    g = torch.Generator().manual_seed(seed)
    for b in net.blocks:
        shape = b.last_stats['gate'].shape
        b.masker.forced_gate = (torch.rand(shape, generator=g) < 0.5).float()


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a.double() - ref.double()).abs().max() /
            ref.double().abs().max().clamp_min(1.)).item()


@contextlib.contextmanager
def threads(n: int):
    prev = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


@contextlib.contextmanager
def masker_inputs(net):
    """Record each masker's inputs of its first call (the masked-dense
    pass): {masker: args}."""
    seen, handles = {}, []

    def hook(masker, args, out):  # returns None: the output is unchanged
        seen.setdefault(masker, args)
    for b in net.blocks:
        handles.append(b.masker.register_forward_hook(hook))
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def assert_near_ties(net, seen, ref_gates, rel: float = 1e-4) -> None:
    """Every gate on which the dynamic pass differs from masked-dense is a
    near-tie of the masker's keep - skip logits (relative to the block's
    largest difference)."""
    for b, g in zip(net.blocks, ref_gates):
        differ = b.last_stats['gate'] != g
        if not differ.any():
            continue
        logits = b.masker.logits(*seen[b.masker]).float()
        diff = (logits[..., 0] - logits[..., 1]).abs()
        assert (diff[differ] <= rel * diff.max().clamp_min(1.)).all(), \
            (diff[differ], diff.max())


@contextlib.contextmanager
def bf16_convolutions():
    """Record the geometry of every bfloat16 convolution that runs within
    the context (ATen's ``convolution``, whichever module or function
    calls it: the masked-dense modules and the dynamic paths' folded
    convolutions alike): a set of (input shape, weight shape, stride,
    padding, dilation, groups) of the 2-D, not transposed ones."""
    from torch.utils._python_dispatch import TorchDispatchMode
    seen = set()

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten.convolution.default and \
                    args[0].dtype == torch.bfloat16 and \
                    args[0].dim() == 4 and not args[6]:  # 2-D, not transposed
                seen.add((tuple(args[0].shape), tuple(args[1].shape),
                          tuple(args[3]), tuple(args[4]), tuple(args[5]),
                          args[8]))
            return func(*args, **(kwargs or {}))
    with Record():
        yield seen


_BF16_CONV_OK = {}


def bf16_convolution_ok(geom) -> bool:
    """Whether torch computes a bfloat16 convolution of this geometry
    (:func:`bf16_convolutions`) right on this machine: random operands
    rounded to bfloat16, the bfloat16 result within 5 % of the largest
    magnitude of the float32 result on the same operands. torch 2.13's CPU
    bfloat16 3 x 3 convolution of stride 2 returns wrong (often
    non-finite) values for inputs 1 - 2 pixels wide and 9 or more high,
    on every call, in every memory format: an upstream defect that the
    fuzz test must not blame on the dynamic path (the masked-dense model
    hits it too)."""
    if geom not in _BF16_CONV_OK:
        xs, ws, stride, padding, dilation, groups = geom
        g = torch.Generator().manual_seed(0)
        fan_in = ws[1] * ws[2] * ws[3]
        x = torch.randn(xs, generator=g).bfloat16()
        w = (torch.randn(ws, generator=g) / fan_in ** 0.5).bfloat16()
        y = F.conv2d(x, w, None, stride, padding, dilation, groups).float()
        ref = F.conv2d(x.float(), w.float(), None, stride, padding,
                       dilation, groups)
        _BF16_CONV_OK[geom] = bool(torch.isfinite(y).all()) and float(
            (y - ref).abs().max()) <= 0.05 * float(ref.abs().max()) + 1e-3
    return _BF16_CONV_OK[geom]


_COCO = {}


def images(kind: str, n: int, hw, seed: int) -> torch.Tensor:
    """``n`` images of size ``hw``: Gaussian noise or real COCO images
    (coco_tiny, resized)."""
    if kind == 'noise':
        return torch.randn(n, 3, *hw,
                           generator=torch.Generator().manual_seed(seed))
    if 'coco' not in _COCO:
        _COCO['coco'] = load_coco_images(n=4, size=(96, 128))
    x = _COCO['coco'][torch.arange(n) % 4]
    return F.interpolate(x, size=hw, mode='bilinear', align_corners=False)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None,
          derandomize=FUZZ_DERANDOMIZE,
          suppress_health_check=[HealthCheck.too_slow])
@given(model=models(), data=st.data())
def test_dynamic_equals_masked_dense(model, data):
    cfg, family = model
    dtype = data.draw(st.sampled_from([torch.float32, torch.bfloat16]),
                      label='autocast dtype')
    patterns = ['on', 'off', 'random'] + \
        (['learned'] if dtype == torch.float32 else [])
    pattern = data.draw(st.sampled_from(patterns), label='gates')
    n = data.draw(st.integers(1, 4), label='batch')
    n_threads = data.draw(st.sampled_from([1, 2]), label='threads')
    lo = 32 if family == 't2t_vit' else 9
    hw = (data.draw(st.integers(lo, 80), label='H'),
          data.draw(st.integers(lo, 80), label='W'))
    kind = data.draw(st.sampled_from(['noise', 'coco']), label='images')
    backend = data.draw(st.sampled_from(BACKENDS), label='backend')
    seed = data.draw(st.integers(0, 2 ** 16), label='seed')

    torch.manual_seed(seed)
    net = MODELS.build(cfg)
    randomize(net, seed)
    net.eval()
    x = images(kind, n, hw, seed)
    with threads(n_threads), ops.use_backend(backend), torch.no_grad():
        net(x)  # gate shapes for the forced patterns
        force(net, pattern, seed + 1)
        autocast = torch.autocast('cpu', dtype=dtype,
                                  enabled=dtype != torch.float32)
        record = bf16_convolutions if dtype == torch.bfloat16 else \
            (lambda: contextlib.nullcontext(set()))
        with autocast, masker_inputs(net) as seen:
            net.dynamic_inference = False
            with record() as md_convs:
                ref = net(x)
            ref_gates = [b.last_stats['gate'] for b in net.blocks]
            net.dynamic_inference = True
            with record() as dyn_convs:
                out = net(x)
        # an upstream bfloat16 convolution defect that the masked-dense
        # model hits (bf16_convolution_ok) says nothing of the dynamic
        # path; one that only the dynamic path hits is its defect
        assume(all(bf16_convolution_ok(c) for c in md_convs))
        broken = [c for c in dyn_convs if not bf16_convolution_ok(c)]
        assert not broken, f'the dynamic path runs bf16 convolutions ' \
            f'torch computes wrong: {broken}'
        if not all(torch.equal(b.last_stats['gate'], g)
                   for b, g in zip(net.blocks, ref_gates)):
            # the dynamic spatial path computes the masker's logit fused
            # into conv1 (conv, then pool): a near-tie may round the other
            # way. Check that every differing gate is one, then compare
            # with the masked-dense gates imposed.
            assert_near_ties(net, seen, ref_gates)
            for b, g in zip(net.blocks, ref_gates):
                b.masker.forced_gate = g.float()
            with autocast:
                net.dynamic_inference = False
                ref = net(x)
                net.dynamic_inference = True
                out = net(x)
        assert [o.shape for o in out] == [r.shape for r in ref]
        if dtype == torch.float32:
            for a, r in zip(out, ref):
                assert a.dtype == r.dtype
                assert rel_err(a, r) <= TOL, rel_err(a, r)
            return
        net.dynamic_inference = False
        exact = net.double()(x.double())
        for a, r, e in zip(out, ref, exact):
            assert a.dtype == r.dtype
            err_md, err_dyn = rel_err(r, e), rel_err(a, e)
            assert err_dyn <= max(2 * err_md, 1e-2), (err_dyn, err_md)


# ------------------------------------------------------------ regressions
def _mixed_spatial_gates(net: nn.Module, density: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for b in net.blocks:
        shape = b.last_stats['gate'].shape
        b.masker.forced_gate = (torch.rand(shape, generator=g) <
                                density).float()


@pytest.mark.parametrize('strides,dilations', RESNET_STRIDES_DILATIONS[1:])
@pytest.mark.parametrize('fused', [False, True])
def test_spatial_s1_in_a_dilated_stage(monkeypatch, strides, dilations,
                                       fused):
    """S = 1 in a stage with dilation > 1 on the gather path (taken when the
    fused CPU kernel is not: batch below the thread count, autocast, or no
    AVX-512), under 80 % of the patches kept: the gathered window is 2d + 1
    pixels wide while conv2's GEMM weights are 3 x 3 (was ``RuntimeError:
    mat1 and mat2 shapes cannot be multiplied``); and the fused path."""
    monkeypatch.setattr(ops.policy, 'SPATIAL_FUSED_CPU', fused)
    net = MODELS.build(dict(type='laud_mm.LAUDResNet', depth=50,
                            base_channels=8, paradigm='spatial',
                            granularity=(1, 1, 1, 1), strides=strides,
                            dilations=dilations)).eval()
    randomize(net, 0)
    x = images('coco', 2, (64, 64), 0)
    with torch.no_grad():
        net(x)
        _mixed_spatial_gates(net, 0.5, 1)
        ref = net(x)
        net.dynamic_inference = True
        out = net(x)
    assert any(b.dilation > 1 for b in net.blocks)
    for a, r in zip(out, ref):
        assert rel_err(a, r) <= TOL


@pytest.mark.parametrize('dilation', [1, 2, 3])
def test_spatial_patch_convs_s1_dilated(dilation):
    """conv2 of 1 x 1 patches as one GEMM reads the 3 x 3 taps of the
    (2d + 1)-pixel window: equal to the dilated convolution."""
    net = MODELS.build(dict(type='laud_mm.LAUDResNet', depth=50,
                            base_channels=8, paradigm='spatial',
                            granularity=(1, 1, 1, 1), strides=(1, 2, 2, 1),
                            dilations=(1, 1, 1, dilation))).eval()
    randomize(net, 0)
    fb = folded(net.blocks[-1])
    k = 2 * dilation + 1
    win = torch.rand(5, fb.w2.shape[1], k, k,
                     generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = F.conv2d(F.conv2d(win, fb.w2, fb.b2, 1, 0, dilation).relu(),
                       fb.w3, fb.b3)
        out = spatial_patch_convs(fb, win, 1)
    assert out.shape == ref.shape == (5, fb.w3.shape[0], 1, 1)
    assert (out - ref).abs().max() <= 1e-5


def _bf16_close(net, x):
    """dynamic vs masked-dense under bfloat16 autocast, both against the
    float64 masked-dense model: (dynamic error, masked-dense error)."""
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        net.dynamic_inference = False
        ref = net(x)
        net.dynamic_inference = True
        out = net(x)
    with torch.no_grad():
        net.dynamic_inference = False
        exact = net.double()(x.double())
        net.float()
    return [(rel_err(a, e), rel_err(r, e))
            for a, r, e in zip(out, ref, exact)]


#: why the pinned R101 bfloat16 example fails its bound (a citation kept in
#: one string literal: the section checker reads it)
_R101_KNOWN = ("known: the bf16 bound (2x masked-dense's error, or 1 %) is "
               'tight for R101: stage 3 1.6 % against 0.57 % (see '
               'docs/reliability.md, "An upstream bfloat16 defect")')


@pytest.mark.xfail(strict=True, reason=_R101_KNOWN)
def test_r101_channel_bf16_stage3_error_bound():
    """The one example a 1000-example random run found over the bfloat16
    bound, pinned so that the documented figures can be checked and a
    change that brings it under the bound is noticed: LAUD-ResNet-101,
    channel G = 8-2-2-1, gates on, 1 x 9 x 9 noise (seed 1284), PyTorch
    backend."""
    seed = 1284
    torch.manual_seed(seed)
    net = MODELS.build(dict(type='laud_mm.LAUDResNet', depth=101,
                            base_channels=8, paradigm='channel',
                            granularity=(8, 2, 2, 1))).eval()
    randomize(net, seed)
    x = images('noise', 1, (9, 9), seed)
    with torch.no_grad(), ops.use_backend('pytorch'):
        net(x)
        net.force_gates(1.0)
        errs = _bf16_close(net, x)
    assert errs[2][0] == pytest.approx(0.0161, abs=1e-3) and \
        errs[2][1] == pytest.approx(0.0057, abs=1e-3)  # the documented pair
    for err_dyn, err_md in errs:
        assert err_dyn <= max(2 * err_md, 1e-2), (err_dyn, err_md)


def test_channel_blocks_with_every_group_off_under_autocast():
    """Every sample keeps 0 channel groups: bn3's shift alone (float32) was
    added into a bfloat16 shortcut (was ``Index put requires the source and
    destination dtypes match``)."""
    net = MODELS.build(dict(type='laud_mm.LAUDResNet', depth=50,
                            base_channels=8, paradigm='channel',
                            granularity=(2, 2, 2, 2))).eval()
    randomize(net, 0)
    net.force_gates(0.0)
    for err_dyn, err_md in _bf16_close(net, images('coco', 2, (64, 64), 0)):
        assert err_dyn <= max(2 * err_md, 1e-2)


def test_t2t_head_skipping_under_autocast():
    """Head skipping under CPU autocast: proj of the kept heads runs in
    bfloat16 and was written into a float32 buffer (was ``index_copy_():
    self and source expected to have the same dtype``)."""
    net = MODELS.build(dict(type='laud_mm.LAUDT2TViT', img_size=64,
                            embed_dims=32, num_layers=2,
                            t2t_cfg=dict(token_dims=8), out_type='raw',
                            layer_cfgs=dict(num_heads=4,
                                            feedforward_channels=64),
                            paradigm='channel'))
    net.eval()
    randomize(net, 0)
    for b in net.blocks:  # mixed, all-off and all-on samples
        b.masker.forced_gate = torch.tensor([[1., 0, 1, 0], [0, 0, 0, 0],
                                             [1, 1, 1, 1]])
    for err_dyn, err_md in _bf16_close(net, images('coco', 3, (64, 64), 0)):
        assert err_dyn <= max(2 * err_md, 1e-2)


def test_regnety_spatial_se_squeeze_counts_in_float32():
    """The SE squeeze of the dynamic spatial path over > 256 kept pixels
    under bfloat16 autocast: a bfloat16 count stops at 256 (the squeeze was
    8x too large here, 1.5e-2 off float64 where masked-dense is 3e-3).
    Both paths sum and count in float32."""
    torch.manual_seed(0)
    block = LAUDRegNetYBlock(48, 48, 1, 8, 0.25, 'spatial', 1).eval()
    with torch.no_grad():  # an SE whose excitation depends on the squeeze
        block.se.fc1.weight.normal_(0, 1.)
        block.se.fc2.weight.normal_(0, 1.)
    x = torch.randn(2, 48, 64, 64,
                    generator=torch.Generator().manual_seed(1)).relu()
    block.masker.forced_gate = (torch.rand(
        2, 64, 64, generator=torch.Generator().manual_seed(2)) < 0.5).float()
    with torch.no_grad():
        exact = block.double()(x.double())
        block.float()
        with torch.autocast('cpu', dtype=torch.bfloat16):
            ref = block(x.bfloat16())
            block.dynamic_inference = True
            out = block(x.bfloat16())
    err_md, err_dyn = rel_err(ref, exact), rel_err(out, exact)
    assert err_md <= 1e-2
    assert err_dyn <= 1.5 * err_md, (err_dyn, err_md)
    # the masked mean itself: float32 counts of 2048 kept pixels
    h = torch.ones(1, 1, 64, 64, dtype=torch.bfloat16)
    mask = torch.zeros(1, 1, 64, 64, dtype=torch.bfloat16)
    mask[..., :32, :] = 1
    assert masked_avg_pool(h, mask).item() == 1.


@pytest.mark.parametrize('family', ['resnet', 'regnety'])
@pytest.mark.parametrize('paradigm', ['spatial', 'channel', 'layer'])
def test_block_on_float32_input_under_autocast(family, paradigm):
    """A block called alone on a float32 input under autocast adds its
    bfloat16 branch to a float32 shortcut: the output is float32, as the
    masked-dense block's, and equal to it within bfloat16 rounding (the
    scatter kernels take one dtype: was ``out, identity and patches must
    share a dtype``)."""
    gran = {'spatial': 2, 'channel': 4, 'layer': None}[paradigm]
    torch.manual_seed(0)
    if family == 'resnet':
        block = MODELS.build(dict(
            type='laud_mm.LAUDResNet', depth=50, base_channels=8,
            paradigm=paradigm, granularity=None if gran is None
            else (gran,) * 4)).blocks[1]
    else:
        block = LAUDRegNetYBlock(16, 16, 1, 8, 0.25, paradigm, gran)
    randomize(block, 0)
    block.eval()
    x = torch.rand(2, block.conv1.in_channels, 16, 16,
                   generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        block(x)
    block.masker.forced_gate = (torch.rand(
        block.last_stats['gate'].shape,
        generator=torch.Generator().manual_seed(1)) < 0.5).float()
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        block.dynamic_inference = False
        ref = block(x)
        block.dynamic_inference = True
        out = block(x)
    assert ref.dtype == out.dtype == torch.float32
    assert rel_err(out, ref) <= 2e-2
