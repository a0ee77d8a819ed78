"""The channel masker's per-group gradient scale: the forward pass is
unchanged, fc2's parameters receive n_groups times their plain gradient,
fc1 and the input the plain one (laud_mm/models/layers/maskers.py)."""
import pytest
import torch

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


@pytest.mark.parametrize('paradigm', ['channel', 'layer'])
def test_inference_gate_one_call_equals_module_operators(paradigm):
    """At inference a layer / channel masker decides in one compiled call
    (ops.masker_gate) where the kernel takes its tensors: on the inputs of
    every block of LAUD-R50 for two real COCO images, its gate equals the
    one the module's own operators give (the PyTorch backend), with and
    without autograd; a forced gate is still returned exactly."""
    from conftest import load_coco_images
    from laud_mm import ops
    from laud_mm.models import LAUDResNet
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
    kept = []
    for blk, x in zip(net.blocks, inputs):
        m = blk.masker
        with torch.no_grad():
            fast = m(x)
            with ops.use_backend('pytorch'):
                ref = m(x)
        assert torch.equal(fast, ref), (blk.stage, blk.index)
        assert torch.equal(m(x), ref)  # autograd on: the module's operators
        kept.append(float(fast.mean()))
        m.forced_gate = torch.ones_like(ref)
        with torch.no_grad():
            assert torch.equal(m(x), torch.ones_like(ref))
        m.forced_gate = None
    assert 0 < sum(kept) / len(kept) < 1  # gates on and off were compared
    if ops.extension() is not None:
        m = net.blocks[0].masker
        params = [p for p in m.parameters()]
        with torch.no_grad():
            assert ops.fast_masker_gate(inputs[0].mean((2, 3)), *params)
