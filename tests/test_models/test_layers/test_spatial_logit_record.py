"""The spatial masker logits a dense block's epilogue hands to the next
spatial block (laud_mm.models.layers.spatial_logit_record): used only for
the masker they were computed for and while the tensor is unchanged, and
giving that masker the decisions it makes from the tensor itself, in both
families with a spatial path (LAUD-ResNet, LAUD-RegNetY)."""
import pytest
import torch

import laud_mm  # noqa: F401
from laud_mm import ops
from laud_mm.ops import policy
from laud_mm.models import LAUDRegNetY, LAUDResNet
from laud_mm.models.layers import spatial_logit_record as sr
from laud_mm.models.regnet import dynamic as RD
from laud_mm.models.resnet import dynamic as D

from conftest import load_coco_images

#: family -> its dynamic module, the attribute its fold is cached in
FAMILIES = {'resnet': (D, D.FOLD_ATTR),
            'regnety': (RD, '_laud_folded_regnety')}


def test_record_is_used_only_for_its_masker_until_the_tensor_changes():
    x = torch.rand(2, 3, 8, 8)
    w, grid = torch.randn(3), (2, 2)
    logit = ops.spatial_logit_pool(x, w, 0.5, grid)
    sr.record_spatial_logit(x, w, 0.5, grid, logit)
    assert sr.recorded_spatial_logit(x, w, 0.5, grid) is logit
    # another masker's weights (an equal copy too), bias or grid: not used
    assert sr.recorded_spatial_logit(x, w.clone(), 0.5, grid) is None
    assert sr.recorded_spatial_logit(x, w, 0.4, grid) is None
    assert sr.recorded_spatial_logit(x, w, 0.5, (4, 4)) is None
    x.mul_(2)  # an in-place write invalidates the record
    assert sr.recorded_spatial_logit(x, w, 0.5, grid) is None


def test_no_record_on_inference_tensors_or_with_gradients():
    w = torch.randn(3)
    with torch.inference_mode():
        x = torch.rand(2, 3, 4, 4)
        sr.record_spatial_logit(x, w, 0., (2, 2), torch.zeros(2, 2, 2))
        assert sr.recorded_spatial_logit(x, w, 0., (2, 2)) is None
    x = torch.rand(2, 3, 4, 4, requires_grad=True)
    with torch.no_grad():
        sr.record_spatial_logit(x, w, 0., (2, 2), torch.zeros(2, 2, 2))
        assert sr.recorded_spatial_logit(x, w, 0., (2, 2)) is not None
    assert sr.recorded_spatial_logit(x, w, 0., (2, 2)) is None


def _net(gates, family='resnet'):
    """LAUD-R50 or LAUD-RegNetY-400MF spatial (S = 4, 4, 2, 1), eval.
    'on': every patch forced on (every block computes densely); 'learned':
    the maskers' own decisions, their keep bias lowered and weights
    widened so that some blocks switch patches off and others keep all."""
    torch.manual_seed(0)
    if family == 'resnet':
        net = LAUDResNet(50, paradigm='spatial', granularity=(4, 4, 2, 1))
    else:
        net = LAUDRegNetY('regnety_400mf', paradigm='spatial',
                          granularity=(4, 4, 2, 1))
    net.eval()
    with torch.no_grad():
        for j, b in enumerate(net.blocks):
            if gates == 'on':
                b.masker.forced_gate = 1
            elif j % 3 == 1:
                b.masker.conv.weight.normal_(0, 0.05)
                b.masker.conv.bias[0] = 0.
    return net


def _dense_from(family, x):
    """The fraction of active patches from which a spatial block of
    ``family`` runs its dense epilogue on input like x."""
    if family == 'regnety':
        # channels_last: conv3 on the active pixels below the threshold
        return policy.REGNETY_SPATIAL_NHWC_CONV3_THRESHOLD \
            if x.is_contiguous(memory_format=torch.channels_last) else \
            policy.REGNETY_SPATIAL_DENSE_THRESHOLD
    # the fused kernel's with AVX-512 and parallel kernels, else the
    # gather path's
    fused = policy.SPATIAL_FUSED_CPU and policy.fused_cpu_threads() and \
        ops.fast_spatial_branch(x, 64, 256)
    return policy.SPATIAL_FUSED_DENSE_THRESHOLD if fused else \
        policy.SPATIAL_DENSE_THRESHOLD


