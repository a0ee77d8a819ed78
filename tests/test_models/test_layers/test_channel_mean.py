"""The channel means a dense block's epilogue hands to the next block's
layer / channel masker (laud_mm.models.layers.channel_mean): used only while
the tensor is unchanged and no gradient is needed, and giving the masker the
decisions it makes from the tensor itself."""
import pytest
import torch

import laud_mm  # noqa: F401
from laud_mm import ops
from laud_mm.models import LAUDResNet
from laud_mm.models.layers import channel_mean as cm


def test_recorded_mean_is_used_until_the_tensor_changes():
    x = torch.rand(2, 3, 4, 5)
    mean = x.mean(dim=(2, 3))
    cm.record_channel_mean(x, mean)
    assert cm.channel_mean(x) is mean
    x.mul_(2)  # an in-place write invalidates the record
    got = cm.channel_mean(x)
    assert got is not mean and torch.equal(got, x.mean(dim=(2, 3)))
    # another shape's record (not this tensor's) is never used
    y = torch.rand(2, 3, 4, 5)
    cm.record_channel_mean(y, torch.zeros(3, 2))
    assert torch.equal(cm.channel_mean(y), y.mean(dim=(2, 3)))


def test_no_record_on_inference_tensors():
    """Inference tensors keep no version counter: nothing is recorded, the
    mean is computed."""
    with torch.inference_mode():
        x = torch.rand(2, 3, 4, 5)
        cm.record_channel_mean(x, torch.zeros(2, 3))
        assert cm.recorded_channel_mean(x) is None
        assert torch.equal(cm.channel_mean(x), x.mean(dim=(2, 3)))


def test_recorded_mean_is_ignored_when_gradients_are_needed():
    x = torch.rand(2, 3, 4, 5, requires_grad=True)
    with torch.no_grad():
        cm.record_channel_mean(x, torch.zeros(2, 3))
    m = cm.channel_mean(x)
    assert m.requires_grad and torch.equal(m, x.mean(dim=(2, 3)))
    m.sum().backward()
    assert torch.allclose(x.grad, torch.full_like(x, 1 / 20))


def _half_forced_gates(net, x):
    """Force about half of every block's gates off (seeded)."""
    with torch.no_grad():
        net(x)
    g = torch.Generator().manual_seed(0)
    for b in net.blocks:
        shape = b.last_stats['gate'].shape
        b.masker.forced_gate = (torch.rand(shape, generator=g)
                                < 0.5).float()


def _run_with_mean_spy(net, x, monkeypatch):
    """Masked-dense, then dynamic inference of ``net`` on x, the maskers'
    ``channel_mean`` spied on during the dynamic forward: every valid record
    must equal its tensor's means. Returns (used: per masker call whether a
    record was used, masked-dense gates, masked-dense outputs, dynamic
    outputs)."""
    used = []
    real_record, real_mean = cm.recorded_channel_mean, cm.channel_mean

    def spy_mean(t):  # the maskers' call: was a valid record used?
        rec = real_record(t)
        if rec is not None:
            assert torch.allclose(rec, t.mean(dim=(2, 3)), rtol=1e-5,
                                  atol=1e-6)
        out = real_mean(t)
        used.append(rec is not None and out is rec)
        return out
    monkeypatch.setattr(laud_mm.models.layers.maskers, 'channel_mean',
                        spy_mean)
    with torch.no_grad():
        net.dynamic_inference = False
        ref = net(x)
        ref_gates = [b.last_stats['gate'].clone() for b in net.blocks]
        used.clear()
        net.dynamic_inference = True
        out = net(x)
    return used, ref_gates, ref, out


def _half_gates_at(threads, net, x, monkeypatch):
    """:func:`_half_forced_gates` then :func:`_run_with_mean_spy` of ``net``
    on x at ``threads`` torch threads (restored afterwards)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _half_forced_gates(net, x)
        return _run_with_mean_spy(net, x, monkeypatch)
    finally:
        torch.set_num_threads(prev)


def _check_same_function(net, ref_gates, ref, out):
    for b, g in zip(net.blocks, ref_gates):
        assert torch.equal(b.last_stats['gate'], g)
    for a, r in zip(out, ref):
        assert (a - r).abs().max() <= 1e-4 * max(1., r.abs().max())


@pytest.mark.parametrize('gates', ['learned', 'half'])
@pytest.mark.parametrize('paradigm', ['layer', 'channel'])
def test_backbone_maskers_decide_from_the_recorded_means(paradigm, gates,
                                                         monkeypatch):
    """LAUD-R50 with its maskers' learned gates (keep-biased init plus
    random weights: most blocks keep everything, so their dense epilogue
    records the means) or half the gates forced off (the channel kernel's
    output pass, the layer path writing into its input): the next block's
    masker uses the recorded means, which are the means of its input, and
    dynamic inference keeps the masked-dense model's gates and output."""
    torch.manual_seed(0)
    kw = dict(granularity=(2, 2, 2, 2)) if paradigm == 'channel' else {}
    net = LAUDResNet(50, paradigm=paradigm, **kw).eval()
    with torch.no_grad():
        for b in net.blocks:
            for m in b.masker.modules():
                if isinstance(m, torch.nn.Linear):
                    m.weight.normal_(0, 0.05)
    x = torch.randn(4, 3, 64, 64)
    if gates == 'half':
        _half_forced_gates(net, x)
    used, ref_gates, ref, out = _run_with_mean_spy(net, x, monkeypatch)
    assert len(used) == len(net.blocks)
    if ops.extension() is not None:
        assert sum(used) >= len(net.blocks) // 2, used
    _check_same_function(net, ref_gates, ref, out)


