"""Dynamic inference (laud_mm.models.resnet.dynamic) returns the masked-dense eval
block: max abs diff <= 1e-4 in fp32 with random weights and BN statistics,
for every paradigm, gate pattern, odd sizes, stride-2 blocks and per-sample
masks; both op backends; the kernel paths each block takes. The whole
LAUD-ResNet-50 is a case of the family contract's dynamic == masked-dense
clause (tests/test_models/test_family_contract.py).

Source: paper sec. 3.4 (dynamic inference with fused operators); issue 3."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from laud_mm import ops
from laud_mm.models import LAUDBottleneck, LAUDResNet
from laud_mm.models.layers.folding import fold_conv_bn
from laud_mm.models.resnet.dynamic import (dynamic_bottleneck_forward, folded,
                                           static_bottleneck_forward)

TOL = 1e-4
BACKENDS = ['pytorch'] + (['cpp'] if ops.extension() is not None else [])


def randomize(module: nn.Module, seed: int, masker_std: float = 1.0) -> None:
    """Random conv weights, random BN affine and running statistics, and
    masker weights that give mixed (not all-on) gates."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, m in module.named_modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g) * 0.6 + 0.2)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                std = (masker_std if 'masker' in name else 1.0) / fan_in ** 0.5
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1
                                 if 'masker' in name else m.bias * 0)


def make_block(paradigm, inplanes=32, planes=8, stride=1, gran=2, seed=0):
    ds = None
    if stride != 1 or inplanes != planes * 4:
        ds = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride,
                                     bias=False), nn.BatchNorm2d(planes * 4))
    block = LAUDBottleneck(inplanes, planes, stride=stride, downsample=ds,
                           paradigm=paradigm,
                           granularity=None if paradigm == 'layer' else gran)
    randomize(block, seed)
    return block.eval()


def run_both(block, x):
    """(dynamic out, dynamic gate, masked-dense out, masked-dense gate)."""
    with torch.no_grad():
        block.dynamic_inference = False
        ref = block(x)
        ref_gate = block.last_stats['gate']
        block.dynamic_inference = True
        out = block(x)
        gate = block.last_stats['gate']
    return out, gate, ref, ref_gate


def gate_shape(block, x):
    geom = block.geometry(x.shape[-2:])
    n = x.shape[0]
    if block.paradigm == 'spatial':
        return (n,) + geom.patch_grid
    if block.paradigm == 'channel':
        return (n, geom.num_groups)
    return (n,)


def check(block, x, forced=None):
    block.masker.forced_gate = forced
    out, gate, ref, ref_gate = run_both(block, x)
    assert out.shape == ref.shape
    assert gate.shape == ref_gate.shape == gate_shape(block, x)
    assert torch.equal(gate, ref_gate)
    diff = (out - ref).abs().max().item()
    assert diff <= TOL, diff
    return gate, diff


PATTERNS = ['learned', 'off', 'on', 'random']


def _forced(pattern, block, x, seed):
    if pattern == 'learned':
        return None
    if pattern == 'off':
        return 0.0
    if pattern == 'on':
        return 1.0
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(gate_shape(block, x), generator=g) < 0.5).float()


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('paradigm,gran', [('spatial', 2), ('spatial', 3),
                                           ('spatial', 1), ('channel', 2),
                                           ('channel', 1), ('layer', None)])
@pytest.mark.parametrize('stride,hw', [(1, (13, 11)), (2, (15, 12)),
                                       (1, (8, 8))])
@pytest.mark.parametrize('pattern', PATTERNS)
def test_block_matches_masked_dense(backend, paradigm, gran, stride, hw,
                                    pattern):
    inplanes = 32 if stride == 1 else 16
    block = make_block(paradigm, inplanes, 8, stride, gran, seed=stride)
    x = torch.randn(3, inplanes, *hw)
    with ops.use_backend(backend):
        gate, _ = check(block, x, _forced(pattern, block, x, 1))
    if pattern == 'off':
        assert not gate.any()
    if pattern == 'on':
        assert gate.all()


@pytest.mark.parametrize('paradigm,gran', [('spatial', 2), ('channel', 2),
                                           ('layer', None)])
def test_learned_gates_are_mixed_and_per_sample(paradigm, gran):
    """The masker (fused into conv1 for spatial) decides per sample."""
    block = make_block(paradigm, 32, 8, 1, gran, seed=3)
    x = torch.randn(8, 32, 12, 12)
    x[:4] *= 3  # samples differ
    gate, _ = check(block, x, None)
    assert 0 < gate.float().mean() < 1
    if paradigm != 'layer':
        flat = gate.flatten(1)
        assert len({tuple(r.tolist()) for r in flat}) > 1


