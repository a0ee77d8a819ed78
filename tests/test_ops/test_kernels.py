"""laud_mm.ops: gather with halo and fused scatter-add + ReLU, compiled
kernels against the PyTorch reference and against dense convolution.

Source: paper sec. 3.4 / appendix (fused gather-conv3x3 and scatter-add)."""
import sys

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from laud_mm import ops
from laud_mm.models.layers.masks import expand_spatial_gate

BACKENDS = ['pytorch'] + (['cpp'] if ops.extension() is not None else [])


def _case(n, c, h, w, s, stride, dil, p_on, seed, cout=5):
    g = torch.Generator().manual_seed(seed)
    feat = torch.randn(n, c + 1, h, w, generator=g)  # + a masker channel
    w2 = torch.randn(cout, c, 3, 3, generator=g)
    dense = F.conv2d(F.relu(feat[:, :c]), w2, None, stride, dil, dil)
    ho, wo = dense.shape[-2:]
    gate = (torch.rand(n, -(-ho // s), -(-wo // s), generator=g)
            < p_on).float()
    ident = torch.randn(n, cout, ho, wo, generator=g)
    return feat, w2, dense, gate, ident


def _sparse_block(feat, w2, gate, ident, s, stride, dil, c, inplace=False):
    idx = ops.patch_indices(gate)
    win = ops.gather_patches(feat, idx, s, stride, dil, channels=c, relu=True)
    k = ops.window_size(s, stride, dil)
    assert win.shape == (idx.shape[0], c, k, k)
    y = F.conv2d(win, w2, None, stride, 0, dil)
    assert y.shape[-2:] == (s, s)
    return ops.scatter_add_relu(ident.clone() if inplace else ident, y, idx,
                                s, inplace=inplace)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('n,c,h,w,s,stride,dil', [
    (2, 6, 13, 11, 4, 1, 1),    # odd size, partial patches
    (2, 5, 14, 15, 2, 2, 1),    # stride-2 block
    (3, 4, 7, 7, 1, 1, 1),      # pixel-level S = 1
    (1, 3, 9, 10, 3, 2, 2),     # dilation 2
    (2, 3, 8, 8, 7, 1, 1),      # one patch covers (almost) the map
])
@pytest.mark.parametrize('p_on', [0.0, 0.5, 1.0])
def test_gather_conv_scatter_equals_masked_dense_conv(
        backend, n, c, h, w, s, stride, dil, p_on):
    feat, w2, dense, gate, ident = _case(n, c, h, w, s, stride, dil, p_on, 0)
    mask = expand_spatial_gate(gate, s, dense.shape[-2:])
    expected = F.relu(ident + dense * mask)
    with ops.use_backend(backend):
        assert ops.backend(feat.device) == backend
        out = _sparse_block(feat, w2, gate, ident, s, stride, dil, c)
        out_inplace = _sparse_block(feat, w2, gate, ident, s, stride, dil, c,
                                    inplace=True)
    assert (out - expected).abs().max() <= 1e-4
    assert torch.equal(out, out_inplace)
    # skipped positions are exactly relu(identity)
    assert torch.equal(out[mask.expand_as(out) == 0],
                       F.relu(ident)[mask.expand_as(out) == 0])


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 6), h=st.integers(3, 17),
       w=st.integers(3, 17), s=st.integers(1, 5), stride=st.integers(1, 2),
       dil=st.integers(1, 2), p_on=st.floats(0, 1), seed=st.integers(0, 99))
def test_property_kernels_match_reference_and_dense(n, c, h, w, s, stride, dil,
                                                    p_on, seed):
    feat, w2, dense, gate, ident = _case(n, c, h, w, s, stride, dil, p_on, seed)
    mask = expand_spatial_gate(gate, s, dense.shape[-2:])
    expected = F.relu(ident + dense * mask)
    idx = ops.patch_indices(gate)
    outs = []
    for backend in BACKENDS:
        with ops.use_backend(backend):
            outs.append(_sparse_block(feat, w2, gate, ident, s, stride, dil, c))
            win = ops.gather_patches(feat, idx, s, stride, dil, channels=c)
            ref = ops.gather_patches_reference(feat, idx, s, stride, dil, c)
            assert torch.equal(win, ref)
    for out in outs:
        assert (out - expected).abs().max() <= 1e-4
    # windows are bit-identical; conv may pick another algorithm per layout
    assert all((outs[0] - o).abs().max() <= 1e-5 for o in outs[1:])


