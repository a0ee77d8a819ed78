"""Two-logit Gumbel gates (paper eq. 1)."""
import pytest
import torch

from laud_mm.models.layers.gates import gumbel_gate, init_keep_bias


def test_eval_gate_is_the_argmax():
    logits = torch.tensor([[1., 0.], [0., 1.], [2., 2.], [-1., -3.]])
    assert gumbel_gate(logits, 1.0, training=False).tolist() == [1, 0, 1, 1]


def test_training_gate_is_hard_finite_and_follows_the_keep_probability():
    torch.manual_seed(0)
    logits = torch.tensor([[1.0, 0.0]]).expand(20000, 2).clone().requires_grad_()
    g = gumbel_gate(logits, tau=1.0, training=True)
    assert torch.isfinite(g).all() and set(g.unique().tolist()) <= {0.0, 1.0}
    # P(keep) of a hard Gumbel-softmax = softmax(logits)[keep]
    assert g.mean().item() == pytest.approx(torch.sigmoid(torch.tensor(1.)).item(),
                                            abs=0.015)
    g.sum().backward()  # straight-through: the soft probability's gradient
    assert torch.isfinite(logits.grad).all() and logits.grad[:, 0].abs().sum() > 0
    assert torch.allclose(logits.grad[:, 0], -logits.grad[:, 1], atol=1e-6)


def test_low_temperature_is_nearly_deterministic():
    torch.manual_seed(0)
    logits = torch.tensor([[0.5, 0.0]]).expand(5000, 2)
    hard = gumbel_gate(logits, tau=0.1, training=True)
    assert torch.isfinite(hard).all()
    # tau does not change P(keep) of the hard sample, only the gradient scale
    assert hard.mean().item() == pytest.approx(torch.sigmoid(torch.tensor(.5)).item(),
                                               abs=0.03)


def test_errors():
    with pytest.raises(ValueError, match='last dimension'):
        gumbel_gate(torch.zeros(3, 3), 1.0, True)
    with pytest.raises(ValueError, match='tau'):
        gumbel_gate(torch.zeros(3, 2), 0.0, True)
    with pytest.raises(ValueError, match='bias'):
        init_keep_bias(torch.nn.Linear(3, 2, bias=False), 5., 0.)


def test_keep_bias_layout():
    fc = torch.nn.Linear(8, 6)
    init_keep_bias(fc, keep=2., skip=-2.)
    assert fc.bias.tolist() == [2., -2.] * 3


@pytest.mark.parametrize('scale', [0.5, 0.2])
def test_noise_scale_sets_the_keep_probability(scale):
    # P(keep) of the hard sample = sigmoid(d / noise_scale)
    torch.manual_seed(0)
    logits = torch.tensor([[0.3, 0.0]]).expand(40000, 2)
    g = gumbel_gate(logits, tau=0.1, training=True, noise_scale=scale)
    p = torch.sigmoid(torch.tensor(0.3 / scale)).item()
    assert g.mean().item() == pytest.approx(p, abs=0.01)
    # the paper's scale 1 gives sigmoid(d), visibly another rate
    assert abs(p - torch.sigmoid(torch.tensor(0.3)).item()) > 0.05


def test_zero_noise_trains_the_inference_gate():
    logits = torch.randn(500, 2).requires_grad_()
    g = gumbel_gate(logits, tau=0.5, training=True, noise_scale=0.0)
    assert torch.equal(g.detach(), gumbel_gate(logits.detach(), 0.5, False))
    g.sum().backward()  # straight-through gradient of sigmoid(d / tau)
    d = (logits[:, 0] - logits[:, 1]).detach()
    s = torch.sigmoid(d / 0.5)
    assert torch.allclose(logits.grad[:, 0], s * (1 - s) / 0.5, atol=1e-5)


@pytest.mark.parametrize('bad', [-0.1, float('nan'), float('inf')])
def test_bad_noise_scale(bad):
    with pytest.raises(ValueError, match='noise_scale'):
        gumbel_gate(torch.zeros(3, 2), 1.0, True, noise_scale=bad)