def test_identity_block_does_not_modify_its_input():
    for paradigm, gran in [('spatial', 2), ('channel', 2), ('layer', None)]:
        block = make_block(paradigm, 32, 8, 1, gran)
        x = torch.randn(2, 32, 9, 9)
        x0 = x.clone()
        check(block, x, _forced('random', block, x, 0))
        assert torch.equal(x, x0)


def test_bn_folding_and_cache_invalidation():
    block = make_block('channel', 32, 8, 2, 2)
    w, b = fold_conv_bn(block.conv2, block.norm2)
    x = torch.randn(2, 8, 9, 9)
    with torch.no_grad():
        assert torch.allclose(nn.functional.conv2d(x, w, b, 2, 1),
                              block.norm2(block.conv2(x)), atol=1e-5)
    fb = folded(block)
    assert folded(block) is fb  # cached
    x = torch.randn(2, 32, 10, 10)
    check(block, x, 1.0)
    with torch.no_grad():
        block.norm3.running_var.mul_(4.0)  # in-place: _version changes
    assert folded(block) is not fb
    check(block, x, _forced('random', block, x, 2))
    with torch.no_grad():
        block.conv1.weight.add_(0.1)
    check(block, x, _forced('random', block, x, 3))
    # replaced parameters and submodules, dtype changes: refolded too
    fb = folded(block)
    block.norm1.weight = nn.Parameter(block.norm1.weight.detach() * 2)
    assert folded(block) is not fb
    check(block, x, _forced('random', block, x, 4))
    fb = folded(block)
    conv3 = nn.Conv2d(8, 32, 1, bias=False)
    block.conv3 = conv3
    assert folded(block) is not fb and \
        torch.equal(folded(block).w3, fold_conv_bn(conv3, block.norm3)[0])
    check(block, x, _forced('random', block, x, 5))
    block.double()
    assert folded(block).w1.dtype == torch.float64


def test_static_forward_equals_all_on_block():
    block = make_block('layer', 16, 8, 2)
    x = torch.randn(2, 16, 11, 11)
    block.masker.forced_gate = 1.0
    with torch.no_grad():
        block.dynamic_inference = False
        ref = block(x)
        out = static_bottleneck_forward(block, x)
    assert (out - ref).abs().max() <= TOL


def test_errors():
    block = make_block('spatial', 32, 8, 1, 2)
    x = torch.randn(2, 32, 8, 8)
    geom = block.geometry((8, 8))
    with pytest.raises(ValueError, match='forced_gate'), torch.no_grad():
        block.masker.forced_gate = torch.ones(2, 3, 3)
        dynamic_bottleneck_forward(block, x, geom)
    block.masker.forced_gate = None
    # no gradients: refused under grad (parameters or input requiring it)
    with pytest.raises(RuntimeError, match='computes no gradients'):
        dynamic_bottleneck_forward(block, x, geom)
    with torch.no_grad():
        dynamic_bottleneck_forward(block, x, geom)
    block.train()
    with pytest.raises(ValueError, match='eval'):
        dynamic_bottleneck_forward(block, x, geom)


@settings(max_examples=20, deadline=None)
@given(paradigm=st.sampled_from(['spatial', 'channel', 'layer']),
       gran=st.sampled_from([1, 2, 3, 4, 7]),
       stride=st.sampled_from([1, 2]),
       h=st.integers(4, 19), w=st.integers(4, 19), n=st.integers(1, 4),
       rate=st.floats(0, 1), seed=st.integers(0, 1000),
       backend=st.sampled_from(BACKENDS))
def test_property_blocks_match_masked_dense(paradigm, gran, stride, h, w, n,
                                            rate, seed, backend):
    planes = 8
    if paradigm == 'channel' and planes % gran:
        gran = 2
    block = make_block(paradigm, 16 if stride == 2 else 32, planes, stride,
                       gran, seed=seed)
    x = torch.randn(n, block.conv1.in_channels, h, w,
                    generator=torch.Generator().manual_seed(seed))
    shape = gate_shape(block, x)
    g = torch.Generator().manual_seed(seed + 1)
    forced = (torch.rand(shape, generator=g) < rate).float()
    with ops.use_backend(backend):
        check(block, x, forced)