@pytest.mark.parametrize('backend', BACKENDS)
def test_float64_and_empty_index(backend):
    feat = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    idx = torch.zeros(0, 3, dtype=torch.int64)
    with ops.use_backend(backend):
        win = ops.gather_patches(feat, idx, 2)
        assert win.shape == (0, 3, 4, 4) and win.dtype == torch.float64
        ident = torch.randn(2, 4, 9, 9, dtype=torch.float64)
        out = ops.scatter_add_relu(ident, torch.zeros(0, 4, 2, 2,
                                                      dtype=torch.float64),
                                   idx, 2)
    assert torch.equal(out, F.relu(ident))


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('patch,h,w', [
    ((1, 1), 7, 7), ((2, 2), 14, 14),   # tiled S = 1, 2 (specialised)
    ((2, 2), 13, 15), ((1, 4), 9, 10),  # partial and rectangular patches
    ((2, 1), 8, 7), ((4, 4), 13, 11),   # and the row kernel (Sh * Sw > 4)
])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_scatter_add_relu_kernels_equal_reference(backend, patch, h, w,
                                                  dtype):
    """Every scatter kernel (one-pass rows; blocked over L1-sized channel
    blocks for patches of <= 4 pixels, 43 channels of 32 x 32 planes make
    partial blocks) equals the PyTorch reference bit for bit: out of place,
    in place, and in place with ``identity_nonneg`` (inactive pixels left
    untouched); a negative identity with the hint raises."""
    g = torch.Generator().manual_seed(h * w)
    sh, sw = patch
    for n, c, hh, ww in ((2, 5, h, w), (2, 43, 32, 32)):
        gh, gw = -(-hh // sh), -(-ww // sw)
        idx = ops.patch_indices(
            (torch.rand(n, gh, gw, generator=g) < 0.45).float())
        ident = torch.randn(n, c, hh, ww, generator=g, dtype=dtype)
        y = torch.randn(idx.shape[0], c, sh, sw, generator=g, dtype=dtype)
        ref = ops.scatter_add_relu_reference(ident, y, idx, patch)
        nonneg = ident.relu()
        ref_nonneg = ops.scatter_add_relu_reference(nonneg, y, idx, patch)
        with ops.use_backend(backend):
            assert torch.equal(ops.scatter_add_relu(ident, y, idx, patch), ref)
            assert torch.equal(ops.scatter_add_relu(
                ident.clone(), y, idx, patch, inplace=True), ref)
            out = nonneg.clone()
            res = ops.scatter_add_relu(out, y, idx, patch, inplace=True,
                                       identity_nonneg=True)
            assert res is out and torch.equal(out, ref_nonneg)
            with pytest.raises(ValueError, match='identity_nonneg'):
                ops.scatter_add_relu(ident, y, idx, patch, inplace=True,
                                     identity_nonneg=True)


def test_patch_indices_records_sample_and_location():
    gate = torch.zeros(2, 3, 4)
    gate[0, 1, 2] = 1
    gate[1, 2, 0] = 1
    assert ops.patch_indices(gate).tolist() == [[0, 1, 2], [1, 2, 0]]
    with pytest.raises(ValueError, match='gate'):
        ops.patch_indices(torch.zeros(2, 3))


@pytest.mark.parametrize('shape', [(3, 4, 3), (2, 1, 7, 1), (5,), (1,),
                                   (0, 3), (4, 0)])
def test_active_and_kept_index_equal_nonzero(shape):
    """The device-side index lists of the CUDA paths (no host wait) are
    ``nonzero``'s coordinates in row-major order, zero-padded, with the
    patch map and count; kept_index lists each row's True columns."""
    from laud_mm.ops.indexing import active_index, kept_index
    g = torch.Generator().manual_seed(len(shape))
    for _ in range(4):
        mask = torch.rand(shape, generator=g) < 0.4
        idx, pos, count = active_index(mask)
        nz = mask.nonzero()
        p = nz.shape[0]
        assert int(count) == p and idx.shape == (mask.numel(), mask.dim())
        assert torch.equal(idx[:p], nz) and not idx[p:].any()
        assert torch.equal(pos[mask], torch.arange(p))
        assert (pos[~mask] == -1).all()
        if mask.dim() == 2 and mask.numel():
            kept = kept_index(mask, shape[1], -1)
            for row, k in zip(mask, kept):
                cols = row.nonzero().flatten()
                assert torch.equal(k[:len(cols)], cols)
                assert (k[len(cols):] == -1).all()


@pytest.mark.parametrize('n,groups,g2,pad', [(8, 256, 2, 8), (3, 10, 1, 8),
                                               (2, 5, 4, 16), (0, 4, 2, 8)])
def test_channel_kept_lists_compiled_equals_reference(n, groups, g2, pad):
    """The compiled kept-channel lists equal the reference (gt,
    repeat_interleave, sum, stable sort, padding): random gates, a sample
    with none kept, one with all kept, NaN (skipped, as torch's `>`), a
    batch with every group kept (the padded length capped at the width)
    and with none (an empty list); the kept-group total."""
    from laud_mm.ops import channel_kept_lists, channel_kept_lists_reference
    g = torch.Generator().manual_seed(groups)
    gates = [torch.rand(n, groups, generator=g), torch.ones(n, groups),
             torch.zeros(n, groups)]
    if n >= 3:
        gates[0][1] = 0.
        gates[0][2] = 1.
        gates[0][0, 0] = float('nan')
    width = groups * g2
    for gate in gates:
        ref = channel_kept_lists_reference(gate, g2, pad)
        got = channel_kept_lists(gate, g2, pad)
        assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
        assert got[2] == ref[2] == int((gate > 0.5).sum())
        if ops.extension() is not None:  # the compiled pass itself
            ext = ops.extension().channel_kept_lists(gate, g2, pad)
            assert torch.equal(ext[0], ref[0]) and ext[2] == ref[2]
        for row, cnt in zip(got[0], got[1]):
            assert (row[cnt:] == width).all()
        assert got[0].shape[1] <= width and got[0].shape[1] % pad in (
            0, width % pad)
    with pytest.raises(ValueError, match='granularity=0'):
        channel_kept_lists(gates[0], 0, pad)
    with pytest.raises(ValueError, match='gate must be'):
        channel_kept_lists(gates[0][None], g2, pad)
    if ops.extension() is not None:
        with pytest.raises(RuntimeError, match='float32'):
            ops.extension().channel_kept_lists(gates[0].double(), g2, pad)


@pytest.mark.skipif(ops.extension() is None, reason='laud_mm._ext not built')
@pytest.mark.parametrize('n,c,h,o', [(8, 2048, 16, 512), (3, 256, 16, 64),
                                     (2, 37, 5, 6), (4, 1024, 2, None),
                                     (1, 5, 2, None), (0, 64, 16, 32)])
def test_masker_gate_compiled_equals_reference(n, c, h, o):
    """The compiled masker gate (ops.masker_gate: a channel masker's MLP,
    or a layer masker's linear layer when o is None) against the
    reference (F.linear, ReLU, F.linear, keep >= skip): logits equal to
    float rounding, each gate its own logits' decision and the
    reference's wherever the two logits do not tie to rounding, a NaN
    input giving NaN logits and gate 0 as in torch, the same bits at 1 and
    2 threads; lengths that are not a multiple of the 16 partial sums;
    a non-contiguous input (copied for the kernel, which itself refuses
    one)."""
    from laud_mm.ops import masker_gate, masker_gate_reference
    g = torch.Generator().manual_seed(c + h)
    pooled = torch.rand(n, c, generator=g)
    w1 = torch.randn(h, c, generator=g) / c ** 0.5
    b1 = torch.randn(h, generator=g)
    w2 = b2 = None
    if o is not None:
        w2 = torch.randn(o, h, generator=g) / h ** 0.5
        b2 = torch.randn(o, generator=g) * 0.1
    if n >= 2:
        pooled[1, 3] = float('nan')
    ref_gate, ref_logits = masker_gate_reference(pooled, w1, b1, w2, b2)
    prev = torch.get_num_threads()
    got = []
    try:
        with ops.use_backend('cpp'):
            assert ops.fast_masker_gate(pooled, w1, b1)
            for t in (1, 2):
                torch.set_num_threads(t)
                got.append(masker_gate(pooled, w1, b1, w2, b2))
            strided = torch.stack([pooled, pooled], 2)[..., 0]
            got.append(masker_gate(strided, w1, b1, w2, b2))
    finally:
        torch.set_num_threads(prev)
    out = h if o is None else o
    (gate, logits) = got[0]
    assert gate.shape == (n, out // 2) and logits.shape == (n, out)
    for other_gate, other_logits in got[1:]:
        assert torch.equal(gate, other_gate)
        torch.testing.assert_close(logits, other_logits, rtol=0, atol=0,
                                   equal_nan=True)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5,
                               equal_nan=True)
    pairs = logits.view(n, out // 2, 2)
    assert torch.equal(gate, (pairs[..., 0] >= pairs[..., 1]).float())
    if n >= 2:
        assert logits[1].isnan().all() and not gate[1].any()
    ref_pairs = ref_logits.view(n, out // 2, 2)
    clear = (ref_pairs[..., 0] - ref_pairs[..., 1]).abs() > 1e-4
    assert torch.equal(gate[clear], ref_gate[clear])
    if n:
        with pytest.raises(RuntimeError, match='float32'):
            ops.extension().masker_gate(pooled.double(), w1, b1, None, None)
        with pytest.raises(RuntimeError, match='not contiguous'):
            ops.extension().masker_gate(strided, w1, b1, None, None)


def test_masker_gate_bad_arguments_and_fallbacks():
    """Shapes that do not chain, w2 without b2, an odd output count and a
    missing bias are ValueErrors naming them; inputs that need a gradient,
    autocast, other dtypes, the forced reference backend or the CUDA
    path's logic on CPU (count_dispatch) take the reference (logits with
    autograd)."""
    from laud_mm.ops import fast_masker_gate, masker_gate, policy
    pooled, w1, b1 = torch.rand(2, 8), torch.randn(4, 8), torch.randn(4)
    w2, b2 = torch.randn(6, 4), torch.randn(6)
    with pytest.raises(ValueError, match='do not match'):
        masker_gate(pooled, w1[:, :7], b1)
    with pytest.raises(ValueError, match='given together'):
        masker_gate(pooled, w1, b1, w2, None)
    with pytest.raises(ValueError, match='do not follow'):
        masker_gate(pooled, w1, b1, w2[:, :3], b2)
    with pytest.raises(ValueError, match='3 outputs'):
        masker_gate(pooled, w1[:3], b1[:3])
    with pytest.raises(ValueError, match='b1 must be a tensor'):
        masker_gate(pooled, w1, None)
    wg = w1.clone().requires_grad_()
    assert not fast_masker_gate(pooled, wg, b1)
    gate, logits = masker_gate(pooled, wg, b1, w2, b2)
    assert logits.grad_fn is not None
    with torch.no_grad(), ops.use_backend(None):
        assert fast_masker_gate(pooled, wg, b1) == \
            (ops.extension() is not None)
        saved = policy.DEVICE_PATH_ON_CPU
        policy.DEVICE_PATH_ON_CPU = True
        try:
            assert not fast_masker_gate(pooled, w1, b1)
        finally:
            policy.DEVICE_PATH_ON_CPU = saved
    assert not fast_masker_gate(pooled.double(), w1.double(), b1.double())
    with ops.use_backend('pytorch'):
        assert not fast_masker_gate(pooled, w1, b1)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert not fast_masker_gate(pooled, w1, b1)


def test_host_read_values_are_read_when_made():
    """HostRead copies its values when made (on CPU: at once), one tensor
    or several: later writes to the tensors do not change what get()
    returns; no tensor is an error."""
    from laud_mm.ops.indexing import HostRead
    c = torch.tensor(5)
    d = torch.tensor([7])
    one, two = HostRead(c), HostRead(c, d)
    c.add_(1)
    d.add_(1)
    assert one.get() == [5] and two.get() == [5, 7]
    with pytest.raises(ValueError, match='at least one tensor'):
        HostRead()


def test_bad_arguments_raise_value_error_naming_them():
    feat = torch.randn(1, 4, 8, 8)
    idx = torch.tensor([[0, 0, 0]])
    with pytest.raises(ValueError, match='granularity'):
        ops.gather_patches(feat, idx, 0)
    with pytest.raises(ValueError, match='stride'):
        ops.gather_patches(feat, idx, 2, stride=0)
    with pytest.raises(ValueError, match='channels'):
        ops.gather_patches(feat, idx, 2, channels=5)
    with pytest.raises(ValueError, match='feat'):
        ops.gather_patches(feat[0], idx, 2)
    with pytest.raises(ValueError, match='idx'):
        ops.gather_patches(feat, idx.int(), 2)
    ident = torch.randn(1, 4, 8, 8)
    with pytest.raises(ValueError, match='patches'):
        ops.scatter_add_relu(ident, torch.randn(1, 4, 3, 3), idx, 2)
    with pytest.raises(ValueError, match='idx'):
        ops.scatter_add_relu(ident, torch.randn(1, 4, 2, 2),
                             torch.tensor([[0, 4, 0]]), 2)
    with pytest.raises(ValueError, match='name'):
        ops.set_backend('tpu')


def test_backend_reporting():
    assert ops.backend() in ('cpp', 'cuda', 'pytorch')
    with ops.use_backend('pytorch'):
        assert ops.backend() == 'pytorch'
    if ops.extension() is not None:
        assert ops.backend(torch.device('cpu')) == 'cpp'
    else:
        assert ops.backend() == 'pytorch'
        with pytest.raises(RuntimeError):
            ops.set_backend('cpp')


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('s', [1, 2, 3, 4, 5])
def test_relu_keeps_nan_and_signed_zero_like_torch(backend, s):
    """The compiled kernels' branch-free ReLU (SSE max) is torch.relu's
    function: NaN stays NaN, -0 / +0 and negatives as torch.relu; every patch
    width (specialised and runtime) and both dtypes."""
    for dtype in (torch.float32, torch.float64):
        g = torch.Generator().manual_seed(s)
        feat = torch.randn(2, 3, 11, 9, generator=g, dtype=dtype)
        feat[0, 0, 1, 1], feat[1, 2, 3, 3], feat[0, 1, 2, 2] = \
            float('nan'), -0.0, 0.0
        gate = torch.ones(2, -(-11 // s), -(-9 // s))
        gate[0, 0, 0] = 0
        idx = ops.patch_indices(gate)
        ident = torch.randn(2, 3, 11, 9, generator=g, dtype=dtype)
        ident[1, 0, 0, 0] = float('nan')
        y = torch.randn(idx.shape[0], 3, s, s, generator=g, dtype=dtype)
        with ops.use_backend(backend):
            win = ops.gather_patches(feat, idx, s, relu=True)
            out = ops.scatter_add_relu(ident, y, idx, s)
        ref_win = ops.gather_patches_reference(feat, idx, s, relu=True)
        ref = ops.scatter_add_relu_reference(ident, y, idx, s)
        assert torch.equal(win.isnan(), ref_win.isnan())
        assert torch.equal(torch.nan_to_num(win), torch.nan_to_num(ref_win))
        assert torch.equal(out.isnan(), ref.isnan()) and out.isnan().any()
        assert torch.allclose(torch.nan_to_num(out), torch.nan_to_num(ref))


def test_cpu_allocator_tuning(monkeypatch):
    """tune_cpu_allocator: idempotent, True on glibc, validated arguments,
    and dynamic inference on CPU switches it on."""
    import platform

    from laud_mm.ops import allocator
    with pytest.raises(ValueError, match='threshold_bytes'):
        allocator.tune_cpu_allocator(0)
    with pytest.raises(ValueError, match='threshold_bytes'):
        allocator.tune_cpu_allocator(2 ** 31)
    monkeypatch.setattr(allocator, '_state', None)
    monkeypatch.setenv('LAUD_MM_MALLOPT', 'yes')
    with pytest.raises(ValueError, match='LAUD_MM_MALLOPT'):
        allocator.tune_cpu_allocator()
    monkeypatch.setenv('LAUD_MM_MALLOPT', '0')
    assert allocator.tune_cpu_allocator() is False
    monkeypatch.setattr(allocator, '_state', None)
    monkeypatch.setenv('LAUD_MM_MALLOPT', '1')
    from laud_mm.models import LAUDResNet
    net = LAUDResNet(50, paradigm='layer', dynamic_inference=True,
                     num_stages=1, strides=(1,), dilations=(1,),
                     out_indices=(0,)).eval()
    with torch.no_grad():
        net(torch.randn(1, 3, 32, 32))
    if platform.system() == 'Linux' and platform.libc_ver()[0] == 'glibc':
        assert allocator.allocator_tuned()
        assert allocator.tune_cpu_allocator() is True


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('kh,kw', [(3, 3), (1, 1), (2, 3)])
def test_gather_kept_weights_kernel_equals_reference(dtype, kh, kw):
    """Per-sample conv2 weights of the kept channels: the compiled kernel
    (when built) equals advanced indexing, bit for bit, padding index
    included (a zero channel at index C)."""
    from laud_mm.ops import gather_kept_weights, gather_kept_weights_reference
    g = torch.Generator().manual_seed(kh * 10 + kw)
    w = torch.randn(17, 17, kh, kw, generator=g, dtype=dtype)
    chs = torch.stack([torch.randperm(17, generator=g)[:6].sort()[0]
                       for _ in range(5)])
    chs[1, 4:] = 16  # padding channel, repeated
    ref = gather_kept_weights_reference(w, chs)
    assert ref.shape == (5, 6, 6, kh, kw)
    assert torch.equal(ref[2, 3, 1], w[chs[2, 3], chs[2, 1]])
    for name in ['pytorch'] + (['cpp'] if ops.extension() is not None
                               else []):
        with ops.use_backend(name):
            assert torch.equal(gather_kept_weights(w, chs), ref), name
    empty = gather_kept_weights(w, chs[:, :0])
    assert empty.shape == (5, 0, 0, kh, kw)


def test_gather_kept_weights_errors():
    from laud_mm.ops import gather_kept_weights
    w = torch.randn(8, 8, 3, 3)
    with pytest.raises(ValueError, match='weight must be a 4-D'):
        gather_kept_weights(w[0], torch.zeros(2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match='chs must be an int64'):
        gather_kept_weights(w, torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r'outside \[0, 8\)'):
        gather_kept_weights(w, torch.tensor([[0, 8]]))
    with pytest.raises(ValueError, match=r'outside \[0, 8\)'):
        gather_kept_weights(w, torch.tensor([[-1, 2]]))


# ------------------------------------------------- fused channel branch
def _channel_case(seed, n, c_in, width, c_out, h, w, stride, dil, g2,
                  kept=None):
    """Random folded weights in the kernel's layouts and kept channels in
    runs of ``g2`` (the gate's G), one sample with none kept; or, with
    ``kept``, those (n,) lists of kept channels in the given order."""
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(width, c_in, generator=g) / c_in ** 0.5
    w2 = torch.randn(width, width, 3, 3, generator=g) / (9 * width) ** 0.5
    w3 = torch.randn(c_out, width, generator=g) / width ** 0.5
    b1, b2, b3 = (torch.randn(m, generator=g) * 0.1
                  for m in (width, width, c_out))
    w1t = torch.cat([w1, torch.zeros(1, c_in)]).t().contiguous()
    w2p = F.pad(w2, (0, 0, 0, 0, 0, 1, 0, 1))
    w2t = w2p.permute(2, 3, 1, 0).reshape(9, width + 1, width + 1).contiguous()
    w3p = ops.pack_panels(torch.cat([w3.t(), torch.zeros(1, c_out)]))
    b1p, b2p = F.pad(b1, (0, 1)), F.pad(b2, (0, 1))
    groups = width // g2
    kmax = max((len(k) for k in kept), default=0) if kept else 0
    kept = [torch.tensor(k, dtype=torch.int64) for k in kept] if kept \
        else []
    for i in range(n if not kept else 0):
        kg = 0 if i == 1 else int(torch.randint(1, groups + 1, (1,),
                                                generator=g))
        sel = torch.randperm(groups, generator=g)[:kg].sort()[0]
        ch = (sel[:, None] * g2 + torch.arange(g2)).flatten()
        kept.append(ch)
        kmax = max(kmax, ch.numel())
    chs = torch.full((n, kmax + 3), width, dtype=torch.int64)
    for i, ch in enumerate(kept):
        chs[i, :ch.numel()] = ch
    counts = torch.tensor([ch.numel() for ch in kept])
    x = torch.randn(n, c_in, h, w, generator=g).relu_()
    ho = (h + 2 * dil - 2 * dil - 1) // stride + 1
    wo = (w + 2 * dil - 2 * dil - 1) // stride + 1
    ident = torch.randn(n, c_out, ho, wo, generator=g)
    # the masked-dense block: every channel computed, dropped ones zeroed
    mask = torch.zeros(n, width)
    for i, ch in enumerate(kept):
        mask[i, ch] = 1
    h1 = F.conv2d(x, w1[:, :, None, None], b1).relu_() * mask[:, :, None, None]
    h2 = F.conv2d(h1, w2, b2, stride, dil, dil).relu_() * \
        mask[:, :, None, None]
    dense = (ident + F.conv2d(h2, w3[:, :, None, None], b3)).relu_()
    return (x, chs, counts, w1t, b1p, w2t, b2p, w3p, b3, stride, dil,
            dil), ident, dense


@pytest.mark.parametrize('n,c_in,width,c_out,h,w,stride,dil,g2', [
    (3, 40, 24, 32, 7, 7, 1, 1, 2),     # stage-4 like, 7 pixels per row
    (2, 24, 40, 64, 9, 6, 2, 1, 2),     # stride 2, odd sizes
    (2, 16, 36, 80, 6, 5, 1, 2, 1),     # dilation 2, G = 1 (odd counts)
    (4, 72, 70, 16, 3, 11, 1, 1, 2),    # panels of 64 + 6, a 1-wide row
    (2, 2100, 140, 32, 11, 10, 1, 1, 2),  # conv1's input transposed in
    # chunks of 14 pixels at 3 threads (AVX-512), C_in % 16 = 4: blocks of
    # 16 channels x 14 pixels, a scalar channel tail; each chunk read by
    # two panel blocks (114 kept channels: 64 + 64)
    (2, 2108, 140, 32, 15, 14, 1, 1, 2),  # C_in % 16 = 12: an 8-channel
    # block (8 + 6 pixels a chunk) before the scalar tail; 210 input
    # pixels, so conv1 reads transposed chunks at 2 threads too
    (2, 408, 80, 32, 28, 28, 1, 1, 2),  # chunks of 77 pixels: full
    # 16 x 16 blocks, then 13 pixels; C_in % 16 = 8
    (2, 2100, 24, 32, 7, 7, 1, 1, 2),   # 7 x 7: every phase row-blocked,
    # conv1's sums split over 16 blocks of 128 weight rows and one of 52
    (2, 300, 140, 32, 14, 14, 2, 1, 2),  # conv1 row-blocked (196 input
    # pixels, 3 row blocks), conv2 / conv3 row-blocked (7 x 7 output, two
    # channel blocks of w2t)
    (2, 300, 140, 32, 21, 21, 3, 1, 2),  # conv1 on panels gathered up front
    # (441 input pixels), conv2 / conv3 row-blocked (7 x 7 output)
    (2, 300, 140, 32, 14, 14, 1, 1, 2),  # a 196-pixel output (28 tiles a
    # sample): every phase row-blocked at 1 - 2 threads, on panels
    # gathered up front at 3
])
def test_channel_branch_kernel_equals_masked_dense(n, c_in, width, c_out, h,
                                                   w, stride, dil, g2):
    """The fused channel-skipping branch (AVX-512 tiles, the generic tiles
    and the PyTorch reference) returns the masked-dense block: per-sample
    kept channels in runs of G, a sample with none kept, padding entries of
    chs beyond counts ignored, stride / dilation, panels wider than 64."""
    from laud_mm.ops import (channel_branch_add_relu,
                             channel_branch_add_relu_reference)
    args, ident, dense = _channel_case(7, n, c_in, width, c_out, h, w,
                                       stride, dil, g2)
    ref = channel_branch_add_relu_reference(ident.clone(), *args)
    assert (ref - dense).abs().max() <= 1e-5
    with ops.use_backend('pytorch'):
        out = channel_branch_add_relu(ident.clone(), *args)
    assert (out - dense).abs().max() <= 1e-5
    if ops.extension() is None:
        return
    out = ident.clone()
    assert channel_branch_add_relu(out, *args) is out
    assert (out - dense).abs().max() <= 1e-5
    # the sample with no kept channel: relu(identity + b3)
    assert torch.equal(out[1], (ident[1] + args[8][:, None, None]).relu())
    gen = ident.clone()
    ops.extension().channel_branch_add_relu(gen, *args, force_generic=True)
    assert (gen - dense).abs().max() <= 1e-5
    assert ops.channel_branch_isa() in ('avx512f', 'generic')
    # with sums: the output unchanged, the channel sums of the new output
    # from its output pass (AVX2 epilogue and generic tiles, 1 - 3 threads;
    # the tail lanes of a pixel block past the map not summed)
    ref_sums = dense.sum(dim=(2, 3))
    prev = torch.get_num_threads()
    try:
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            for generic in (False, True):
                o = ident.clone()
                sums = torch.full((n, c_out), float('nan'))
                ops.extension().channel_branch_add_relu(
                    o, *args, force_generic=generic, sums=sums)
                assert (o - dense).abs().max() <= 1e-5
                assert torch.allclose(sums, ref_sums, rtol=1e-5, atol=1e-4), \
                    (t, generic, (sums - ref_sums).abs().max())
    finally:
        torch.set_num_threads(prev)
    with pytest.raises(RuntimeError, match='sums must be a contiguous'):
        ops.extension().channel_branch_add_relu(
            ident.clone(), *args, sums=torch.zeros(n, c_out + 1))


def test_channel_row_blocked_thresholds_match_policy():
    """The latency model prices the channel kernel's panel writes and
    phases from ``policy.CHANNEL_BLOCKED_MAX_IN_PIXELS`` / ``_OUT_PIXELS``,
    ``CHANNEL_COLUMN_MAX_OUT_PIXELS`` and ``CHANNEL_COLUMN_UNITS``: the
    same thresholds as the kernel's row-blocked phases and its column
    split."""
    from laud_mm.ops import policy
    if ops.extension() is None:
        pytest.skip('laud_mm._ext is not built')
    assert list(ops.extension().channel_blocked_max_pixels()) == [
        policy.CHANNEL_BLOCKED_MAX_IN_PIXELS,
        policy.CHANNEL_BLOCKED_MAX_OUT_PIXELS,
        policy.CHANNEL_COLUMN_MAX_OUT_PIXELS,
        policy.CHANNEL_COLUMN_UNITS]


@pytest.mark.parametrize('h,w', [(7, 7), (9, 8), (15, 14)])  # every phase
# row-blocked (7 tiles a sample; 11 on 72 pixels) / both on panels
# gathered up front (> 196 pixels)
def test_channel_branch_kept_patterns(h, w):
    """Kept-channel patterns that take each of the panel gathers' copies
    (with AVX-512, chunks of 16 source columns, compressed, where they
    take fewer instructions; else 8-byte pair moves or scalar moves):
    every channel kept, so that the last chunk of a row reaches past the
    weight matrix's end (chunks); the last channels only (chunks); every
    fourth channel (chunks); every sixteenth channel (scalar moves: a
    chunk per channel); pairs every sixteen channels (pair moves); odd
    runs; a dense block beside a sparse one in one sample; channels not
    in ascending order (no chunks; the row-blocked conv2's channel
    ranges still take every entry once), descending. Each sample's result
    is the masked-dense block's, at 1 and 2 threads, AVX-512 and generic
    tiles."""
    from laud_mm.ops import channel_branch_add_relu
    width = 140  # panels of 64 + 64 + 12
    kept = [list(range(width)), list(range(width - 6, width)),
            list(range(0, width, 4)), list(range(3, width, 16)),
            [c + d for c in range(0, width - 1, 16) for d in (0, 1)],
            [1, 2, 3, 7, 8, 9, 10, 50, 51, 139],
            list(range(0, 70)) + list(range(72, width, 6)),
            [131, 130, 5, 4, 77, 76, 20, 21],
            list(range(width - 1, -1, -5))]
    args, ident, dense = _channel_case(11, len(kept), 40, width, 32, h, w,
                                       1, 1, 2, kept=kept)
    prev = torch.get_num_threads()
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            for generic in (False, True):
                out = ident.clone()
                if ops.extension() is None:
                    channel_branch_add_relu(out, *args)
                else:
                    ops.extension().channel_branch_add_relu(
                        out, *args, force_generic=generic)
                assert (out - dense).abs().max() <= 1e-5, (t, generic)
    finally:
        torch.set_num_threads(prev)


def test_channel_branch_errors():
    from laud_mm.ops import channel_branch_add_relu
    args, ident, _ = _channel_case(1, 2, 8, 8, 16, 5, 5, 1, 1, 2)
    (x, chs, counts, w1t, b1, w2t, b2, w3p, b3, st, pad, dil) = args
    with pytest.raises(ValueError, match='x must be a float32 CPU tensor'):
        channel_branch_add_relu(ident, x.double(), *args[1:])
    with pytest.raises(ValueError, match=r'w2t must have shape \(9, 9, 9\)'):
        channel_branch_add_relu(ident, x, chs, counts, w1t, b1, w2t[:8],
                                b2, w3p, b3, st, pad, dil)
    # conv3's weight as the unpacked (width + 1, C_out) matrix
    with pytest.raises(ValueError, match=r'w3p must have shape \(144,\)'):
        channel_branch_add_relu(ident, x, chs, counts, w1t, b1, w2t, b2,
                                w3p.view(9, 16), b3, st, pad, dil)
    with pytest.raises(ValueError, match='counts must lie in'):
        channel_branch_add_relu(ident, x, chs, counts + 100, w1t, b1, w2t,
                                b2, w3p, b3, st, pad, dil)
    with pytest.raises(ValueError, match='chs must lie in'):
        channel_branch_add_relu(ident, x, chs + 100, counts, w1t, b1, w2t,
                                b2, w3p, b3, st, pad, dil)
    with pytest.raises(ValueError, match='chs must be an int64'):
        channel_branch_add_relu(ident, x, chs.int(), counts, w1t, b1, w2t,
                                b2, w3p, b3, st, pad, dil)
    with pytest.raises(ValueError, match='conv2 .* gives'):
        channel_branch_add_relu(ident, x, chs, counts, w1t, b1, w2t, b2,
                                w3p, b3, 2, pad, dil)


# ------------------------------------------------ fused spatial branch
def _spatial_case(seed, n, c_in, width, c_out, h, w, s, stride, dil,
                  density):
    """Random folded weights, input, identity and per-sample patch gates;
    the masked-dense block computed with plain convolutions."""
    from laud_mm.ops import spatial_packed_weights
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(width, c_in, 1, 1, generator=g) / c_in ** 0.5
    w2 = torch.randn(width, width, 3, 3, generator=g) / (9 * width) ** 0.5
    w3 = torch.randn(c_out, width, 1, 1, generator=g) / width ** 0.5
    b1, b2, b3 = (torch.randn(c, generator=g) * 0.1
                  for c in (width, width, c_out))
    x = torch.randn(n, c_in, h, w, generator=g)
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    gh, gw = -(-ho // s), -(-wo // s)
    gate = (torch.rand(n, gh, gw, generator=g) < density).float()
    gate[0] = 0  # a sample without active patches
    if n > 2:
        gate[2] = 1  # and one with every patch active
    ident = torch.randn(n, c_out, ho, wo, generator=g)
    mask = gate.repeat_interleave(s, 1).repeat_interleave(s, 2)[:, :ho, :wo]
    y = F.conv2d(F.conv2d(F.conv2d(x, w1, b1).relu(), w2, b2, stride, dil,
                          dil).relu(), w3, b3)
    dense = (ident + y * mask[:, None]).relu()
    w1p, w2p, w3p = spatial_packed_weights(w1, w2, w3)
    idx = (gate > 0.5).nonzero().contiguous()
    return x, ident, idx, (w1p, b1, w2p, b2, w3p, b3), dense, y * mask[:, None]


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('s', [7, 2])
def test_spatial_branch_leave_inactive_keeps_a_negative_identity(backend, s):
    """_spatial_branch(..., leave_inactive=True) in place over an identity
    with negative values (the layer path's call: a patch per kept sample
    over a downsample output or a copy of the input): the active pixels
    get relu(identity + branch), the others keep the identity's values
    unrectified (the caller's own pass rectifies them), with the kernel and
    with the reference."""
    from laud_mm.ops.spatial_conv import _spatial_branch
    x, ident, idx, packed, dense, _ = _spatial_case(
        11, 4, 32, 16, 32, 7, 7, s, 1, 1, 0.5)
    assert bool((ident < 0).any())
    ho, wo = ident.shape[2:]
    gate = torch.zeros(4, -(-ho // s), -(-wo // s))
    gate[idx[:, 0], idx[:, 1], idx[:, 2]] = 1
    mask = gate.repeat_interleave(s, 1).repeat_interleave(s, 2)[:, :ho, :wo]
    active = mask[:, None].expand_as(ident) > 0
    assert 0 < int(active.sum()) < active.numel()
    out = ident.clone()
    with ops.use_backend(backend):
        _spatial_branch(out, x, out, idx, packed, s, 1, 1,
                        leave_inactive=True)
    assert (out[active] - dense[active]).abs().max() <= 1e-5
    assert torch.equal(out[~active], ident[~active])


@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('n,c_in,width,c_out,h,w,s,stride', [
    (5, 64, 16, 80, 7, 7, 7, 1),      # a patch per kept sample (the layer
    # path's call): 49-pixel maps, 8-pixel groups across two samples
    (4, 32, 32, 64, 28, 28, 14, 2),   # stride 2: 14 x 14 output patches,
    # runs of 4 across two samples
    (3, 32, 16, 32, 56, 56, 56, 1),   # 3136-pixel maps: several
    # sub-ranges a thread
    (3, 24, 16, 112, 9, 9, 9, 1),     # C_out = 64 + 48: the 4- and
    # 3-vector epilogues
    (3, 24, 16, 32, 13, 11, 3, 1),    # partial patches, scalar epilogue
    (2, 16, 32, 32, 40, 40, 4, 1),    # runs of 4 and 8, whole-block ranges
])
def test_spatial_branch_sums_are_the_active_pixels_channel_sums(
        n, c_in, width, c_out, h, w, s, stride, channels_last):
    """_spatial_branch(..., sums=): each sample's channel sums of the new
    out at its active pixels (the layer path's means of its kept rows, from
    the kernel's epilogue), within float rounding of a float64 sum of the
    output, exactly zero for a sample without an active patch (sample 0 of
    _spatial_case); out is the same bit for bit with and without sums, at
    1, 2 and 3 threads, on the AVX-512 and the generic tiles, out of place
    and in place (over a non-negative identity; over a negative one with
    the final ReLU pass; over a negative one left as it is at the
    inactive pixels, the layer path's call); the reference gives the same
    sums. A patch
    per sample (the layer path's call): every sample but the first kept,
    so that neighbouring samples share 8-pixel groups. Bad sums are
    refused by the kernel."""
    from laud_mm.ops.spatial_conv import _spatial_branch
    x, ident, idx, packed, _, _ = _spatial_case(
        7, n, c_in, width, c_out, h, w, s, stride, 1, 0.5)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x, ident = (t.contiguous(memory_format=fmt) for t in (x, ident))
    ho, wo = ident.shape[2:]
    if s >= max(ho, wo):
        idx = torch.tensor([[i, 0, 0] for i in range(1, n)])
    gate = torch.zeros(n, -(-ho // s), -(-wo // s))
    gate[idx[:, 0], idx[:, 1], idx[:, 2]] = 1
    mask = gate.repeat_interleave(s, 1).repeat_interleave(s, 2)[:, :ho, :wo]
    assert float(gate[0].sum()) == 0 and float(gate.sum()) > 0

    def expect(out):  # float64 sums of the output's active pixels
        return (out.double() * mask[:, None]).sum(dim=(2, 3))

    def check(sums, out):
        e = expect(out)
        assert ((sums.double() - e).abs() <= 1e-5 * (e.abs() + 1)).all()
        assert torch.equal(sums[0], torch.zeros(c_out))

    ref_out, ref_sums = torch.empty_like(ident), torch.empty(n, c_out)
    with ops.use_backend('pytorch'):
        _spatial_branch(ref_out, x, ident, idx, packed, s, stride, 1,
                        sums=ref_sums)
    check(ref_sums, ref_out)
    if ops.extension() is None:
        return
    ext = ops.extension()
    nonneg = ident.relu()
    assert bool((ident < 0).any())

    def call(identity, in_place, nonneg_id, generic, sums=None):
        out = identity.clone(memory_format=fmt) if in_place else \
            torch.empty_like(identity)
        ext.spatial_branch_add_relu(out, x, out if in_place else identity,
                                    idx, *packed, s, stride, 1, nonneg_id,
                                    force_generic=generic, sums=sums)
        return out
    # out of place; in place over a non-negative identity (inactive pixels
    # untouched); in place over a negative one (the final ReLU pass); in
    # place over a negative one whose inactive pixels stay as they are
    # (_spatial_branch's leave_inactive: the layer path's call)
    modes = [(ident, False, False), (nonneg, True, True),
             (ident, True, False), (ident, True, True)]
    for generic in (False, True):
        plain = [call(*m, generic) for m in modes]
        for threads in (1, 2, 3):
            def run():
                res = []
                for m in modes:
                    sums = torch.full((n, c_out), float('nan'))
                    res.append((call(*m, generic, sums), sums))
                return res
            res = _with_threads(threads, run)
            for (out, sums), p in zip(res, plain):
                assert torch.equal(out, p), (generic, threads)
                check(sums, out)
            sums = res[0][1]  # out of place: the reference's call
            assert (sums - ref_sums).abs().max() <= \
                1e-5 * (ref_sums.abs().max() + 1)
    with pytest.raises(RuntimeError, match='sums must be a contiguous'):
        ext.spatial_branch_add_relu(torch.empty_like(ident), x, ident, idx,
                                    *packed, s, stride, 1,
                                    sums=torch.empty(n, c_out + 1))
    with pytest.raises(RuntimeError, match='sums must be a contiguous'):
        ext.spatial_branch_add_relu(torch.empty_like(ident), x, ident, idx,
                                    *packed, s, stride, 1,
                                    sums=torch.empty(n, c_out).double())
    # no active patch: sums of zeros, out = relu(identity)
    none, sums = torch.empty_like(ident), torch.full((n, c_out), float('nan'))
    ext.spatial_branch_add_relu(none, x, ident, idx[:0].contiguous(),
                                *packed, s, stride, 1, sums=sums)
    assert torch.equal(sums, torch.zeros(n, c_out))
    assert torch.equal(none, ident.relu())
    with pytest.raises(RuntimeError, match='sums must be on the CPU'):
        ext.spatial_branch_add_relu(torch.empty_like(ident), x, ident, idx,
                                    *packed, s, stride, 1,
                                    sums=torch.empty(n, c_out,
                                                     device='meta'))


@pytest.mark.skipif(ops.extension() is None, reason='laud_mm._ext not built')
def test_spatial_branch_sums_added_in_parallel_for_many_partials():
    """Above 2^20 partial sums to add (threads x N x C_out: 2 x 520 x
    1024 here) row_epilogue::add_partials splits them over the threads:
    the sums are still each thread's partials added in thread order,
    within float rounding of a float64 sum of the output, and the output
    is the one without sums."""
    ext = ops.extension()
    n, c_out = 520, 1024
    x, ident, idx, packed, _, _ = _spatial_case(
        3, n, 16, 16, c_out, 2, 2, 2, 1, 1, 0.5)
    assert 2 * n * c_out >= 1 << 20

    def run():
        plain, out = torch.empty_like(ident), torch.empty_like(ident)
        ext.spatial_branch_add_relu(plain, x, ident, idx, *packed, 2, 1, 1)
        sums = torch.full((n, c_out), float('nan'))
        ext.spatial_branch_add_relu(out, x, ident, idx, *packed, 2, 1, 1,
                                    sums=sums)
        return plain, out, sums
    plain, out, sums = _with_threads(2, run)
    assert torch.equal(out, plain)
    mask = torch.zeros(n, 1, 1, 1)
    mask[idx[:, 0]] = 1  # one 2 x 2 patch covers each 2 x 2 output map
    expect = (out.double() * mask).sum(dim=(2, 3))
    assert ((sums.double() - expect).abs() <= 1e-5 * (expect.abs() + 1)).all()


@pytest.mark.parametrize('n,c_in,width,c_out,h,w,s,stride,dil', [
    (3, 24, 16, 32, 13, 11, 2, 1, 1),    # odd sizes, partial patches
    (3, 16, 32, 64, 15, 12, 4, 2, 1),    # stride 2, runs of 4
    (2, 48, 80, 16, 9, 10, 1, 1, 2),     # S = 1, dilation 2, 64 + 16 panel
    (3, 32, 16, 80, 14, 14, 3, 1, 1),    # S = 3 (scalar epilogue runs)
    (2, 16, 16, 16, 7, 7, 8, 1, 1),      # S = 8 > map: one clipped patch
    (3, 16, 16, 32, 16, 16, 4, 1, 1),    # full runs of 4 and 8
    (3, 2100, 80, 16, 16, 14, 2, 1, 1),  # conv1's input transposed run by
    # run in chunks of 14 pixels (AVX-512), C_in % 16 = 4
    (3, 2108, 80, 16, 16, 14, 2, 1, 1),  # C_in % 16 = 12: the 8-channel
    # block of the transposition, then the scalar tail
    (2, 408, 80, 16, 28, 28, 2, 1, 1),   # runs of up to 77 pixels: full
    # 16 x 16 blocks of the transposition, C_in % 16 = 8
])
def test_spatial_branch_kernel_equals_masked_dense(n, c_in, width, c_out, h,
                                                   w, s, stride, dil):
    """The fused spatial branch (AVX-512 tiles, the generic tiles and the
    PyTorch reference) returns the masked-dense block, out of place, in
    place into the identity, and in place with identity_nonneg (inactive
    pixels untouched, bit for bit); samples with no / every patch active."""
    from laud_mm.ops import (spatial_branch_add_relu,
                             spatial_branch_add_relu_reference)
    x, ident, idx, packed, dense, ym = _spatial_case(
        11, n, c_in, width, c_out, h, w, s, stride, dil, 0.4)
    args = (idx,) + packed + (s, stride, dil)
    ref = spatial_branch_add_relu_reference(torch.empty_like(ident), x,
                                            ident, *args)
    assert (ref - dense).abs().max() <= 1e-5
    with ops.use_backend('pytorch'):
        out = spatial_branch_add_relu(torch.empty_like(ident), x, ident,
                                      *args)
    assert (out - dense).abs().max() <= 1e-5
    if ops.extension() is None:
        return
    out = torch.empty_like(ident)
    assert spatial_branch_add_relu(out, x, ident, *args) is out
    assert (out - dense).abs().max() <= 1e-5
    assert torch.equal(out[0], ident[0].relu())  # no active patch
    inpl = ident.clone()
    spatial_branch_add_relu(inpl, x, inpl, *args)
    assert (inpl - dense).abs().max() <= 1e-5
    # a non-negative identity updated in place: only active pixels written
    nonneg = ident.relu()
    inpl = nonneg.clone()
    spatial_branch_add_relu(inpl, x, inpl, *args, identity_nonneg=True)
    assert (inpl - (nonneg + ym).relu()).abs().max() <= 1e-5
    active = torch.zeros_like(inpl, dtype=torch.bool)
    for i, gi, gj in idx.tolist():
        active[i, :, gi * s:(gi + 1) * s, gj * s:(gj + 1) * s] = True
    assert torch.equal(inpl[~active], nonneg[~active])
    gen = torch.empty_like(ident)
    ops.extension().spatial_branch_add_relu(gen, x, ident, *args,
                                            force_generic=True)
    assert (gen - dense).abs().max() <= 1e-5


def test_spatial_branch_inplace_nonneg_values():
    """identity_nonneg in place: active pixels get relu(identity + branch)
    exactly as out of place; identity aliasing x (an identity block inside
    the backbone) reads x before writing it."""
    from laud_mm.ops import spatial_branch_add_relu
    x, ident, idx, packed, _, _ = _spatial_case(
        3, 3, 64, 16, 64, 12, 12, 2, 1, 1, 0.5)
    x = x.relu_()
    expect = torch.empty_like(x)
    spatial_branch_add_relu(expect, x, x, idx, *packed, 2)
    inpl = x.clone()
    spatial_branch_add_relu(inpl, inpl, inpl, idx, *packed, 2,
                            identity_nonneg=True)
    assert (inpl - expect).abs().max() <= 1e-6
    assert not torch.equal(inpl, x)


def test_spatial_pack_panels_roundtrip():
    from laud_mm.ops import pack_panels, unpack_panels
    m = torch.randn(9, 150)
    flat = pack_panels(m)
    assert flat.shape == (9 * 150,)
    assert torch.equal(flat[:9 * 64].view(9, 64), m[:, :64])
    assert torch.equal(unpack_panels(flat, 9, 150), m)
    with pytest.raises(ValueError, match='wt must be a'):
        pack_panels(torch.randn(2, 3, 4))


def test_spatial_branch_errors():
    from laud_mm.ops import spatial_branch_add_relu
    x, ident, idx, packed, _, _ = _spatial_case(1, 2, 16, 16, 16, 6, 6, 2,
                                                1, 1, 0.5)
    w1p, b1, w2p, b2, w3p, b3 = packed
    out = torch.empty_like(ident)
    with pytest.raises(ValueError, match='x must be a float32 CPU tensor'):
        spatial_branch_add_relu(out, x.double(), ident, idx, *packed, 2)
    with pytest.raises(ValueError, match='w2p must be 1-D with 2304'):
        spatial_branch_add_relu(out, x, ident, idx, w1p, b1, w2p[:10], b2,
                                w3p, b3, 2)
    bad = idx.clone()
    bad[:, 1] += 5
    with pytest.raises(ValueError, match='idx column 1 must lie in'):
        spatial_branch_add_relu(out, x, ident, bad, *packed, 2)
    with pytest.raises(ValueError, match='sorted by sample'):
        spatial_branch_add_relu(out, x, ident, torch.tensor([[1, 0, 0],
                                                             [0, 0, 0]]),
                                *packed, 2)
    with pytest.raises(ValueError, match='S=0 must be an int'):
        spatial_branch_add_relu(out, x, ident, idx, *packed, 0)
    with pytest.raises(ValueError, match='conv2 .* gives'):
        spatial_branch_add_relu(out, x, ident, idx, *packed, 2, 2)
    neg = ident.clone()
    with pytest.raises(ValueError, match='identity_nonneg'):
        spatial_branch_add_relu(neg, x, neg, idx, *packed, 2,
                                identity_nonneg=True)
    xs = torch.randn(2, 16, 6, 6)
    with pytest.raises(ValueError, match='out may alias x only'):
        spatial_branch_add_relu(xs, xs, ident, idx, *packed, 2)


# ------------------------------------------------- threads and partition
needs_ext = pytest.mark.skipif(ops.extension() is None,
                               reason='laud_mm._ext not built')


def _with_threads(threads, fn):
    """fn() with ``threads`` intra-op threads (restored afterwards)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn()
    finally:
        torch.set_num_threads(prev)


@needs_ext
def test_kernels_run_on_torch_thread_pool():
    """The extension is built so that at::parallel_for uses torch's pool:
    with torch's OpenMP backend it must be compiled with OpenMP (without
    it every kernel ran on one thread, whatever torch.set_num_threads
    said)."""
    info = torch.__config__.parallel_info()
    if 'ATen parallel backend: OpenMP' in info:
        assert ops.extension().openmp
    assert ops.parallel_kernels()


@needs_ext
@pytest.mark.parametrize('n,c_in,width,c_out,h,w,s,stride,dil,density', [
    (1, 32, 16, 64, 23, 19, 4, 1, 1, 0.5),   # batch 1: pixels split
    (1, 16, 32, 32, 17, 16, 2, 2, 1, 0.3),   # batch 1, stride 2
    (4, 24, 16, 32, 9, 10, 1, 1, 2, 0.4),    # S = 1, dilation 2
    (3, 16, 80, 16, 12, 12, 4, 1, 1, 0.05),  # almost empty, 64 + 16 panel
    (2, 2100, 80, 32, 16, 14, 4, 1, 1, 0.5),  # ranges cut across chunks;
    # transposed at 1 - 2 threads, NCHW at 7: the same bits
    (2, 16, 32, 32, 40, 40, 4, 1, 1, 0.6),  # 64+ pixels a thread: ranges
    # of whole 8-pixel blocks
    (5, 64, 16, 64, 7, 7, 7, 1, 1, 0.6),  # a patch per sample (the layer
    # path's call)
])
def test_spatial_branch_same_at_any_thread_count(n, c_in, width, c_out, h,
                                                 w, s, stride, dil,
                                                 density):
    """The fused spatial kernel splits the batch's pixels over threads (a
    sample over several threads at batch 1): the result is the same bit
    for bit with 1, 2, 3 and 7 threads (every pixel's sums run in the same
    order), out of place, in place and in place over a non-negative
    identity, and equals the masked-dense block; a sample without active
    patches included (sample 0 of _spatial_case)."""
    from laud_mm.ops import spatial_branch_add_relu
    x, ident, idx, packed, dense, ym = _spatial_case(
        5, n, c_in, width, c_out, h, w, s, stride, dil, density)
    args = (idx,) + packed + (s, stride, dil)
    nonneg = ident.relu()

    def run():
        a = torch.empty_like(ident)
        spatial_branch_add_relu(a, x, ident, *args)
        b = ident.clone()
        spatial_branch_add_relu(b, x, b, *args)
        c = nonneg.clone()
        spatial_branch_add_relu(c, x, c, *args, identity_nonneg=True)
        return a, b, c
    one = _with_threads(1, run)
    assert (one[0] - dense).abs().max() <= 1e-5
    assert (one[2] - (nonneg + ym).relu()).abs().max() <= 1e-5
    for threads in (2, 3, 7):
        more = _with_threads(threads, run)
        for u, v in zip(one, more):
            assert torch.equal(u, v), threads


@needs_ext
@pytest.mark.parametrize('n,c_in,width,c_out,h,w,stride,dil,g2', [
    (1, 40, 32, 32, 13, 11, 1, 1, 2),   # batch 1: pixels split
    (1, 24, 40, 64, 9, 6, 2, 1, 2),     # batch 1, stride 2
    (5, 72, 70, 16, 7, 7, 1, 1, 2),     # kept counts differ, 64 + 6 panel
    (2, 16, 36, 80, 6, 5, 1, 2, 1),     # dilation 2, G = 1
    (1, 2100, 140, 32, 11, 10, 1, 1, 2),  # pieces cut across conv1's
    # chunks, two panel blocks; transposed at 1 - 2 threads, NCHW at 7:
    # the same bits
    (3, 300, 140, 32, 7, 7, 1, 1, 2),   # row-blocked phases, samples
    # shared and split between threads
    (1, 300, 140, 32, 14, 14, 2, 1, 2),  # batch 1, row-blocked phases:
    # one sample's pixels over all threads
    (3, 300, 140, 32, 14, 14, 1, 1, 2),  # row-blocked conv2 on 196-pixel
    # outputs up to 3 threads, panels gathered up front beyond
])
def test_channel_branch_same_at_any_thread_count(n, c_in, width, c_out, h,
                                                 w, stride, dil, g2):
    """The fused channel kernel splits the batch's pixels over threads,
    weighed by each sample's kept count: the same bit for bit with 1, 2, 3
    and 7 threads, equal to the masked-dense block (a sample with no kept
    channel when the batch has two or more: _channel_case's sample 1; at
    batch 1 a sample with some)."""
    from laud_mm.ops import channel_branch_add_relu
    args, ident, dense = _channel_case(9, n, c_in, width, c_out, h, w,
                                       stride, dil, g2)

    def run():
        out = ident.clone()
        channel_branch_add_relu(out, *args)
        return out
    one = _with_threads(1, run)
    assert (one - dense).abs().max() <= 1e-5
    for threads in (2, 3, 7):
        assert torch.equal(one, _with_threads(threads, run)), threads


@needs_ext
@pytest.mark.parametrize('n,c_in,width,c_out,h,w,stride,dil,g2,kept', [
    (3, 40, 24, 32, 7, 7, 1, 1, 2, None),   # 7 x 7, every phase row-blocked
    (2, 24, 40, 64, 9, 6, 2, 1, 2, None),   # stride 2, odd sizes
    (2, 16, 36, 80, 6, 5, 1, 2, 1, None),   # dilation 2, G = 1, C_out 64 + 16
    (4, 72, 70, 16, 3, 11, 1, 1, 2, None),  # panels of 64 + 6
    (2, 2100, 140, 32, 11, 10, 1, 1, 2, None),  # NCHW: pixel-major chunks
    (2, 300, 140, 32, 21, 21, 3, 1, 2, None),  # conv1 on up-front panels
    (1, 200, 300, 80, 7, 7, 1, 1, 2, [list(range(3, 283))]),  # column split
    (2, 64, 40, 64, 8, 9, 1, 1, 2, None),   # identity: out may alias x
])
def test_channel_branch_channels_last_equals_nchw(n, c_in, width, c_out, h,
                                                  w, stride, dil, g2, kept):
    """x and out channels_last: the kernel reads and writes NHWC in place
    (conv1's tiles on x's pixel rows, conv3's rows added without
    transposition) and returns the NCHW result bit for bit, at 1 - 3
    threads, AVX-512 and generic tiles, every phase (up-front panels,
    pixel-major chunks in NCHW, row-blocked, column split); the channel
    sums within the fp32 reduction-order tolerance; out may alias x in an
    identity block; mixed layouts are refused by the extension and
    converted by the Python API."""
    from laud_mm.ops import channel_branch_add_relu
    args, ident, dense = _channel_case(23, n, c_in, width, c_out, h, w,
                                       stride, dil, g2, kept=kept)
    cl = torch.channels_last
    args_cl = (args[0].contiguous(memory_format=cl),) + args[1:]
    ident_cl = ident.contiguous(memory_format=cl)
    assert not ident_cl.is_contiguous() or ident.shape[-2:] == (1, 1)
    refs = {}
    for generic in (False, True):
        for threads in (1, 2, 3):
            def run(a, o):
                return _with_threads(
                    threads, lambda: _channel_kernel_with_sums(
                        a, o, force_generic=generic))
            ref, ref_sums = refs[generic] = run(args, ident)
            out, sums = run(args_cl, ident_cl)
            assert out.is_contiguous(memory_format=cl)
            assert torch.equal(out, ref), (generic, threads)
            assert torch.allclose(sums, ref_sums, rtol=1e-5, atol=1e-4)
            assert (out - dense).abs().max() <= 1e-5
    # the Python API (the kernel of this CPU): an NCHW out with a
    # channels_last x is converted, written in x's layout and copied back
    ref = refs[ops.channel_branch_isa() != 'avx512f'][0]
    o = ident.clone()
    channel_branch_add_relu(o, *args_cl)
    assert o.is_contiguous() and torch.equal(o, ref)
    with pytest.raises(RuntimeError, match='both channels_last'):
        ops.extension().channel_branch_add_relu(ident.clone(), *args_cl)
    if stride == 1 and c_in == c_out and kept is None:
        # an identity block writing into its own channels_last input
        x = args_cl[0].clone(memory_format=cl)
        alias = (x,) + args_cl[1:]
        ops.extension().channel_branch_add_relu(x, *alias)
        o = args[0].clone()
        ops.extension().channel_branch_add_relu(o, *args)
        assert x.is_contiguous(memory_format=cl) and torch.equal(x, o)


def _channel_kernel_with_sums(args, ident, **flags):
    """The compiled channel kernel on a copy of ``ident`` with the output's
    channel sums: (out (N, C_out, Ho, Wo), sums (N, C_out))."""
    out = ident.clone()
    sums = torch.zeros(ident.shape[:2])
    ops.extension().channel_branch_add_relu(out, *args, sums=sums, **flags)
    return out, sums


@needs_ext
@pytest.mark.parametrize('n,c_in,width,c_out,h,w,stride,kept', [
    (1, 300, 300, 32, 7, 7, 1, [list(range(2, 258))]),  # batch 1, 7 x 7
    (1, 300, 300, 48, 14, 14, 2, [list(range(50, 250))]),  # stride 2
    (2, 200, 300, 64, 7, 7, 1,              # every other channel: pairs
     [list(range(37, 237)), list(range(1, 300, 2))]),  # off; samples
    # split between threads
    (1, 200, 300, 80, 7, 7, 1, [list(range(3, 283))]),  # C_out = 64 + 16:
    # conv3's pieces start inside w3p's first panel and in its narrow last
])
def test_channel_column_split_equals_one_thread(n, c_in, width, c_out, h,
                                                w, stride, kept):
    """With fewer samples than threads on outputs of at most 49 pixels
    (inputs of at most 196), and at least
    policy.CHANNEL_COLUMN_UNITS units of 16 kept columns per thread, the
    kernel splits each sample's columns (kept channels in conv1 / conv2,
    output channels in conv3) over the threads instead of its pixels,
    pieces starting inside 64-column panel blocks (chunks built for
    them): the plan takes that split (a third phase in
    channel_partition_work, the same totals per phase), and the output
    and its channel sums are the one-thread result bit for bit at 2 - 7
    threads, AVX-512 and generic tiles, equal to the masked-dense
    block."""
    args, ident, dense = _channel_case(19, n, c_in, width, c_out, h, w,
                                       stride, 1, 2, kept=kept)
    x, chs, counts = args[:3]

    def run(generic):
        return _channel_kernel_with_sums(args, ident, force_generic=generic)
    for generic in (False, True):
        one = _with_threads(1, lambda: run(generic))
        assert (one[0] - dense).abs().max() <= 1e-5
        assert torch.allclose(one[1], dense.sum(dim=(2, 3)), rtol=1e-5,
                              atol=1e-4)
        split = 0
        for threads in (2, 3, 5, 7):
            work = ops.channel_partition_work(
                chs, counts, c_in, (h, w), width, c_out, stride, 1, 1,
                threads)
            pixels = ops.channel_partition_work(
                chs, counts, c_in, (h, w), width, c_out, stride, 1, 1, n)
            # conv1's total, then conv2 + conv3 + the epilogue's, as the
            # pixel split's (one thread per sample: no column split)
            assert float(work[0].sum()) == float(pixels[0].sum())
            assert float(work[1:].sum()) == float(pixels[1:].sum())
            assert float(pixels[2].sum()) == 0.
            columns = float(work[2].sum()) > 0
            split += columns
            more = _with_threads(threads, lambda: run(generic))
            assert torch.equal(one[0], more[0]), (threads, generic)
            if columns:  # each channel's sum over all pixels by one
                # thread, as at one thread (a pixel split adds the
                # threads' partial sums: the fp32 reduction-order
                # tolerance)
                assert torch.equal(one[1], more[1]), (threads, generic)
            else:
                assert torch.allclose(one[1], more[1], rtol=1e-6,
                                      atol=1e-5), (threads, generic)
        assert split >= 2  # the column split ran at two thread counts


@needs_ext
@pytest.mark.parametrize('n,c_in,width,c_out,h,w,stride', [
    (3, 300, 140, 32, 7, 7, 1),     # every phase row-blocked, tail row
    # blocks of w1t (44 rows) and of w2t's channels (12)
    (2, 300, 140, 32, 14, 14, 2),   # conv1 and conv2 / conv3 row-blocked
    (2, 300, 256, 32, 14, 13, 1),   # every phase row-blocked, 182-pixel
    # output
    (2, 300, 140, 32, 21, 21, 2),   # conv2 / conv3 only (441 input
    # pixels, 121 output)
])
def test_channel_row_blocked_phases_equal_up_front_panels(n, c_in, width,
                                                          c_out, h, w,
                                                          stride):
    """The row-blocked phases split each sum over blocks of weight rows
    in its unsplit order: the same bits as panels gathered up front
    (force_unblocked), at 1 and 2 threads, with channel sums."""
    args, ident, dense = _channel_case(13, n, c_in, width, c_out, h, w,
                                       stride, 1, 2)

    def run(unblocked):
        return _channel_kernel_with_sums(args, ident,
                                         force_unblocked=unblocked)
    for threads in (1, 2):
        blocked = _with_threads(threads, lambda: run(False))
        unblocked = _with_threads(threads, lambda: run(True))
        assert torch.equal(blocked[0], unblocked[0]), threads
        assert torch.equal(blocked[1], unblocked[1]), threads
        assert (blocked[0] - dense).abs().max() <= 1e-5


@needs_ext
def test_channel_conv1_row_blocked_conv2_up_front():
    """conv1 row-blocked (13 x 13 = 169 input pixels) with conv2 / conv3 on
    panels gathered up front (padding 2 > dilation 1: a 15 x 15 output,
    225 pixels), the one mix of the two modes the thresholds leave: the
    up-front gather then writes conv2's panels alone. The same bits as
    every phase on up-front panels (force_unblocked) at 1 and 2 threads,
    and the PyTorch reference's result."""
    from laud_mm.ops import channel_branch_add_relu_reference
    max_in, max_out = ops.extension().channel_blocked_max_pixels()[:2]
    assert 169 <= max_in and max_out < 225  # the mix this case is for
    args, _, _ = _channel_case(29, 2, 300, 140, 32, 13, 13, 1, 1, 2)
    args = args[:9] + (1, 2, 1)  # stride 1, padding 2, dilation 1
    ident = torch.randn(2, 32, 15, 15,
                        generator=torch.Generator().manual_seed(3))
    ref = channel_branch_add_relu_reference(ident.clone(), *args)
    for threads in (1, 2):
        blocked = _with_threads(
            threads, lambda: _channel_kernel_with_sums(args, ident))
        unblocked = _with_threads(threads, lambda: _channel_kernel_with_sums(
            args, ident, force_unblocked=True))
        assert torch.equal(blocked[0], unblocked[0]), threads
        assert torch.equal(blocked[1], unblocked[1]), threads
        assert (blocked[0] - ref).abs().max() <= 1e-5, threads


@needs_ext
def test_channel_row_blocked_lists_out_of_order_or_padded():
    """Lists the row blocks do not cut by channel range: a 7 x 7 map
    (row-blocked conv2) with width 256 (a multiple of the 128-channel
    blocks), one sample keeping every channel in the order 128 .. 255,
    0 .. 127 (all 256 entries fall in one binary-search range: taken in
    pieces of at most a block's rows), one keeping channels 0 .. 127 then
    the zero padding channel 256 within its count (the padding channel
    is in the last range). Both give the masked-dense / padding-free
    result, row-blocked and with panels gathered up front."""
    width = 256
    order = list(range(128, 256)) + list(range(128))
    args, ident, dense = _channel_case(
        17, 2, 24, width, 32, 7, 7, 1, 1, 2,
        kept=[order, list(range(128))])
    ref = dense.clone()
    x, chs, counts = args[:3]
    chs2 = torch.full((2, chs.shape[1] + 8), width, dtype=torch.int64)
    chs2[:, :chs.shape[1]] = chs
    counts2 = counts.clone()
    counts2[1] += 1  # the padding channel 256 kept: a zero channel
    # (a list longer than a block overflowed the block buffer before it
    # was taken in pieces: an error only a sanitizer build would report,
    # the values read back being the ones just written)
    for threads in (1, 2):
        for unblocked in (False, True):
            for c, k in ((chs, counts), (chs2, counts2)):
                out = ident.clone()
                _with_threads(threads, lambda: ops.extension()
                              .channel_branch_add_relu(
                                  out, x, c, k, *args[3:],
                                  force_unblocked=unblocked))
                assert (out - ref).abs().max() <= 1e-5, (threads,
                                                          unblocked, k)
    # no input channel: rejected (conv1 would leave its output unwritten)
    with pytest.raises(RuntimeError, match='C_in=0'):
        ops.extension().channel_branch_add_relu(
            ident.clone(), x[:, :0].contiguous(), chs, counts,
            args[3][:0].contiguous(), *args[4:])


# The weight gathers load whole 16-column chunks of a row (masked to the
# kept lanes: csrc/cpu/channel_conv_cpu.cpp, copy_chunks_avx512), which
# may reach past the end of the matrix, and conv3's tiles read kept rows
# of w3p's panels in place: w1t, w2t and w3p each end at a PROT_NONE
# page, and the kept lists reach their last rows' ends, so a load past
# the matrix faults (the process dies) instead of reading unnoticed
# neighbours. The extension alone (importing laud_mm costs
# ~15 s a process).
_GUARD_PAGE_SCRIPT = r"""
import ctypes, importlib.util as u, mmap, sys
import torch
s = u.spec_from_file_location('laud_mm._ext', sys.argv[1])
ext = u.module_from_spec(s)
s.loader.exec_module(ext)
libc = ctypes.CDLL(None, use_errno=True)
libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
keep = []


def check(ok, what):
    if not ok:
        raise SystemExit(f'failed: {what}')


def guarded(t):
    # a copy of t whose last float is the last one before a PROT_NONE page
    page = mmap.PAGESIZE
    nbytes = t.numel() * 4
    pages = (nbytes + page - 1) // page + 1
    buf = mmap.mmap(-1, pages * page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    check(libc.mprotect(base + (pages - 1) * page, page, 0) == 0, 'mprotect')
    g = torch.frombuffer(buf, dtype=torch.float32, count=t.numel(),
                         offset=(pages - 1) * page - nbytes).view(t.shape)
    g.copy_(t)
    keep.append(buf)
    return g


gen = torch.Generator().manual_seed(0)
c_in, c_out = 40, 80
# a row holds width + 1 floats, so 16-column chunks counted from channel
# 2 end one float past it. width 64, batch 4 (a sample per thread):
# channels 2 .. 63; every channel; sparse pairs; 2 .. 63 and the zero
# padding channel `width` within the count (the last rows of w2t and of
# w3p's panels read; C_out = 64 + 16, so w3p ends with a 16-wide one); on
# 7 x 7 (row-blocked phases) and 16 x 16 maps (panels gathered up front).
# width 128, batch 1 on 7 x 7: at 2 threads the column split, whose second
# thread's chunks start at channel 66 and end one float past the row.
cases = [(64, [list(range(2, 64)), list(range(64)),
               [0, 1, 8, 9, 30, 31, 40, 41, 50, 51, 62, 63],
               list(range(2, 64)) + [64]], (7, 16)),
         (128, [list(range(2, 128))], (7,))]
for width, lists, sizes in cases:
    n = len(lists)
    w1t = torch.randn(c_in, width + 1, generator=gen)
    w1t[:, width] = 0
    w2t = torch.randn(9, width + 1, width + 1, generator=gen)
    w2t[:, width] = 0
    w2t[:, :, width] = 0
    w3t = torch.randn(width + 1, c_out, generator=gen)
    w3t[width] = 0
    # in 64-column panels (laud_mm.ops.pack_panels)
    w3p = torch.cat([w3t[:, j:j + 64].reshape(-1) for j in range(0, c_out, 64)])
    b1 = torch.randn(width + 1, generator=gen)
    b2 = torch.randn(width + 1, generator=gen)
    b1[width] = b2[width] = 0
    b3 = torch.randn(c_out, generator=gen)
    chs = torch.full((n, width + 8), width, dtype=torch.int64)
    for i, k in enumerate(lists):
        chs[i, :len(k)] = torch.tensor(k)
    counts = torch.tensor([len(k) for k in lists])
    gw1t, gw2t, gw3p = guarded(w1t), guarded(w2t), guarded(w3p)
    for hw in sizes:
        x = torch.rand(n, c_in, hw, hw, generator=gen)
        ident = torch.randn(n, c_out, hw, hw, generator=gen)
        for threads in (1, 2):
            torch.set_num_threads(threads)
            split = ext.channel_partition_work(chs, counts, c_in, hw, hw,
                                               width, c_out, 1, 1, 1,
                                               threads)[2].sum() > 0
            check(bool(split) == (n < threads), ('column split', width,
                                                  threads))
            outs = []
            for a, b, c in ((w1t, w2t, w3p), (gw1t, gw2t, gw3p)):
                o = ident.clone()
                ext.channel_branch_add_relu(o, x, chs, counts, a, b1, b, b2,
                                            c, b3, 1, 1, 1)
                outs.append(o)
            check(torch.equal(outs[0], outs[1]), (width, hw, threads))
print('ok')
"""


@needs_ext
@pytest.mark.skipif(not sys.platform.startswith('linux'),
                    reason='mmap / mprotect guard pages')
@pytest.mark.parametrize('isa', ['auto', 'generic'])
def test_channel_gathers_stay_within_the_weights(isa):
    """The fused channel kernel never reads past the end of its weight
    matrices (its AVX-512 gathers load whole 16-column chunks of a row,
    masked to the kept columns; conv3's tiles read kept rows of w3p's
    panels in place): with w1t, w2t and w3p ending at a guard page and
    kept lists that reach their last rows' ends, the row-blocked
    phases (7 x 7), the panels gathered up front (16 x 16) and the column
    split (batch 1 at 2 threads), at 1 and 2 threads, with the CPU's
    tiles and the generic ones (``LAUD_MM_CPU_ISA``), run and give the
    same output as with ordinary tensors. (An unmasked chunk load faults
    here: checked by mutation.)"""
    import os
    import subprocess
    env = dict(os.environ, LAUD_MM_CPU_ISA=isa)
    res = subprocess.run(
        [sys.executable, '-c', _GUARD_PAGE_SCRIPT,
         ops.extension().__file__], text=True, capture_output=True, env=env,
        timeout=300)
    assert res.returncode == 0, (res.returncode, res.stdout[-2000:],
                                 res.stderr[-2000:])
    assert res.stdout.strip() == 'ok'


@needs_ext
@pytest.mark.parametrize('s', [1, 2, 4])
def test_gather_scatter_same_at_any_thread_count(s):
    """The gather and scatter-add kernels (the non-fused spatial path) are
    split over threads too: the same bit for bit with 1 and 3 threads."""
    feat, w2, dense, gate, ident = _case(3, 6, 14, 13, s, 1, 1, 0.5, 4)
    run = lambda: _sparse_block(feat, w2, gate, ident, s, 1, 1, 6)  # noqa
    assert torch.equal(_with_threads(1, run), _with_threads(3, run))


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('n_x,rows,m,k,p', [
    (8, [1, 4, 6, 7], 64, 48, 100),   # some samples of a batch
    (1, [0], 32, 16, 3041),           # batch 1, columns split
    (3, [2, 0], 16, 24, 7),           # fewer columns than threads x 16
])
def test_sample_gemm_equals_per_sample_addmm(backend, n_x, rows, m, k, p):
    """ops.sample_gemm (the layer path's conv1 / conv3 of the kept samples,
    columns split over threads) equals a torch.addmm per sample, in place
    into the listed rows only, with 1 and 3 threads (fp32 rounding of the
    BLAS: 1e-5 relative), accumulating or not, with and without the ReLU
    and the bias."""
    g = torch.Generator().manual_seed(n_x + p)
    x = torch.randn(n_x, k, p, generator=g)
    w = torch.randn(m, k, generator=g)
    b = torch.randn(m, generator=g)
    rx = torch.tensor(rows)
    ro = torch.arange(len(rows))
    base = torch.randn(n_x, m, p, generator=g)
    for acc, relu, bias in ((False, True, b), (True, True, b),
                            (True, False, None)):
        want = base.clone()
        ops.sample_gemm_reference(want, w, x, rx, rx, bias, acc, relu)
        expect = base.clone()
        for r in rows:
            y = w @ x[r] + (0 if bias is None else bias[:, None])
            expect[r] = (expect[r] + y) if acc else y
            if relu:
                expect[r] = expect[r].relu()
        assert (want - expect).abs().max() <= 1e-4 * expect.abs().max()
        for threads in (1, 3):
            with ops.use_backend(backend):
                got = _with_threads(threads, lambda: ops.sample_gemm(
                    base.clone(), w, x, rx, rx, bias, acc, relu))
            assert (got - want).abs().max() <= 1e-5 * want.abs().max()
            untouched = [i for i in range(n_x) if i not in rows]
            assert torch.equal(got[untouched], base[untouched])
    # rows of x into other rows of out (conv1 into its buffer)
    out = torch.empty(len(rows), m, p)
    ops.sample_gemm(out, w, x, rx, ro, b, relu=True)
    assert (out - (w @ x[rx] + b[:, None]).relu()).abs().max() <= \
        1e-4 * out.abs().max()


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('p', [3041, 49, 7])
def test_sample_gemm_sums_are_the_written_rows_sums(backend, p):
    """With ``sums``, ops.sample_gemm also returns each written row's sum
    over P, taken in its epilogue pass (per-thread partials added in
    thread order): equal to a torch sum of the written rows (fp32
    rounding) at 1, 2 and 3 threads, identical from call to call at one
    thread count, with and without the ReLU and the bias, accumulating or
    not; the rows it writes are the same as without sums."""
    g = torch.Generator().manual_seed(p)
    n_x, m, k, rows = 5, 24, 40, [4, 0, 3]
    x = torch.randn(n_x, k, p, generator=g)
    w = torch.randn(m, k, generator=g)
    b = torch.randn(m, generator=g)
    rx = torch.tensor(rows)
    base = torch.randn(n_x, m, p, generator=g)
    for acc, relu, bias in ((True, True, b), (False, True, b),
                            (True, False, None), (False, False, b)):
        for threads in (1, 2, 3):
            def run():
                out, sums = base.clone(), torch.full((len(rows), m), 7.)
                plain = base.clone()
                with ops.use_backend(backend):
                    ops.sample_gemm(out, w, x, rx, rx, bias, acc, relu,
                                    sums=sums)
                    ops.sample_gemm(plain, w, x, rx, rx, bias, acc, relu)
                return out, sums, plain
            out, sums, plain = _with_threads(threads, run)
            assert torch.equal(out, plain)
            want = out[rx].sum(dim=2)
            assert torch.allclose(sums, want, rtol=1e-5,
                                  atol=1e-5 * float(want.abs().max()))
            assert torch.equal(sums, _with_threads(threads, run)[1])


@pytest.mark.skipif(ops.extension() is None, reason='needs the extension')
def test_sample_gemm_gemm_routes():
    """The compiled sample_gemm runs each piece's GEMM on oneDNN's matmul
    where torch exports it (this build: ``sample_gemm_backend()``), else
    on torch's BLAS (``blas=True``): both give the per-sample result
    (fp32 rounding), at 1 and 2 threads, in place into the listed rows of
    a strided piece; without accumulation neither reads the rows it
    overwrites (NaN there stays out of the result)."""
    from laud_mm.ops.sample_gemm import onednn_fp32_exact
    ext = ops.extension()
    backend = ext.sample_gemm_backend()
    assert backend in ('onednn', 'blas')
    if torch.backends.mkldnn.is_available() and \
            torch.backends.cpu.get_cpu_capability() == 'AVX512':
        # torch runs float32 oneDNN matmuls on AVX-512BW CPUs
        assert backend == 'onednn'
    # reduced-precision float32 matmuls allowed: the BLAS
    assert onednn_fp32_exact()
    prev = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision('medium')
        assert not onednn_fp32_exact()
    finally:
        torch.set_float32_matmul_precision(prev)
    g = torch.Generator().manual_seed(3)
    n_x, m, k, p, rows = 4, 48, 72, 49, [3, 1]
    x = torch.randn(n_x, k, p, generator=g)
    w = torch.randn(m, k, generator=g)
    b = torch.randn(m, generator=g)
    rx = torch.tensor(rows)
    ro = torch.tensor([0, 2])
    base = torch.randn(n_x, m, p, generator=g)
    for acc in (False, True):
        start = base.clone()
        if not acc:
            start[ro] = float('nan')
        want = base.clone()
        for r_x, r_o in zip(rows, ro.tolist()):
            y = w @ x[r_x] + b[:, None]
            want[r_o] = ((base[r_o] + y) if acc else y).relu()
        want[[1, 3]] = start[[1, 3]]
        for threads in (1, 2):
            for blas in (False, True):
                got = start.clone()
                _with_threads(threads, lambda: ext.sample_gemm(
                    got, w, x, rx, ro, b, acc, True, None, blas))
                assert torch.isfinite(got[ro]).all()
                assert (got - want).abs().max() <= \
                    1e-5 * want.abs().max(), (acc, threads, blas)


def test_sample_gemm_errors():
    x, w = torch.randn(2, 4, 5), torch.randn(3, 4)
    rows = torch.tensor([0, 1])
    with pytest.raises(ValueError, match='do not match'):
        ops.sample_gemm(torch.empty(2, 3, 6), w, x, rows, rows)
    with pytest.raises(ValueError, match='rows_out must lie in'):
        ops.sample_gemm(torch.empty(1, 3, 5), w, x, rows, rows)
    with pytest.raises(ValueError, match='rows_x must be an int64'):
        ops.sample_gemm(torch.empty(2, 3, 5), w, x, rows.int(), rows)
    with pytest.raises(ValueError, match='bias must be'):
        ops.sample_gemm(torch.empty(2, 3, 5), w, x, rows, rows,
                        torch.ones(4))
    with pytest.raises(ValueError, match='x must be a float32'):
        ops.sample_gemm(torch.empty(2, 3, 5), w, x.double(), rows, rows)
    with pytest.raises(ValueError, match=r'sums must be a contiguous \(n, M\)'):
        ops.sample_gemm(torch.empty(2, 3, 5), w, x, rows, rows,
                        sums=torch.empty(3, 2))
    with pytest.raises(ValueError, match='sums must be a float32'):
        ops.sample_gemm(torch.empty(2, 3, 5), w, x, rows, rows,
                        sums=torch.empty(2, 3, dtype=torch.float64))


@needs_ext
def test_sample_gemm_partition_splits_columns_evenly():
    """Columns per thread: within one column of even for any sample
    count and map size; a single sample splits too."""
    for n, p, t in ((4, 3136, 2), (1, 60800, 64), (3, 49, 8), (7, 196, 5)):
        cols = ops.sample_gemm_partition(n, p, t)
        assert cols.shape == (t,) and int(cols.sum()) == n * p
        assert int(cols.max()) - n * p / t <= 1, (n, p, t)


def _random_idx(n, gh, gw, density, seed, empty=()):
    g = torch.Generator().manual_seed(seed)
    gate = (torch.rand(n, gh, gw, generator=g) < density).float()
    for i in empty:
        gate[i] = 0
    return gate, (gate > 0.5).nonzero().contiguous()


@needs_ext
def test_spatial_partition_counts_the_kernels_work_and_balances():
    """ops.spatial_partition_work: the per-thread MACs of the kernel's own
    plan. Over the threads they add up to the dilated mask's conv1 and the
    active pixels' conv2 + conv3 (counted here from the expanded gate);
    every phase is balanced within a 7- or 8-pixel tile per boundary even
    when the active patches sit in one sample of eight (the ranges span
    samples) or the batch is one image; too little work leaves threads
    idle (the imbalance approaches the thread count)."""
    n, c_in, width, c_out, h, w, s = 8, 64, 32, 128, 28, 28, 4
    gate, idx = _random_idx(n, 7, 7, 0.45, 1)
    mask = gate.repeat_interleave(s, 1).repeat_interleave(s, 2)
    # conv1 input pixels: the mask dilated by conv2's 3 x 3 window
    need = F.max_pool2d(mask[:, None], 3, 1, 1)[:, 0] > 0
    work = ops.spatial_partition_work(idx, n, c_in, (h, w), width, c_out,
                                      s, 1, 1, 4)
    assert work.shape == (2, 4)
    assert float(work[0].sum()) == int(need.sum()) * c_in * width
    assert float(work[1].sum()) == int(mask.sum()) *         (9 * width * width + width * c_out)
    assert ops.imbalance(work) < 1.01
    # all the work in one sample of eight: still even
    one, idx1 = _random_idx(n, 7, 7, 0.9, 2, empty=range(1, 8))
    work = ops.spatial_partition_work(idx1, n, c_in, (h, w), width, c_out,
                                      s, 1, 1, 8)
    assert ops.imbalance(work) < 1.1
    per = work.sum(0)
    assert float(per.min()) > 0.9 * float(per.mean())
    # batch 1, a 200 x 304 map: 64 threads within 1 %
    gate1, idx1 = _random_idx(1, 50, 76, 0.5, 3)
    work = ops.spatial_partition_work(idx1, 1, 256, (200, 304), 64, 256, 4,
                                      1, 1, 64)
    assert ops.imbalance(work) < 1.01
    # 3 active pixels (S = 1: ranges of single pixels) for 8 threads: 3
    # threads busy in phase 2
    tiny = torch.tensor([[0, 1, 1], [0, 3, 3], [0, 5, 5]])
    work = ops.spatial_partition_work(tiny, 1, 64, (7, 7), 32, 64, 1, 1, 1,
                                      8)
    assert int((work[1] > 0).sum()) == 3
    assert ops.imbalance(work) > 1.5
    # S = 4: ranges of whole 8-pixel epilogue blocks only with 64 pixels a
    # thread or more. One patch (16 pixels) for 8 threads: 2 each
    per_px = 9 * 32 * 32 + 32 * 64
    work = ops.spatial_partition_work(tiny[:1], 1, 64, (28, 28), 32, 64, 4,
                                      1, 1, 8)
    assert work[1].tolist() == [2. * per_px] * 8
    # every patch of a 28 x 28 map (784 pixels, 98 a thread): whole blocks
    grid = torch.arange(7)
    full = torch.stack([torch.zeros(49, dtype=torch.int64),
                        grid.repeat_interleave(7), grid.repeat(7)], 1)
    work = ops.spatial_partition_work(full, 1, 64, (28, 28), 32, 64, 4,
                                      1, 1, 8)
    pixels = [v / per_px for v in work[1].tolist()]
    assert sum(pixels) == 784 and all(p % 8 == 0 for p in pixels), pixels
    assert ops.imbalance(work) < 1.1
    with pytest.raises(ValueError, match='threads=0'):
        ops.spatial_partition_work(idx, n, c_in, (h, w), width, c_out, s,
                                   1, 1, 0)


@needs_ext
def test_channel_partition_weighs_kept_counts():
    """ops.channel_partition_work: the per-thread cost of the kernel's
    plan. With kept counts that differ between samples (one sample keeps
    every channel, the others few or none) the split weighs them: within
    a few percent at 2 - 16 threads, where one thread per sample would be
    about N / 2 x slower than even."""
    n, c_in, width, c_out, hw = 8, 256, 64, 256, (14, 14)
    counts = torch.tensor([64, 4, 0, 8, 4, 2, 6, 4])
    chs = torch.arange(width).expand(n, width).contiguous()
    for threads in (2, 4, 8, 16):
        work = ops.channel_partition_work(chs, counts, c_in, hw, width,
                                          c_out, 1, 1, 1, threads)
        assert work.shape == (3, threads)
        # 14 x 14 output: pixels split, conv3 in phase 2 (no third phase)
        assert float(work[2].abs().sum()) == 0.
        assert ops.imbalance(work) < 1.05, threads
    # the totals are the plan's costs: conv1 C_in x kp per input pixel
    kp = (counts + 15) // 16 * 16
    work = ops.channel_partition_work(chs, counts, c_in, hw, width, c_out, 1,
                                      1, 1, 3)
    assert float(work[0].sum()) == float((kp * c_in).sum()) * 196
    # per sample (the old thread-per-sample schedule) on 8 threads
    per_sample = (kp * c_in).double() * 196
    assert float(per_sample.max() / per_sample.mean()) > 3
    # batch 1 over 8 threads
    work = ops.channel_partition_work(chs[:1], counts[:1], c_in, hw, width,
                                      c_out, 1, 1, 1, 8)
    assert ops.imbalance(work) < 1.3
    with pytest.raises(ValueError, match='threads=0'):
        ops.channel_partition_work(chs, counts, c_in, hw, width, c_out, 1,
                                   1, 1, 0)
    # the kernel's C_out rule (its conv3 units are 16 channels)
    with pytest.raises(RuntimeError, match='multiple of 16, got 20'):
        ops.channel_partition_work(chs, counts, c_in, hw, width, 20, 1, 1,
                                   1, 2)


def test_imbalance():
    """max / mean of each phase, summed: 1 for an even split, T when one of
    T threads does everything; phases add."""
    assert ops.imbalance(torch.ones(2, 4)) == 1.0
    assert ops.imbalance(torch.tensor([[4., 0, 0, 0]])) == 4.0
    assert ops.imbalance(torch.tensor([[4., 0], [1., 1]])) == 5 / 3
    assert ops.imbalance(torch.zeros(2, 3)) == 1.0
    with pytest.raises(ValueError, match='phases, threads'):
        ops.imbalance(torch.ones(3))


# ------------------------------------------------------------- stem max-pool
@pytest.mark.parametrize('shape', [(2, 64, 112, 112), (3, 5, 17, 22),
                                   (1, 3, 2, 3), (1, 4, 50, 76)])
def test_stem_max_pool_equals_pytorch(shape):
    """``ops.max_pool2d`` (the compiled kernel where built, else oneDNN's
    pool) returns F.max_pool2d's values, negatives and borders included
    (padding excluded from the max), at 1 - 3 threads; the reference
    backend takes oneDNN's pool, which gives the same."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(3)) - 0.5
    built = ops.extension() is not None
    assert ops.max_pool.uses_kernel(x) == built
    assert ops.max_pool.uses_onednn(x) == (
        not built and torch.backends.mkldnn.is_available())
    ref = F.max_pool2d(x, 3, 2, 1)
    prev = torch.get_num_threads()
    try:
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            got = ops.max_pool2d(x, 3, 2, 1)
            assert got.is_contiguous()
            assert torch.equal(got, ref), t
    finally:
        torch.set_num_threads(prev)
    with ops.use_backend('pytorch'):
        assert not ops.max_pool.uses_kernel(x)
        assert ops.max_pool.uses_onednn(x) == \
            torch.backends.mkldnn.is_available()
        assert torch.equal(ops.max_pool2d(x, 3, 2, 1), ref)
    # tensors neither kernel is used for give the same too
    xs = x.transpose(2, 3)
    assert not ops.max_pool.uses_kernel(xs)
    assert not ops.max_pool.uses_onednn(xs)
    assert torch.equal(ops.max_pool2d(xs, 3, 2, 1), F.max_pool2d(xs, 3, 2, 1))


@needs_ext
@pytest.mark.parametrize('k,s,p', [((3, 3), (2, 2), (1, 1)),
                                   ((3, 3), (1, 1), (1, 1)),
                                   ((2, 2), (2, 2), (0, 0)),
                                   ((5, 3), (3, 2), (2, 0)),
                                   ((3, 5), (2, 3), (0, 2))])
def test_max_pool_kernel_windows_and_nan(k, s, p):
    """The compiled max-pool for other kernels, strides (the stride-2
    column path and the one-by-one path) and paddings, per axis, with
    NaN inputs: the values and NaN positions of F.max_pool2d; a wrong
    tensor or window is refused by name."""
    x = torch.randn(2, 3, 23, 41, generator=torch.Generator().manual_seed(5))
    x.view(-1)[::53] = float('nan')
    ref = F.max_pool2d(x, k, s, p)
    got = ops.max_pool2d(x, k, s, p)
    assert got.shape == ref.shape
    assert torch.equal(got.isnan(), ref.isnan())
    assert ref.isnan().any()
    assert torch.equal(got.nan_to_num(7.), ref.nan_to_num(7.))
    ext = ops.extension()
    with pytest.raises(RuntimeError, match='contiguous'):
        ext.max_pool2d(x.double(), *k, *s, *p)
    with pytest.raises(RuntimeError, match='stride must be positive'):
        ext.max_pool2d(x, 3, 3, 0, 2, 1, 1)
    with pytest.raises(RuntimeError, match='padding must be'):
        ext.max_pool2d(x, 3, 3, 2, 2, 2, 1)
    with pytest.raises(RuntimeError, match='smaller than the kernel'):
        ext.max_pool2d(x[:, :, :2].contiguous(), 5, 5, 1, 1, 1, 1)
    with pytest.raises(RuntimeError, match='must not be empty'):
        ext.max_pool2d(x[:, :, :0].contiguous(), 2, 2, 1, 1, 1, 1)


def test_stem_max_pool_module_and_errors():
    """LAUDResNet's stem pool: eval output equals nn.MaxPool2d's, training
    uses nn.MaxPool2d (gradients), bad arguments name the key."""
    from laud_mm.models import LAUDResNet
    net = LAUDResNet(50, paradigm='layer')
    assert isinstance(net.maxpool, ops.MaxPool2d)
    ref = torch.nn.MaxPool2d(3, 2, 1)
    x = torch.randn(2, 64, 15, 16, requires_grad=True)
    net.maxpool.eval()
    with torch.no_grad():
        assert torch.equal(net.maxpool(x), ref(x))
    net.maxpool.train()
    net.maxpool(x).sum().backward()
    assert x.grad is not None and float(x.grad.sum()) > 0
    with pytest.raises(ValueError, match='padding=2'):
        ops.max_pool2d(x.detach(), 3, 2, 2)
    with pytest.raises(ValueError, match='stride='):
        ops.max_pool2d(x.detach(), 3, -1, 1)
    with pytest.raises(ValueError, match='stride=0 must be positive'):
        ops.max_pool2d(x.detach(), 3, 0, 1)
    with pytest.raises(ValueError, match='kernel_size=.0, 3. must be'):
        ops.max_pool2d(x.detach(), (0, 3), 1, 0)


# ------------------------------------------------ portable kernels switch
@pytest.mark.skipif(ops.extension() is None, reason='laud_mm._ext not built')
def test_cpu_isa_switch():
    """LAUD_MM_CPU_ISA=generic makes the same build run the portable
    kernels (CI runs the kernel and dynamic-path tests that way); another
    value is refused by name."""
    import os
    import subprocess
    import sys
    if os.environ.get('LAUD_MM_CPU_ISA') == 'generic':
        assert ops.channel_branch_isa() == 'generic'
    # the extension alone (importing laud_mm costs ~15 s a process)
    code = ('import importlib.util as u, sys, torch; '
            's = u.spec_from_file_location("laud_mm._ext", sys.argv[1]); '
            'm = u.module_from_spec(s); s.loader.exec_module(m); '
            'print(m.channel_branch_isa())')
    so = ops.extension().__file__
    env = dict(os.environ, LAUD_MM_CPU_ISA='generic')
    out = subprocess.run([sys.executable, '-c', code, so], env=env,
                         text=True, capture_output=True, check=True)
    assert out.stdout.strip() == 'generic'
    env['LAUD_MM_CPU_ISA'] = 'avx9000'
    bad = subprocess.run([sys.executable, '-c', code, so], env=env,
                         text=True, capture_output=True)
    assert bad.returncode != 0
    assert "LAUD_MM_CPU_ISA=avx9000 is not 'auto' or 'generic'" in bad.stderr


@needs_ext
@pytest.mark.parametrize('n,c_in,width,c_out,h,w,s,stride,dil,density', [
    (3, 40, 32, 64, 13, 11, 4, 1, 1, 0.5),   # S = 4, edge patches
    (2, 24, 16, 32, 9, 6, 2, 2, 1, 0.6),     # stride 2
    (2, 16, 32, 80, 10, 9, 1, 1, 2, 0.3),    # dilation 2, S = 1, 64 + 16
    (2, 2100, 80, 32, 16, 14, 4, 1, 1, 0.5),  # NCHW: pixel-major chunks
    (2, 16, 32, 32, 40, 40, 4, 1, 1, 0.6),   # ranges of 8-pixel blocks
    (5, 64, 16, 64, 7, 7, 7, 1, 1, 0.6),     # a patch per sample (layer)
])
def test_spatial_branch_channels_last_equals_nchw(n, c_in, width, c_out, h,
                                                  w, s, stride, dil,
                                                  density):
    """x, identity and out channels_last: the fused spatial kernel reads x's
    pixel rows and writes out's in place and returns the NCHW result bit
    for bit, out of place, in place and in place over a non-negative
    identity, at 1 - 3 threads, AVX-512 and generic tiles; a mixed layout
    is refused by the extension and computed by the Python API."""
    from laud_mm.ops import spatial_branch_add_relu
    x, ident, idx, packed, dense, _ = _spatial_case(
        13, n, c_in, width, c_out, h, w, s, stride, dil, density)
    cl = torch.channels_last
    nonneg = ident.relu()
    ext = ops.extension()

    def run(xx, idn, nn_, generic):
        a = torch.empty_like(idn)
        ext.spatial_branch_add_relu(a, xx, idn, idx, *packed, s, stride,
                                    dil, False, generic)
        b = idn.clone()
        ext.spatial_branch_add_relu(b, xx, b, idx, *packed, s, stride, dil,
                                    False, generic)
        c = nn_.clone()
        ext.spatial_branch_add_relu(c, xx, c, idx, *packed, s, stride, dil,
                                    True, generic)
        return a, b, c
    lay = [t.contiguous(memory_format=cl) for t in (x, ident, nonneg)]
    for generic in (False, True):
        for threads in (1, 2, 3):
            ref = _with_threads(threads, lambda: run(x, ident, nonneg,
                                                     generic))
            got = _with_threads(threads, lambda: run(*lay, generic))
            for u, v in zip(ref, got):
                assert v.is_contiguous(memory_format=cl)
                assert torch.equal(u, v), (generic, threads)
            assert (got[0] - dense).abs().max() <= 1e-5
    with pytest.raises(RuntimeError, match='all channels_last'):
        ext.spatial_branch_add_relu(torch.empty_like(ident), lay[0], ident,
                                    idx, *packed, s, stride, dil, False,
                                    False)
    o = torch.empty_like(ident)
    spatial_branch_add_relu(o, lay[0], ident, idx, *packed, s, stride, dil)
    assert (o - dense).abs().max() <= 1e-5


# ------------------------------------------------------ spatial masker logit
@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('layout', ['NCHW', 'channels_last'])
@pytest.mark.parametrize('n,c,h,w,grid', [
    (8, 64, 56, 56, (14, 14)),   # R50 s1, S = 4: whole samples per thread
    (1, 37, 23, 19, (6, 5)),     # batch 1: bands of cell rows; C % 4 != 0
    (3, 8, 13, 17, (4, 5)),      # grid not dividing the map: shared rows
    (2, 5, 7, 7, (7, 7)),        # S = 1: a cell per pixel
    (1, 3, 9, 11, (1, 1)),       # one cell: the global mean
])
def test_spatial_logit_pool_equals_masker_module_order(backend, layout, n,
                                                       c, h, w, grid):
    """The spatial masker's keep - skip logit difference on the patch grid
    in one pass over x equals the masker module's order (adaptive average
    pool of every channel, then the 1x1 conv) to fp32 rounding, on the
    compiled kernel and the reference, x in NCHW or channels_last (read in
    place: a dot product per pixel row), and the kernel's (and the NCHW
    reference's) does not depend on the thread count (bit for bit)."""
    g = torch.Generator().manual_seed(n * 100 + c)
    x = torch.randn(n, c, h, w, generator=g)
    if layout == 'channels_last':
        x = x.contiguous(memory_format=torch.channels_last)
    wt = torch.randn(c, generator=g) / c ** 0.5
    b = 0.37
    ref = F.conv2d(F.adaptive_avg_pool2d(x, grid), wt.view(1, c, 1, 1),
                   torch.tensor([b]))[:, 0]
    prev = torch.get_num_threads()
    outs = []
    try:
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            with ops.use_backend(backend):
                outs.append(ops.spatial_logit_pool(x, wt, b, grid))
    finally:
        torch.set_num_threads(prev)
    assert outs[0].shape == (n, *grid) and outs[0].dtype == torch.float32
    assert (outs[0] - ref).abs().max() <= 1e-5 * max(1., ref.abs().max())
    if backend == 'cpp' or layout == 'NCHW':  # (the reference's GEMV over
        # channels_last rows splits its sums by the thread count)
        assert torch.equal(outs[0], outs[1]) and \
            torch.equal(outs[0], outs[2])


def test_spatial_logit_pool_errors():
    x = torch.randn(2, 4, 8, 8)
    with pytest.raises(ValueError, match='x must be a float32 CPU tensor'):
        ops.spatial_logit_pool(x.double(), torch.randn(4), 0., (2, 2))
    with pytest.raises(ValueError, match=r'x must be \(N, C, H, W\)'):
        ops.spatial_logit_pool(x[0], torch.randn(4), 0., (2, 2))
    with pytest.raises(ValueError, match=r'w must be \(C,\) = \(4,\)'):
        ops.spatial_logit_pool(x, torch.randn(5), 0., (2, 2))
    with pytest.raises(ValueError, match=r'grid=\(9, 2\) must lie in'):
        ops.spatial_logit_pool(x, torch.randn(4), 0., (9, 2))
    with pytest.raises(ValueError, match=r'grid=\(2, 0\) must lie in'):
        ops.spatial_logit_pool(x, torch.randn(4), 0., (2, 0))


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('n,c,h,w,grid', [
    (8, 64, 28, 28, (7, 7)),     # whole samples per thread
    (6, 11, 10, 13, (5, 13)),    # whole samples in address order: planes
                                 # of 130 pixels (masked tail), C % 4 != 0
    (1, 37, 24, 19, (6, 5)),     # batch 1: bands of cell rows; C % 4 != 0
    (1, 8, 13, 17, (4, 5)),      # cells share rows: one band per sample
    (2, 5, 7, 7, (7, 7)),        # S = 1
])
@pytest.mark.parametrize('layout', ['NCHW', 'channels_last'])
def test_add_relu_logit_pool_is_the_epilogue_then_the_logit_pool(
        backend, n, c, h, w, grid, layout):
    """out = relu(out + identity) in place and the next spatial masker's
    logits in one pass: the output equals add_ / relu_ bit for bit (NaN
    kept), and the logits equal spatial_logit_pool of the new output (bit
    for bit with the compiled kernels, fp32 rounding on the reference), at
    1, 2 and 3 threads: the handed-on logits make the decisions the masker
    makes from the tensor itself."""
    g = torch.Generator().manual_seed(n * 100 + c)
    out0 = torch.randn(n, c, h, w, generator=g)
    out0[0, 0, 0, 0] = float('nan')
    ident = torch.randn(n, c, h, w, generator=g)
    wt = torch.randn(c, generator=g) / c ** 0.5
    b = -0.21
    fmt = torch.channels_last if layout == 'channels_last' else \
        torch.contiguous_format
    out0, ident = (t.contiguous(memory_format=fmt) for t in (out0, ident))
    want = torch.relu(out0 + ident).contiguous(memory_format=fmt)
    prev = torch.get_num_threads()
    try:
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            with ops.use_backend(backend):
                out = out0.clone()
                logit = ops.add_relu_logit_pool_(out, ident, wt, b, grid)
                pooled = ops.spatial_logit_pool(want, wt, b, grid)
            assert torch.equal(out.nan_to_num(7.), want.nan_to_num(7.))
            assert out.is_contiguous(memory_format=fmt)
            assert out[0, 0, 0, 0].isnan()
            assert logit.shape == (n, *grid)
            if backend == 'cpp':
                assert torch.equal(logit.nan_to_num(7.),
                                   pooled.nan_to_num(7.))
            else:
                fin = pooled.isfinite()
                assert torch.equal(fin, logit.isfinite())
                assert (logit - pooled)[fin].abs().max() <= 1e-5 * max(
                    1., pooled[fin].abs().max())
    finally:
        torch.set_num_threads(prev)


def test_add_relu_logit_pool_errors():
    x, i = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    w = torch.randn(4)
    with pytest.raises(ValueError, match='identity must be a float32 CPU'):
        ops.add_relu_logit_pool_(x, i.double(), w, 0., (2, 2))
    with pytest.raises(ValueError, match=r'of one shape, got \(2, 4, 8, 8\) '
                       r'and \(2, 4, 8, 7\)'):
        ops.add_relu_logit_pool_(x, i[..., :7], w, 0., (2, 2))
    with pytest.raises(ValueError, match='another tensor than out'):
        ops.add_relu_logit_pool_(x, x, w, 0., (2, 2))
    with pytest.raises(ValueError, match=r'w must be \(C,\) = \(4,\)'):
        ops.add_relu_logit_pool_(x, i, torch.randn(3), 0., (2, 2))
    with pytest.raises(ValueError, match=r'grid=\(2, 9\) must lie in'):
        ops.add_relu_logit_pool_(x, i, w, 0., (2, 9))
    if ops.extension() is not None:  # overlapping views race
        buf = torch.randn(3, 4, 8, 8)
        with pytest.raises(RuntimeError, match='single memory location'):
            ops.add_relu_logit_pool_(buf[1:], buf[:2], w, 0., (2, 2))


# ------------------------------------------------- epilogue with channel mean
@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('layout', ['NCHW', 'channels_last'])
@pytest.mark.parametrize('shape', [(8, 64, 14, 14), (2, 5, 7, 9),
                                   (1, 3, 1, 17), (3, 2, 33, 1),
                                   (2, 40, 9, 10), (5, 256, 64, 64)])
def test_add_relu_mean_equals_add_relu_then_mean(backend, layout, shape):
    """out = relu(out + identity) in place and its channel means in one
    pass: equal to add_ / relu_ (bit for bit) and mean (fp32 rounding), NaN
    kept as torch.relu keeps it, and the same at 1, 2 and 3 threads (bit
    for bit); in channels_last too (chunks of 64 pixels, channel counts
    off the 16 lanes; the chunks' sums added per sample in one thread for
    small maps, split over the threads by samples for 64 x 64 x 256),
    out staying channels_last."""
    g = torch.Generator().manual_seed(sum(shape))
    a = torch.randn(*shape, generator=g)
    ident = torch.randn(*shape, generator=g)
    a.view(-1)[0] = float('nan')
    fmt = torch.channels_last if layout == 'channels_last' else \
        torch.contiguous_format
    a, ident = (t.contiguous(memory_format=fmt) for t in (a, ident))
    ref_out = torch.relu(a + ident)
    ref_mean = ref_out.mean(dim=(2, 3))
    prev = torch.get_num_threads()
    res = []
    try:
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            out = a.clone()
            with ops.use_backend(backend):
                mean = ops.add_relu_mean_(out, ident)
            res.append((out, mean))
    finally:
        torch.set_num_threads(prev)
    out, mean = res[0]
    assert out.is_contiguous(memory_format=fmt)
    assert torch.allclose(out, ref_out, rtol=0, atol=0, equal_nan=True)
    assert mean.shape == shape[:2] and torch.isnan(mean.view(-1)[0])
    assert torch.allclose(mean, ref_mean, rtol=1e-5, atol=1e-6,
                          equal_nan=True)
    for o, m in res[1:]:
        assert torch.equal(o.nan_to_num(), out.nan_to_num())
        assert torch.equal(m.nan_to_num(), mean.nan_to_num())


def test_add_relu_mean_errors():
    x = torch.randn(2, 4, 3, 3)
    with pytest.raises(ValueError, match='out must be a float32 CPU tensor'):
        ops.add_relu_mean_(x.double(), x)
    with pytest.raises(ValueError, match='of one shape'):
        ops.add_relu_mean_(x, x[:1])
    with pytest.raises(ValueError, match='another tensor than out'):
        ops.add_relu_mean_(x, x)
    # mixed layouts: the compiled kernel refuses them, the Python API
    # computes them with the reference
    if ops.extension() is not None:
        cl = x.contiguous(memory_format=torch.channels_last)
        with pytest.raises(RuntimeError, match='both channels_last'):
            ops.extension().add_relu_mean(cl.clone(), x)
        out = cl.clone()
        mean = ops.add_relu_mean_(out, x)
        assert torch.equal(out, torch.relu(cl + x))
        assert torch.allclose(mean, out.mean(dim=(2, 3)))


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('shape,rows', [((8, 64, 14, 14), [6, 1, 3]),
                                        ((3, 5, 7, 9), [2]),
                                        ((2, 3, 1, 17), [0, 1]),
                                        ((4, 2, 33, 1), []),
                                        ((5, 256, 64, 64), [4, 0, 2])])
@pytest.mark.parametrize('layout', ['NCHW', 'channels_last'])
@pytest.mark.parametrize('with_addend', [False, True])
def test_relu_mean_rows_rectifies_the_listed_samples(backend, shape, rows,
                                                     layout, with_addend):
    """out[rows[j]] = relu(out[rows[j]] (+ addend[j])) in place and their
    channel means in one pass (the samples a downsampling layer block
    skips; with the addend, the kept samples' branch output added into
    their shortcut rows): the rows equal torch's add and relu bit for bit
    (NaN kept), the other samples untouched, the means torch's up to fp32
    rounding, and the same at 1, 2 and 3 threads; out and addend in NCHW
    or channels_last (out kept in its layout; the chunk sums of the three
    64 x 64 x 256 rows split over the threads)."""
    g = torch.Generator().manual_seed(sum(shape))
    a = torch.randn(*shape, generator=g)
    if rows:
        a[rows[0]].view(-1)[0] = float('nan')
    fmt = torch.channels_last if layout == 'channels_last' else \
        torch.contiguous_format
    a = a.contiguous(memory_format=fmt)
    r = torch.tensor(rows, dtype=torch.int64)
    add = torch.randn(len(rows), *shape[1:], generator=g).contiguous(
        memory_format=fmt) if with_addend else None
    ref = a.clone()
    ref[r] = (ref[r] if add is None else ref[r] + add).relu()
    ref_mean = ref[r].mean(dim=(2, 3))
    res = []
    for t in (1, 2, 3):
        def run():
            out = a.clone()
            with ops.use_backend(backend):
                return out, ops.relu_mean_rows_(out, r, add)
        res.append(_with_threads(t, run))
    out, mean = res[0]
    assert out.is_contiguous(memory_format=fmt)
    assert torch.allclose(out, ref, rtol=0, atol=0, equal_nan=True)
    assert mean.shape == (len(rows), shape[1])
    assert torch.allclose(mean, ref_mean, rtol=1e-5, atol=1e-6,
                          equal_nan=True)
    if rows:
        assert torch.isnan(mean[0, 0])
    for o, m in res[1:]:
        assert torch.equal(o.nan_to_num(), out.nan_to_num())
        assert torch.equal(m.nan_to_num(), mean.nan_to_num())


def test_relu_mean_rows_errors():
    x = torch.randn(3, 4, 2, 2)
    with pytest.raises(ValueError, match='out must be a float32 CPU tensor'):
        ops.relu_mean_rows_(x.double(), torch.tensor([0]))
    with pytest.raises(ValueError, match=r'out must be \(N, C, H, W\)'):
        ops.relu_mean_rows_(x[0], torch.tensor([0]))
    with pytest.raises(ValueError, match='rows must be an int64'):
        ops.relu_mean_rows_(x, torch.tensor([0], dtype=torch.int32))
    with pytest.raises(ValueError, match=r'rows must lie in \[0, 3\)'):
        ops.relu_mean_rows_(x, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match='rows must be distinct'):
        ops.relu_mean_rows_(x, torch.tensor([1, 1]))
    rows = torch.tensor([0, 2])
    with pytest.raises(ValueError, match='addend must be a float32 CPU'):
        ops.relu_mean_rows_(x, rows, torch.zeros(2, 4, 2, 2).double())
    for bad in (torch.zeros(3, 4, 2, 2), torch.zeros(2, 4, 2, 3)):
        with pytest.raises(ValueError, match=r'addend must be \(len\(rows\), '
                                             r'C, H, W\) = \(2, 4, 2, 2\)'):
            ops.relu_mean_rows_(x, rows, bad)
    # an addend sharing out's memory (a view of its other samples) is read
    # while out is written
    with pytest.raises(ValueError, match="must not be a view of out's"):
        ops.relu_mean_rows_(x, torch.tensor([0]), x[2:])
    # rows are checked before the addend (whose check reads their length)
    with pytest.raises(ValueError, match='rows must be an int64'):
        ops.relu_mean_rows_(x, [0, 1], torch.zeros(2, 4, 2, 2))
    # nothing listed, an empty addend: nothing written, no means
    y = x.clone()
    empty = ops.relu_mean_rows_(y, torch.zeros(0, dtype=torch.int64),
                                torch.zeros(0, 4, 2, 2))
    assert empty.shape == (0, 4) and torch.equal(y, x)
    with pytest.raises(ValueError, match='rows must be distinct'):
        ops.relu_mean_rows_(x, torch.tensor([1, 1]), torch.zeros(2, 4, 2, 2))
    if ops.extension() is not None:  # the kernel's own checks (the wrapper
        # runs the reference on mixed layouts)
        ext = ops.extension()
        with pytest.raises(RuntimeError, match='memory format'):
            ext.relu_mean_rows(x.clone(), rows, torch.zeros(2, 4, 2, 2)
                               .contiguous(memory_format=torch.channels_last))
        y = x.clone()
        with pytest.raises(RuntimeError, match="must not be a view of"):
            ext.relu_mean_rows(y, torch.tensor([0]), y[2:])
        with pytest.raises(RuntimeError, match='distinct with an addend'):
            ext.relu_mean_rows(y, torch.tensor([1, 1]),
                               torch.zeros(2, 4, 2, 2))
