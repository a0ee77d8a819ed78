"""Per-forward plans of a block sequence (laud_mm.models.layers.
forward_plan): inside a backbone forward every block runs the plan its
first block made, with exactly the output of the unplanned path; a call
the plan was not made for plans its own call; parameters are read once per
forward."""
import pytest
import torch

import laud_mm  # noqa: F401
from laud_mm.analysis.forced_gates import force_random_gates
from laud_mm.models import LAUDResNet
from laud_mm.models.layers import forward_plan as FP
from laud_mm.models.layers.dynamic import owned_block_inputs
from laud_mm.models.resnet import dynamic as D
from laud_mm.ops import policy

from conftest import load_coco_images

GRANULARITY = dict(spatial=(4, 4, 2, 1), channel=(2, 2, 2, 2), layer=None)


def _net(paradigm, depth=50):
    torch.manual_seed(0)
    return LAUDResNet(depth, paradigm=paradigm,
                      granularity=GRANULARITY[paradigm],
                      dynamic_inference=True).eval()


def _unplanned(monkeypatch):
    """Sequences plan nothing: every block plans its own call."""
    monkeypatch.setattr(policy, 'FORWARD_PLAN', False)


def _record_calls(monkeypatch, module, name):
    """Replace ``module.name`` by a wrapper that appends its first argument
    (the block) to the returned list, then calls the original."""
    made = []
    real = getattr(module, name)

    def spy(block, *args, **kwargs):
        made.append(block)
        return real(block, *args, **kwargs)
    monkeypatch.setattr(module, name, spy)
    return made


def _planned_forward(net, x, made):
    """``net(x)`` without gradients; returns its outputs, every block's
    gates, and ``len(made)`` when block 1 was about to run."""
    blocks = list(net.blocks)
    before_second = []
    hook = blocks[1].register_forward_pre_hook(
        lambda m, a: before_second.append(len(made)))
    with torch.no_grad():
        out = net(x)
        gates = [b.last_stats['gate'].clone() for b in blocks]
    hook.remove()
    return out, gates, before_second


@pytest.mark.parametrize('size', [(160, 224), (67, 101)])
@pytest.mark.parametrize('paradigm', ['spatial', 'channel', 'layer'])
def test_every_block_runs_the_plan_made_before_its_convolutions(
        paradigm, size, monkeypatch):
    """Two real COCO images, random gates at r = 0.5 (sparse and dense
    blocks): the first block's call plans all blocks (one plan each, none
    made later, so no block fell back to planning its own call), and the
    outputs and gates are bit-equal to the unplanned path's."""
    x = load_coco_images(n=2, size=size)
    net = _net(paradigm)
    force_random_gates(net, 0.5, 2, size, seed=0)
    made = _record_calls(monkeypatch, D, 'plan_bottleneck')
    blocks = list(net.blocks)
    out, gates, before_second = _planned_forward(net, x, made)
    assert made == blocks[::-1]  # one plan per block, last to first
    assert before_second == [len(blocks)]  # all before block 1 ran
    made.clear()
    _unplanned(monkeypatch)
    with torch.no_grad():
        ref = net(x)
    assert made == blocks  # now each block planned its own call
    for a, r in zip(out, ref):
        assert torch.equal(a, r)
    for b, g in zip(blocks, gates):
        assert torch.equal(b.last_stats['gate'], g)
    # and the function is the masked-dense model's
    net.dynamic_inference = False
    with torch.no_grad():
        dense = net(x)
    for a, r in zip(out, dense):
        assert (a - r).abs().max() <= 1e-4 * max(1., r.abs().max())


