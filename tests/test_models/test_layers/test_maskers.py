"""The maskers (laud_mm/models/layers/maskers.py): the channel masker's
per-group gradient scale (the forward pass unchanged, fc2's parameters
receiving n_groups times their plain gradient, fc1 and the input the plain
one), forced gates, and the inference gate in one compiled call
(ops.masker_gate) against the modules' own operators."""
import pytest
import torch
import torch.nn.functional as F

from laud_mm.models.layers.maskers import ChannelMasker, scale_grad


def _grads(masker, x):
    masker.zero_grad()
    x = x.clone().requires_grad_(True)
    logits = masker.logits(x)
    (logits * torch.linspace(-1, 1, logits.numel()).view_as(logits)).sum() \
        .backward()
    return logits.detach(), {n: p.grad.clone()
                             for n, p in masker.named_parameters()}, x.grad


def test_channel_masker_scales_fc2_gradient_by_the_group_count():
    torch.manual_seed(0)
    scaled = ChannelMasker(24, 32)
    plain = ChannelMasker(24, 32, group_grad_scale=False)
    plain.load_state_dict(scaled.state_dict())
    x = torch.randn(3, 24, 5, 4)
    ls, gs, xs = _grads(scaled.train(), x)
    lp, gp, xp = _grads(plain.train(), x)
    assert torch.equal(ls, lp)
    for n in ('fc2.weight', 'fc2.bias'):
        assert torch.allclose(gs[n], 32 * gp[n], rtol=1e-5, atol=1e-7)
    for n in ('fc1.weight', 'fc1.bias'):
        assert torch.allclose(gs[n], gp[n], rtol=1e-5, atol=1e-7)
    assert torch.allclose(xs, xp, rtol=1e-5, atol=1e-7)
    # eval: plain Linear layers, the same logits
    assert torch.equal(scaled.eval().logits(x), plain.eval().logits(x))


def test_scale_grad_value_and_gradient():
    p = torch.tensor([1.5, -2.], requires_grad=True)
    y = scale_grad(p, 4.)
    assert torch.equal(y.detach(), p.detach())
    (y * torch.tensor([1., 3.])).sum().backward()
    assert torch.equal(p.grad, torch.tensor([4., 12.]))
    assert scale_grad(p, 1) is p


def test_forced_gate_is_the_gate_with_or_without_a_graph():
    """A forced gate is exactly the imposed gate: without autograd it is
    the gate alone (a copy, not the caller's tensor), with a graph it stays
    connected to the masker (zero gradient, for DDP) and stays exact even
    where a logit overflows to inf or is NaN."""
    m = ChannelMasker(16, 4).eval()
    f = torch.tensor([[1., 0., 1., 1.], [0., 0., 1., 0.]])
    m.forced_gate = f
    logits = torch.randn(2, 4, 2)
    logits[0, 1, 0] = float('inf')
    logits[1, 2, 1] = float('nan')
    with torch.no_grad():
        g = m._gate(logits)
    assert torch.equal(g, f) and g is not f
    lg = logits.clone().requires_grad_()
    g = m._gate(lg)
    assert torch.equal(g, f) and g.requires_grad
    g.sum().backward()
    assert torch.equal(lg.grad, torch.zeros_like(lg))
    m.forced_gate = 1
    g = m._gate(lg)
    assert torch.equal(g, torch.ones(2, 4)) and g.requires_grad
    with torch.no_grad():
        assert torch.equal(m._gate(logits), torch.ones(2, 4))


def _count_kernel_calls(monkeypatch):
    """Patch the compiled masker_gate to count its calls (the extension as
    ops.masker_gate's module sees it); returns the counter list."""
    import sys
    import types
    from laud_mm import ops
    mod = sys.modules['laud_mm.ops.masker_gate']
    ext = ops.extension()
    calls = []

    def counted(*args):
        calls.append(1)
        return ext.masker_gate(*args)
    monkeypatch.setattr(mod, 'extension', lambda: types.SimpleNamespace(
        masker_gate=counted))
    return calls


@pytest.mark.skipif(__import__('laud_mm').ops.extension() is None,
                    reason='laud_mm._ext not built')