@pytest.mark.parametrize('s,stride', [(1, 1), (1, 2), (2, 1), (4, 2)])
@pytest.mark.parametrize('p', [3, 15, 16, 40])
def test_spatial_patch_convs_paths(s, stride, p):
    """conv2 + conv3 of gathered windows: the GEMM paths (S = 1; conv3 under
    SPATIAL_CONV3_GEMM_MAX_PATCHES patches) equal the convolutions."""
    from laud_mm.models.resnet.dynamic import folded, spatial_patch_convs
    from laud_mm.ops.policy import SPATIAL_CONV3_GEMM_MAX_PATCHES
    assert SPATIAL_CONV3_GEMM_MAX_PATCHES == 16
    block = make_block('spatial', 16, 8, stride, s, seed=p)
    fb = folded(block)
    k = (s - 1) * stride + 3
    win = torch.rand(p, 8, k, k, generator=torch.Generator().manual_seed(p))
    with torch.no_grad():
        ref = F.conv2d(F.conv2d(win, fb.w2, fb.b2, stride).relu(),
                       fb.w3, fb.b3)
        out = spatial_patch_convs(fb, win, s)
    assert out.shape == ref.shape == (p, 32, s, s)
    assert out.is_contiguous()
    assert (out - ref).abs().max() <= 1e-5


def _owned_then_alone(block, x):
    """Run the identity ``block`` (forced gate set) dynamically on a copy of
    the non-negative ``x`` inside ``owned_block_inputs`` and on another
    outside it: the first writes in place, the second leaves its input
    untouched; both equal the masked-dense block. Returns the in-place
    output."""
    from laud_mm.models.layers.dynamic import owned_block_inputs
    with torch.no_grad():
        block.dynamic_inference = False
        ref = block(x.clone())
        block.dynamic_inference = True
        mine = x.clone()
        with owned_block_inputs([block]):
            out = block(mine)
        assert out.data_ptr() == mine.data_ptr()  # in place
        assert (out - ref).abs().max() <= TOL
        kept = x.clone()
        out2 = block(kept)  # outside the context: a new tensor
        assert out2.data_ptr() != kept.data_ptr() and torch.equal(kept, x)
        assert (out2 - ref).abs().max() <= TOL
    return out


def test_layer_block_writes_into_owned_input():
    """Inside owned_block_inputs (what LAUDResNet.forward uses) an identity
    layer block adds its kept samples' branch into its (non-negative) input
    in place and leaves the skipped samples untouched; the result equals
    the masked-dense block. Outside the context the input is not modified,
    and the flag is reset on exit."""
    from laud_mm.models.layers.dynamic import (OWNED_INPUT_ATTR,
                                              owned_block_inputs)
    block = make_block('layer', 32, 8, 1, None, seed=5)
    ds_block = make_block('layer', 16, 8, 2, None, seed=6)
    x = torch.rand(5, 32, 9, 7)  # non-negative, like a block output
    forced = torch.tensor([1., 0., 0., 1., 1.])
    block.masker.forced_gate = forced
    with owned_block_inputs([block, ds_block]):
        assert getattr(block, OWNED_INPUT_ATTR)
        assert not getattr(ds_block, OWNED_INPUT_ATTR, False)
    assert not getattr(block, OWNED_INPUT_ATTR)
    out = _owned_then_alone(block, x)
    assert torch.equal(out[1], x[1]) and torch.equal(out[2], x[2])


@pytest.mark.parametrize('paradigm,planes', [('spatial', 8), ('channel', 8),
                                             ('spatial', 16)])
def test_spatial_channel_blocks_write_into_owned_input(paradigm, planes):
    """Inside owned_block_inputs an identity spatial / channel block writes
    its output into its (non-negative) input and equals the masked-dense
    block; with every gate off a spatial block returns its input itself;
    outside the context the input is untouched (planes 16: width 16, the
    fused spatial kernel with identity_nonneg)."""
    block = make_block(paradigm, 4 * planes, planes, 1, 2, seed=7)
    x = torch.rand(3, 4 * planes, 9, 7)  # non-negative, like a block output
    for pattern in ('random', 'off'):
        block.masker.forced_gate = None
        forced = _forced(pattern, block, x, 4)
        block.masker.forced_gate = forced
        out = _owned_then_alone(block, x)
        if pattern == 'off' and paradigm == 'spatial':
            assert torch.equal(out, x)  # the input itself, untouched