def test_calls_the_plan_was_not_made_for_run_unplanned():
    """Outside a sequence, before its first block ran, on another input
    shape, dtype or device, with gradients enabled, or a second time in a
    pass, a block has no plan."""
    net = _net('spatial')
    blocks = list(net.blocks)
    x = load_coco_images(n=1, size=(64, 96))
    with torch.no_grad():
        t = net.maxpool(net.relu(net.norm1(net.conv1(x))))
        assert FP.block_plan(blocks[0], t) is None  # no sequence
        with owned_block_inputs(blocks):
            t1 = blocks[0](t.clone())
            # block 1 with its own input: planned by block 0's call, once
            assert FP.block_plan(blocks[1], t1) is not None
            assert FP.block_plan(blocks[1], t1) is None
            for other in (t1[:, :, 1:], t1.double(), t1.to('meta'), t1):
                blocks[0](t.clone())  # a new pass: fresh plans
                if other is t1:
                    with torch.enable_grad():
                        assert FP.block_plan(blocks[1], t1) is None
                else:
                    assert FP.block_plan(blocks[1], other) is None
            # a pass whose first block runs statically plans the others
            # anew: no block takes a plan of an earlier pass
            blocks[0](t.clone())
            seq = blocks[1].__dict__[FP.SEQUENCE_ATTR][0]
            earlier = seq.plans[1]
            blocks[0].static_mode = True
            blocks[0](t.clone())
            blocks[0].static_mode = False
            assert seq.plans[0] is None  # a static block has no plan
            assert seq.plans[1] is not None and seq.plans[1] is not earlier
        with owned_block_inputs(blocks):  # a new pass, block 0 not called
            assert FP.block_plan(blocks[1], t1) is None
            out = blocks[1](t1.clone())
        ref = blocks[1](t1.clone())  # outside the context
    assert torch.equal(out, ref)


def test_parameters_are_read_once_per_forward():
    """A hook of block 0 that scales block 3's conv1 in place: the forward
    it runs in computes block 3 with the weights the plan folded (the
    old ones), the next forward with the new ones."""
    net = _net('spatial')
    x = load_coco_images(n=1, size=(64, 96))
    b3 = net.blocks[3]
    with torch.no_grad():
        old = net(x)[-1]

        def scale(m, a, out):
            b3.conv1.weight.mul_(1.25)
        hook = net.blocks[0].register_forward_hook(scale)
        during = net(x)[-1]
        hook.remove()
        after = net(x)[-1]
        net.dynamic_inference = False
        dense_new = net(x)[-1]
    assert torch.equal(during, old)
    assert not torch.allclose(after, old)
    assert (after - dense_new).abs().max() <= \
        1e-4 * max(1., dense_new.abs().max())


@pytest.mark.parametrize('paradigm', ['spatial', 'channel', 'layer'])
def test_regnety_blocks_run_the_plan_of_the_forward(paradigm, monkeypatch):
    """LAUD-RegNetY opts in too: in a backbone forward on real images every
    block's fold is validated by the first block's call (one plan per
    block, last to first, all before block 1 runs), and the outputs and
    gates are bit-equal to the unplanned path's."""
    from laud_mm.models import LAUDRegNetY
    from laud_mm.models.regnet import block as RB
    gran = dict(spatial=(4, 4, 2, 1), channel=(2, 2, 2, 2), layer=None)
    torch.manual_seed(0)
    net = LAUDRegNetY('regnety_400mf', paradigm=paradigm,
                      granularity=gran[paradigm],
                      dynamic_inference=True).eval()
    x = load_coco_images(n=2, size=(96, 128))
    force_random_gates(net, 0.5, 2, (96, 128), seed=0)
    # the blocks' method calls the function it imported
    made = _record_calls(monkeypatch, RB, 'sequence_plan')
    used = []
    real_block_plan = RB.block_plan

    def plan_spy(block, x):
        plan = real_block_plan(block, x)
        used.append(plan is not None)
        return plan
    monkeypatch.setattr(RB, 'block_plan', plan_spy)
    blocks = list(net.blocks)
    out, gates, before_second = _planned_forward(net, x, made)
    assert made == blocks[::-1]
    assert before_second == [len(blocks)]
    assert used == [True] * len(blocks)  # every block ran its plan
    made.clear()
    used.clear()
    _unplanned(monkeypatch)
    with torch.no_grad():
        ref = net(x)
    assert made == [] and used == [False] * len(blocks)
    for a, r in zip(out, ref):
        assert torch.equal(a, r)
    for b, g in zip(blocks, gates):
        assert torch.equal(b.last_stats['gate'], g)