@pytest.mark.parametrize('paradigm', ['channel', 'layer'])
def test_inference_gate_one_call_equals_module_operators(paradigm,
                                                         monkeypatch):
    """At inference a layer / channel masker decides in one compiled call
    (ops.masker_gate) where the kernel takes its tensors: on the inputs of
    every block of LAUD-R50 for two real COCO images, the call runs once
    per block and its gate equals the module's own operators' (its
    ``logits`` and the eval decision of ``gumbel_gate``); with autograd on
    the module runs its operators (no call); a forced gate is still
    returned exactly (the logits computed)."""
    from conftest import load_coco_images
    from laud_mm.models import LAUDResNet
    from laud_mm.models.layers.gates import gumbel_gate
    torch.manual_seed(0)
    net = LAUDResNet(50, paradigm=paradigm,
                     granularity=(2, 2, 2, 2) if paradigm == 'channel'
                     else None)
    net.eval()
    for blk in net.blocks:  # spread the logits around the decision
        fc = blk.masker.fc2 if paradigm == 'channel' else blk.masker.fc
        torch.nn.init.normal_(fc.weight, 0., 1.)
        torch.nn.init.zeros_(fc.bias)
    inputs = []
    hooks = [b.register_forward_pre_hook(lambda m, a: inputs.append(a[0]))
             for b in net.blocks]
    with torch.no_grad():
        net(load_coco_images(n=2, size=(128, 160)))
    for h in hooks:
        h.remove()
    assert len(inputs) == 16
    calls = _count_kernel_calls(monkeypatch)
    kept = []
    for i, (blk, x) in enumerate(zip(net.blocks, inputs)):
        m = blk.masker
        with torch.no_grad():
            fast = m(x)
            assert len(calls) == i + 1
            ref = gumbel_gate(m.logits(x), m.tau, False)
        assert torch.equal(fast, ref), (blk.stage, blk.index)
        assert torch.equal(m(x), ref)  # autograd on: the module's operators
        assert len(calls) == i + 1
        kept.append(float(fast.mean()))
        # forced gates (a tensor, a number) written into the call's gate;
        # the stored gate is not handed out; a wrong shape is refused
        forced = 1. - ref
        m.forced_gate = forced
        with torch.no_grad():
            g = m(x)
            assert torch.equal(g, forced) and g is not m.forced_gate
            g.fill_(0.5)
            assert torch.equal(m(x), forced)
            m.forced_gate = 0
            assert torch.equal(m(x), torch.zeros_like(ref))
            m.forced_gate = torch.ones(ref.shape[0] + 1, *ref.shape[1:])
            with pytest.raises(ValueError, match='forced_gate has shape'):
                m(x)
        assert len(calls) == i + 5
        m.forced_gate = None
        del calls[i + 1:]
    assert 0 < sum(kept) / len(kept) < 1  # gates on and off were compared


@pytest.mark.skipif(__import__('laud_mm').ops.extension() is None,
                    reason='laud_mm._ext not built')
def test_inference_gate_keeps_module_operators_where_they_matter(
        imagenette, monkeypatch):
    """The compiled call also serves the transformer maskers (head and
    layer skipping: the mean of the tokens as input), with gates equal to
    their operators', on tokens of real ImageNet images (8 x 8 patches);
    a forward hook on a linear layer (pruning, weight norm, counters), a
    subclass that overrides ``logits`` or a channel / layer masker whose
    layer has no bias keeps the module's operators."""
    import glob
    import os.path as osp

    import numpy as np
    from PIL import Image

    from laud_mm.models.layers.gates import gumbel_gate
    from laud_mm.models.layers.maskers import (HeadMasker, LayerMasker,
                                               TokenLayerMasker)
    files = sorted(glob.glob(osp.join(imagenette, '**', '*.JPEG'),
                             recursive=True))[:2]
    imgs = [torch.from_numpy(np.asarray(Image.open(f).convert('RGB')
                                        .resize((64, 64)), np.float32))
            for f in files]
    x = torch.stack(imgs).permute(0, 3, 1, 2) / 255.
    tokens = F.unfold(x, 8, stride=8).transpose(1, 2)  # (2, 64, 192)
    torch.manual_seed(0)
    calls = _count_kernel_calls(monkeypatch)
    for m in (HeadMasker(192, 6), TokenLayerMasker(192)):
        m.eval()
        last = m.fc2 if isinstance(m, HeadMasker) else m.fc
        torch.nn.init.normal_(last.weight, 0., 1.)
        torch.nn.init.zeros_(last.bias)
        with torch.no_grad():
            fast = m(tokens)
            ref = gumbel_gate(m.logits(tokens), m.tau, False)
        assert calls.pop() == 1 and torch.equal(fast, ref)

    class Counted(LayerMasker):
        def logits(self, x):
            return super().logits(x) + 1.

    feats = F.avg_pool2d(x, 4).repeat(1, 8, 1, 1)  # (2, 24, 16, 16)
    for m in (LayerMasker(24), Counted(24)):
        m.eval()
        seen = []
        if type(m) is LayerMasker:
            m.fc.register_forward_hook(lambda mod, a, out: seen.append(1))
        with torch.no_grad():
            m(feats)
        assert not calls and (seen == [1] or type(m) is Counted)
    nobias = LayerMasker(24).eval()
    nobias.fc.bias = None
    with torch.no_grad():
        assert nobias(feats).shape == (2,) and not calls

    # a parametrized weight (computed on access, not in the layer's
    # parameter table): the module's operators, with the parametrized
    # weight
    class Negate(torch.nn.Module):
        def forward(self, w):
            return -w

    from torch.nn.utils import parametrize
    par = LayerMasker(24).eval()
    torch.nn.init.normal_(par.fc.weight, 0., 1.)
    torch.nn.init.zeros_(par.fc.bias)
    with torch.no_grad():
        plain = par(feats)
    assert calls.pop() == 1
    parametrize.register_parametrization(par.fc, 'weight', Negate())
    with torch.no_grad():
        flipped = par(feats)
        ref = gumbel_gate(par.logits(feats), par.tau, False)
    assert not calls and torch.equal(flipped, ref)
    assert not torch.equal(flipped, plain)