@pytest.mark.parametrize('family,fmt', [
    ('resnet', 'nchw'), ('regnety', 'nchw'), ('regnety', 'channels_last')])
@pytest.mark.parametrize('threads', [1, 2])
@pytest.mark.parametrize('gates', ['on', 'learned'])
def test_dense_blocks_hand_the_next_masker_its_logits(gates, threads,
                                                      family, fmt,
                                                      monkeypatch):
    """Two real COCO images at 160 x 224 px: a block that computes densely
    records the next block's masker logits in its epilogue; the next block
    uses them (they equal the logits of its input, bit for bit with the
    compiled kernels) instead of reading its input; and dynamic inference
    still computes the masked-dense model's gates and output."""
    x = load_coco_images(n=2, size=(160, 224))
    if fmt == 'channels_last':
        x = x.contiguous(memory_format=torch.channels_last)
    net = _net(gates, family)
    mod = FAMILIES[family][0]
    used = {}
    real_gate = mod.spatial_gate

    def spy_gate(fb, masker, t, shape):
        rec = sr.recorded_spatial_logit(t, fb.logit_w, fb.logit_b,
                                        shape[1:])
        if rec is not None:
            with ops.use_backend('cpp' if ops.extension() else 'pytorch'):
                want = ops.spatial_logit_pool(t, fb.logit_w, fb.logit_b,
                                              shape[1:])
            assert torch.equal(rec, want)
        used[id(masker)] = rec is not None
        return real_gate(fb, masker, t, shape)
    monkeypatch.setattr(mod, 'spatial_gate', spy_gate)
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            net.dynamic_inference = False
            ref = net(x)
            ref_gates = [b.last_stats['gate'].clone() for b in net.blocks]
            net.dynamic_inference = True
            out = net(x)
    finally:
        torch.set_num_threads(prev)
    for b, g in zip(net.blocks, ref_gates):
        assert torch.equal(b.last_stats['gate'], g)
    for a, r in zip(out, ref):
        assert (a - r).abs().max() <= 1e-4 * max(1., r.abs().max())
    got = [used.get(id(b.masker), False) for b in net.blocks]
    if family == 'regnety':  # (a ResNet block off the fused kernel may
        # fold its masker into conv1 instead)
        assert len(used) == len(net.blocks)
    thr = _dense_from(family, x)
    dense = [float(g.mean()) >= thr for g in ref_gates]
    with_kernel = ops.extension() is not None
    # a record exactly where the block before computed densely (the
    # compiled one-pass epilogue; none without it)
    assert got == [False] + [d and with_kernel for d in dense[:-1]], \
        (got, dense)
    if gates == 'on':
        assert all(dense)
    else:
        assert 0 < sum(dense) < len(dense), dense


@pytest.mark.parametrize('family', list(FAMILIES))
def test_record_is_used_once_and_not_under_inference_mode(family):
    """The next block clears the record it used (it may then write into
    the tensor through a kernel that torch does not see), and under
    torch.inference_mode, whose tensors take no record, a dense block does
    not compute its successor's logits at all."""
    if ops.extension() is None:
        pytest.skip('the hand-off needs the compiled epilogue')
    net = _net('on', family)
    x = load_coco_images(n=1, size=(64, 96))
    seen = []
    real = sr._add_relu_logit_pool_

    def spy(*a):
        seen.append(1)
        return real(*a)
    outs = []
    for mode in (torch.no_grad, torch.inference_mode):
        seen.clear()
        with mode():
            net.dynamic_inference = True
            sr._add_relu_logit_pool_ = spy
            try:
                outs.append(net(x))
            finally:
                sr._add_relu_logit_pool_ = real
        assert len(seen) == (len(net.blocks) - 1 if mode is torch.no_grad
                             else 0)
    for a, b in zip(*outs):
        assert torch.equal(a, b)
    # the stage outputs carry no record a later call could take
    # (each is the input of the next stage's first block, which cleared
    # the record it used; the last block hands nothing on)
    for t in outs[0]:
        assert getattr(t, sr._ATTR, None) is None