@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('fused', [True, False])
@pytest.mark.parametrize('threads', [1, 2])
def test_every_layer_block_hands_its_means_on(threads, fused, channels_last,
                                              monkeypatch):
    """Layer skipping at 128 px with half the samples skipped, the input
    NCHW or channels_last: every block records its output's means for the
    next masker, whichever path wrote the output (on AVX-512 CPUs the
    fused spatial kernel, whose epilogue sums the kept rows as it writes
    them, policy.LAYER_FUSED_CPU; off it the per-sample
    GEMM kernel's epilogue on 32 x 32 and 16 x 16 maps and, with 2
    threads, the gathered oneDNN branch's one-pass add on 8 x 8 and 4 x 4
    maps; the skipped samples' ReLU pass in downsampling blocks; the
    input's record for samples an identity block skips). So every masker
    after the first reads no tensor, and dynamic inference still computes
    the masked-dense model's gates and output."""
    if ops.extension() is None:
        pytest.skip('the records come from the compiled kernels')
    from laud_mm.models.resnet import dynamic
    from laud_mm.ops import fast_spatial_branch, policy
    monkeypatch.setattr(policy, 'LAYER_FUSED_CPU', fused)
    sums_calls = []  # the fused kernel's calls: with sums?
    mean_rows = []  # the rows each relu_mean_rows_ pass read
    real_branch, real_rows = dynamic._spatial_branch, \
        dynamic._relu_mean_rows_

    def spy_branch(*args, sums=None, **kwargs):
        sums_calls.append(sums is not None)
        return real_branch(*args, sums=sums, **kwargs)

    def spy_rows(out, rows):
        mean_rows.append(rows.tolist())
        return real_rows(out, rows)
    monkeypatch.setattr(dynamic, '_spatial_branch', spy_branch)
    monkeypatch.setattr(dynamic, '_relu_mean_rows_', spy_rows)
    torch.manual_seed(0)
    net = LAUDResNet(50, paradigm='layer').eval()
    x = torch.randn(4, 3, 128, 128)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    used, ref_gates, ref, out = _half_gates_at(threads, net, x, monkeypatch)
    assert any(0 < float(b.masker.forced_gate.sum()) < 4
               for b in net.blocks if b.downsample is not None)
    assert used == [False] + [True] * (len(net.blocks) - 1)
    _check_same_function(net, ref_gates, ref, out)
    # on AVX-512 the fused kernel wrote the kept rows, its epilogue's sums
    # their records; off it the kernel is not called. The ReLU-and-means
    # passes read exactly the skipped rows of the downsampling blocks
    # (identity blocks write into their input), never kept rows
    on_kernel = fused and fast_spatial_branch(x, 16, 16)
    assert bool(sums_calls) == on_kernel
    assert all(sums_calls)
    skipped = [(b.masker.forced_gate < 0.5).nonzero()[:, 0].tolist()
               for b in net.blocks if b.downsample is not None]
    assert mean_rows == [r for r in skipped if r]


@pytest.mark.parametrize('threads', [1, 2])
@pytest.mark.parametrize('channels_last', [True, False])
def test_every_regnety_layer_block_hands_its_means_on(channels_last, threads,
                                                      monkeypatch):
    """LAUD-RegNetY-400MF's layer skipping on two real COCO images with
    about half the gates forced off, its dynamic path in channels_last (the
    CPU default) or NCHW: the stem and every block record their output's
    means (the kept rows' one-pass add, the skipped rows' ReLU pass of a
    downsampling block, the input's record where an identity block writes
    into its input), so no masker reads a tensor, and dynamic inference
    computes the masked-dense model's gates and output."""
    if ops.extension() is None:
        pytest.skip('the records come from the compiled kernels')
    from conftest import load_coco_images
    from laud_mm.models import LAUDRegNetY
    from laud_mm.ops import policy
    monkeypatch.setattr(policy, 'CHANNELS_LAST_CPU', channels_last)
    torch.manual_seed(0)
    net = LAUDRegNetY('regnety_400mf', paradigm='layer').eval()
    x = load_coco_images(n=2, size=(96, 128))
    used, ref_gates, ref, out = _half_gates_at(threads, net, x, monkeypatch)
    sums = [float(b.masker.forced_gate.sum()) for b in net.blocks]
    assert 1 in sums and (0 in sums or 2 in sums), sums
    assert used == [True] * len(net.blocks)
    _check_same_function(net, ref_gates, ref, out)