def test_write_forced_gate_in_place():
    """``write_forced_gate`` overwrites the gate-shaped tensor with a
    forced tensor (converted to its dtype) or number and reports True; a
    forced tensor of another shape leaves it untouched and reports False
    (the masker's ``_gate`` then raises)."""
    from laud_mm.models.layers.maskers import write_forced_gate
    gate = torch.full((2, 3), 0.25)
    forced = torch.tensor([[1, 0, 1], [0, 0, 1]], dtype=torch.float64)
    assert write_forced_gate(gate, forced)
    assert gate.dtype == torch.float32 and torch.equal(gate, forced.float())
    assert write_forced_gate(gate, 0.) and torch.equal(gate,
                                                       torch.zeros(2, 3))
    assert not write_forced_gate(gate, torch.ones(3, 2))
    assert torch.equal(gate, torch.zeros(2, 3))


@pytest.mark.skipif(__import__('laud_mm').ops.extension() is None,
                    reason='laud_mm._ext not built')
@pytest.mark.parametrize('kind', ['layer', 'channel'])
def test_planned_masker_is_the_masker_call(kind, monkeypatch):
    """``planned_masker`` (a planned forward's masker call, its checks made
    once) returns the gate the masker's own call returns, with one compiled
    call, on features of real COCO images in NCHW and channels_last, with
    learned, number-forced and tensor-forced gates (one kernel call each);
    a forced gate of the wrong shape is refused as by the masker; a
    subclass that overrides nothing is planned. Where the masker must run
    as a module it hands back the masker itself: a subclass overriding
    ``forward``, ``logits`` or ``masker_input``, an instance attribute or
    a class patch replacing one (the module's eval call then runs it), a
    linear layer replaced by a module without parameter tables, a forward
    hook (the masker's own, or torch's global one), training mode,
    autocast, a float64 input."""
    from conftest import load_coco_images
    from laud_mm.models.layers.maskers import LayerMasker, planned_masker
    x = load_coco_images(n=2, size=(64, 96))
    feats = F.avg_pool2d(x, 4).repeat(1, 8, 1, 1)  # (2, 24, 16, 24)
    cls = LayerMasker if kind == 'layer' else \
        (lambda c: ChannelMasker(c, 6))
    torch.manual_seed(0)
    m = cls(24).eval()
    last = m.fc if kind == 'layer' else m.fc2
    torch.nn.init.normal_(last.weight, 0., 1.)
    torch.nn.init.zeros_(last.bias)
    with torch.no_grad():  # the keep - skip logits centred: gates differ
        d = m.logits(feats)[..., 0] - m.logits(feats)[..., 1]
        last.bias.view(-1, 2)[:, 0] -= d.mean(0).view(-1)
    calls = _count_kernel_calls(monkeypatch)
    with torch.no_grad():
        fn = planned_masker(m, feats)
        assert fn is not m
        kept = []
        for t in (feats, feats.contiguous(memory_format=torch.channels_last),
                  feats.flip(0)):
            ref = m(t)
            del calls[:]
            got = fn(t)
            assert len(calls) == 1 and torch.equal(got, ref)
            kept.append(float(ref.mean()))
            for forced in (0, 1, 1. - ref):  # the kernel still runs
                m.forced_gate = forced
                del calls[:]
                got = fn(t)
                assert len(calls) == 1 and torch.equal(got, m(t))
            m.forced_gate = torch.ones(3, *ref.shape[1:])
            with pytest.raises(ValueError, match='forced_gate has shape'):
                fn(t)
            m.forced_gate = None
        assert 0 < sum(kept) / len(kept) < 1  # gates on and off compared

        class Shifted(type(m)):
            def masker_input(self, t):
                return super().masker_input(t) + 1.

        class Flipped(type(m)):
            def logits(self, t):
                return super().logits(t).flip(-1)

        class Called(type(m)):
            def forward(self, t, out_hw=None):
                return super().forward(t, out_hw)
        class Plain(type(m)):
            pass
        for sub in (Shifted, Flipped, Called, Plain):
            s = sub.__new__(sub)
            s.__dict__.update(m.__dict__)
            assert (planned_masker(s, feats) is s) == (sub is not Plain)
        # an instance attribute or a patch of the class replaces a method,
        # and the module's eval call runs it
        ref = m(feats)
        m.logits = lambda t: type(m).logits(m, t).flip(-1)
        assert planned_masker(m, feats) is m
        assert torch.equal(m(feats), 1. - ref)
        del m.logits
        m.masker_input = lambda t: type(m).masker_input(m, t) + 1.
        assert planned_masker(m, feats) is m
        del m.masker_input
        m.forward = lambda t, out_hw=None: type(m).forward(m, t, out_hw)
        assert planned_masker(m, feats) is m
        del m.forward
        with monkeypatch.context() as mp:
            mp.setattr(type(m), 'masker_input',
                       lambda self, t: t.mean(dim=(2, 3)))
            assert planned_masker(m, feats) is m
        assert planned_masker(m, feats) is not m
        # a linear layer replaced by a module without weight / bias tables
        orig = m.fc if kind == 'layer' else m.fc2
        wrapped = torch.nn.Sequential(orig)
        if kind == 'layer':
            m.fc = wrapped
        else:
            m.fc2 = wrapped
        assert planned_masker(m, feats) is m
        if kind == 'layer':
            m.fc = orig
        else:
            m.fc2 = orig
        handle = m.register_forward_hook(lambda *a: None)
        assert planned_masker(m, feats) is m
        handle.remove()
        handle = torch.nn.modules.module.register_module_forward_pre_hook(
            lambda *a: None)
        try:
            assert planned_masker(m, feats) is m
        finally:
            handle.remove()
        assert planned_masker(m.train(), feats) is m
        m.eval()
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert planned_masker(m, feats) is m
        assert planned_masker(m, feats.double()) is m
        assert planned_masker(m, feats) is not m