@pytest.mark.parametrize('family', list(FAMILIES))
@pytest.mark.parametrize('planned', [True, False])
def test_successor_changed_between_forwards_hands_off_its_new_logits(
        planned, family, monkeypatch):
    """A dense block computes its successor's logits with the successor's
    fold, validated when the forward is planned (or, unplanned, at the
    epilogue). After the successor's masker changes in place, the next
    forward refolds it: the hand-off carries the new logit weights, the
    successor takes it, and the output is the masked-dense model's with
    the changed masker."""
    if ops.extension() is None:
        pytest.skip('the hand-off needs the compiled epilogue')
    monkeypatch.setattr(policy, 'FORWARD_PLAN', planned)
    net = _net('on', family)
    mod, fold_attr = FAMILIES[family]
    x = load_coco_images(n=1, size=(64, 96))
    used = []
    real_gate = mod.spatial_gate

    def spy_gate(fb, masker, t, shape):
        if masker is net.blocks[2].masker:
            used.append(sr.recorded_spatial_logit(
                t, fb.logit_w, fb.logit_b, shape[1:]) is not None)
        return real_gate(fb, masker, t, shape)
    monkeypatch.setattr(mod, 'spatial_gate', spy_gate)
    with torch.no_grad():
        net.dynamic_inference = True
        net(x)  # every fold cached
        old = net.blocks[2].__dict__[fold_attr][1]
        net.blocks[2].masker.conv.weight.mul_(1.5)  # in place: refold due
        used.clear()
        out = net(x)
        assert used == [True]  # the new logits were handed on and taken
        new = net.blocks[2].__dict__[fold_attr][1]
        assert new is not old
        assert torch.allclose(new.logit_w, 1.5 * old.logit_w)
        net.dynamic_inference = False
        ref = net(x)
    for a, r in zip(out, ref):
        assert (a - r).abs().max() <= 1e-4 * max(1., r.abs().max())


@pytest.mark.parametrize('autocast', [False, True])
def test_regnety_masked_dense_blocks_hand_off_and_never_under_autocast(
        autocast, monkeypatch):
    """LAUD-RegNetY fed channels_last with three of every four patches on
    in every block: each block computes conv3 densely and masks it (above
    REGNETY_SPATIAL_NHWC_CONV3_THRESHOLD), and hands the next block its
    logits, bit-equal to the logits of its masked output; the output is
    the masked-dense model's. Under bfloat16 autocast nothing is handed
    on (the one-pass kernel is float32; the blocks compute their own
    logits) and the output is still the masked-dense model's, to bfloat16
    rounding."""
    if ops.extension() is None:
        pytest.skip('the hand-off needs the compiled epilogue')
    assert policy.REGNETY_SPATIAL_NHWC_CONV3_THRESHOLD <= 0.75
    x = load_coco_images(n=2, size=(128, 160)).contiguous(
        memory_format=torch.channels_last)
    net = _net('learned', 'regnety')
    with torch.no_grad():
        net(x)
    for b in net.blocks:
        g = torch.ones_like(b.last_stats['gate'])
        g.view(-1)[::4] = 0
        b.masker.forced_gate = g
    used, handed = [], []
    real_gate, real_pool = RD.spatial_gate, sr._add_relu_logit_pool_

    def spy_gate(fb, masker, t, shape):
        rec = sr.recorded_spatial_logit(t, fb.logit_w, fb.logit_b,
                                        shape[1:])
        if rec is not None:
            assert torch.equal(rec, ops.spatial_logit_pool(
                t, fb.logit_w, fb.logit_b, shape[1:]))
        used.append(rec is not None)
        return real_gate(fb, masker, t, shape)

    def spy_pool(*a):
        handed.append(1)
        return real_pool(*a)
    monkeypatch.setattr(RD, 'spatial_gate', spy_gate)
    monkeypatch.setattr(sr, '_add_relu_logit_pool_', spy_pool)
    with torch.no_grad(), torch.autocast('cpu', torch.bfloat16,
                                         enabled=autocast):
        net.dynamic_inference = False
        ref = net(x)
        net.dynamic_inference = True
        out = net(x)
    n = len(net.blocks)
    assert used == [False] + [not autocast] * (n - 1)
    assert len(handed) == (0 if autocast else n - 1)
    tol = 5e-2 if autocast else 1e-4
    for a, r in zip(out, ref):
        assert (a.float() - r.float()).abs().max() <= tol * max(
            1., r.float().abs().max())