def test_backbone_forward_keeps_caller_input():
    """LAUDResNet's dynamic forward (identity blocks writing into their
    inputs) leaves the image tensor and the returned stage outputs intact:
    they equal the masked-dense backbone."""
    torch.manual_seed(0)
    net = LAUDResNet(50, paradigm='layer', out_indices=(0, 1, 2, 3))
    net.eval()
    randomize(net, 0, masker_std=0.3)
    x = torch.randn(2, 3, 64, 48)
    x0 = x.clone()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        net.dynamic_inference = False
        net(x)
        for b in net.blocks:
            b.masker.forced_gate = (torch.rand(2, generator=g) < 0.5).float()
        ref = net(x)
        net.dynamic_inference = True
        out = net(x)
    assert torch.equal(x, x0)
    for o, r in zip(out, ref):
        assert (o - r).abs().max() <= TOL * max(1., r.abs().max().item())


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('gran,hw', [(1, (15, 12)), (2, (13, 11)),
                                     (4, (17, 18))])
def test_window_conv1_equals_gathered_dense_conv1(backend, gran, hw):
    """Stride-2 spatial blocks: conv1 on the gathered input windows equals
    the windows of the dense conv1 output (ReLU'd, zero outside the image,
    border patches included), and a sparse gate takes that path in a block
    whose output equals the masked-dense block."""
    from laud_mm.models.resnet import dynamic
    from laud_mm.ops import policy
    block = make_block('spatial', 16, 8, 2, gran, seed=11)
    x = torch.randn(3, 16, *hw)
    fb = dynamic.folded(block)
    grid = gate_shape(block, x)
    gate = torch.zeros(grid)  # few patches, corners: outside pixels
    gate[0, 0, 0] = gate[1, grid[1] // 2, grid[2] // 2] = 1.
    gate[2, -1, -1] = gate[2, 0, -1] = 1.
    idx = (gate > 0.5).nonzero()
    with torch.no_grad(), ops.use_backend(backend):
        want = ops.gather_patches(F.conv2d(x, fb.w1, fb.b1), idx, gran, 2,
                                  1, channels=8, relu=True)
        got = dynamic.window_conv1(fb, x, idx, gran)
    assert got.shape == want.shape
    assert (got - want).abs().max() <= 1e-5
    k = (gran - 1) * 2 + 3
    assert idx.shape[0] * k * k < \
        policy.SPATIAL_WINDOW_CONV1_MAX_FRACTION * x.shape[0] * hw[0] * hw[1]
    calls = []
    real = dynamic.window_conv1
    dynamic.window_conv1 = lambda *a: calls.append(1) or real(*a)
    try:
        with ops.use_backend(backend):
            check(block, x, gate)
    finally:
        dynamic.window_conv1 = real
    assert calls == [1]


def _spy(monkeypatch, module, name):
    """Replace ``module.name`` by a wrapper that records its calls; returns
    the list the calls are appended to."""
    calls = []
    real = getattr(module, name)

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return calls


@pytest.mark.parametrize('fused', [True, False])
@pytest.mark.parametrize('gran,stride,hw,threads', [
    (4, 1, (15, 13), 1), (2, 2, (14, 11), 1), (1, 1, (7, 7), 1),
    (3, 2, (16, 16), 1), (2, 1, (9, 9), 8)])
@pytest.mark.parametrize('pattern', PATTERNS)
def test_spatial_fused_kernel_path(monkeypatch, fused, gran, stride, hw,
                                   threads, pattern):
    """Spatial blocks run the fused CPU kernel
    (laud_mm.ops.spatial_branch_add_relu) when it is the fast one (AVX-512,
    width and C_out multiples of 16; any batch, also with more threads than
    samples when the kernels run on torch's pool), else gather /
    convolutions / scatter; both equal the masked-dense block (gates from
    the masker or forced: per sample, all on, all off; odd sizes, stride 2,
    partial patches)."""
    import laud_mm.models.resnet.dynamic as dyn
    monkeypatch.setattr(dyn.policy, 'SPATIAL_FUSED_CPU', fused)
    calls = _spy(monkeypatch, dyn, '_spatial_branch')
    inplanes = 64 if stride == 1 else 32
    block = make_block('spatial', inplanes, 16, stride, gran, seed=12)
    x = torch.randn(4, inplanes, *hw,
                    generator=torch.Generator().manual_seed(12))
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gate, _ = check(block, x, _forced(pattern, block, x, 3))
        threads_ok = dyn.policy.fused_cpu_threads()
    finally:
        torch.set_num_threads(prev)
    assert threads_ok == (threads == 1 or ops.parallel_kernels())
    if pattern in ('learned', 'random'):
        assert 0 < gate.float().mean() < dyn.policy.SPATIAL_DENSE_THRESHOLD
    # every density below SPATIAL_FUSED_DENSE_THRESHOLD (1: all on runs
    # the dense block) runs the kernel, all off returns relu(shortcut)
    # without it
    assert dyn.policy.SPATIAL_FUSED_DENSE_THRESHOLD == 1.0
    expect = fused and ops.fast_spatial_branch(x, 16, 64) and threads_ok \
        and pattern not in ('off', 'on')
    assert bool(calls) == expect


@pytest.mark.parametrize('fused', [True, False])
@pytest.mark.parametrize('stride,size,threads', [
    (1, 7, 1), (1, 7, 2), (1, 14, 2), (2, 14, 2), (1, 15, 1), (1, 15, 2)])
@pytest.mark.parametrize('pattern', PATTERNS)
def test_layer_kernel_path(monkeypatch, fused, stride, size, threads,
                           pattern):
    """Layer blocks run their kept samples on the fused spatial kernel, a
    patch per kept sample (policy.LAYER_FUSED_CPU, where that kernel is the
    fast one: AVX-512, widths multiples of 16), else on the per-sample GEMM
    kernel (laud_mm.ops.sample_gemm) with one thread or on maps of at least
    policy.LAYER_GATHER_MAX_PIXELS pixels, else gathered into oneDNN's
    convolutions; every way equals the masked-dense block (per-sample
    gates, all on, all off, the masker's own; stride 2 with a downsample,
    odd map sizes)."""
    import laud_mm.models.resnet.dynamic as dyn
    monkeypatch.setattr(dyn.policy, 'LAYER_FUSED_CPU', fused)
    gemm_calls = _spy(monkeypatch, dyn, '_sample_gemm')
    fused_calls = _spy(monkeypatch, dyn, '_spatial_branch')
    inplanes = 64 if stride == 1 else 32
    block = make_block('layer', inplanes, 16, stride, seed=7)
    x = torch.randn(4, inplanes, size, size).relu_()
    forced = torch.tensor([1., 0., 1., 1.]) if pattern == 'random' else \
        _forced(pattern, block, x, 2)
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gate, _ = check(block, x, forced)
        threads_ok = dyn.policy.fused_cpu_threads()
    finally:
        torch.set_num_threads(prev)
    partial = 0 < int(gate.sum()) < 4
    on_fused = fused and threads_ok and ops.fast_spatial_branch(x, 16, 64)
    kernel = threads == 1 or size * size >= dyn.policy.LAYER_GATHER_MAX_PIXELS
    assert dyn.policy.layer_sample_gemm(size * size, threads) == kernel
    assert bool(fused_calls) == (partial and on_fused)
    assert bool(gemm_calls) == (partial and kernel and not on_fused)


@pytest.mark.parametrize('fused', [True, False])
@pytest.mark.parametrize('stride,size,threads', [
    (1, 7, 1), (2, 14, 1), (1, 15, 1), (1, 7, 8)])
def test_channel_fused_kernel_path(monkeypatch, fused, stride, size,
                                   threads):
    """Channel blocks run the fused CPU kernel
    (laud_mm.ops.channel_branch_add_relu) when it is the fast one (AVX-512;
    any batch, also with more threads than samples when the kernels run on
    torch's pool), else the batched GEMMs; both equal the masked-dense
    block, per-sample gates, any map size."""
    import laud_mm.models.resnet.dynamic as dyn
    monkeypatch.setattr(dyn.policy, 'CHANNEL_FUSED_CPU', fused)
    calls = _spy(monkeypatch, dyn, '_channel_branch')
    inplanes = 64 if stride == 1 else 32
    block = make_block('channel', inplanes, 16, stride, 2, seed=5)
    x = torch.randn(4, inplanes, size, size).relu_()
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gate, _ = check(block, x, _forced('random', block, x, 2))
        threads_ok = dyn.policy.fused_cpu_threads()
    finally:
        torch.set_num_threads(prev)
    assert 0 < gate.float().mean() < 1
    expect = fused and ops.fast_channel_branch(x) and threads_ok
    assert bool(calls) == expect