@pytest.mark.skipif(__import__('laud_mm').ops.extension() is None,
                    reason='laud_mm._ext not built')
@pytest.mark.parametrize('family', ['regnety', 'resnet'])
@pytest.mark.parametrize('paradigm', ['layer', 'channel'])
def test_block_plans_hold_the_planned_masker(family, paradigm):
    """A LAUD-RegNetY / LAUD-ResNet layer or channel block's plan holds the
    planned masker call (not the module; RegNetY's path binds it, ResNet's
    paths call ``plan.masker``), which returns the module's gate on the
    block's real input; with a forward hook on the masker the plan holds
    the module, so the hook runs."""
    from conftest import load_coco_images
    from laud_mm.models import LAUDRegNetY, LAUDResNet
    from laud_mm.models.regnet import dynamic as regnet_dyn
    from laud_mm.models.resnet import dynamic as resnet_dyn
    torch.manual_seed(0)
    gran = (2, 2, 2, 2) if paradigm == 'channel' else None
    net = LAUDRegNetY('regnety_400mf', paradigm, gran) \
        if family == 'regnety' else LAUDResNet(50, paradigm=paradigm,
                                               granularity=gran)
    net.eval()
    inputs = []
    hooks = [b.register_forward_pre_hook(lambda mod, a: inputs.append(a[0]))
             for b in net.blocks[:3]]
    x = load_coco_images(n=2, size=(64, 96))
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    assert len(inputs) == 3
    for blk, t in zip(net.blocks[:3], inputs):
        blk.dynamic_inference = True
        with torch.no_grad():
            if family == 'regnety':
                plan = regnet_dyn.sequence_plan(blk, t.shape, t)
                assert plan.path.keywords['masker'] is plan.masker
            else:
                plan = resnet_dyn.plan_bottleneck(
                    blk, t.shape, t, blk.geometry(t.shape[2:]), None)
            assert plan.masker is not blk.masker
            assert torch.equal(plan.masker(t), blk.masker(t))
            handle = blk.masker.register_forward_hook(lambda *a: None)
            again = regnet_dyn.sequence_plan(blk, t.shape, t) \
                if family == 'regnety' else resnet_dyn.plan_bottleneck(
                    blk, t.shape, t, blk.geometry(t.shape[2:]), None)
            handle.remove()
            assert again.masker is blk.masker
