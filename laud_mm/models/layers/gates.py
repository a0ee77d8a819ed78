"""Two-logit gates: hard Gumbel-softmax (straight-through) in training,
deterministic argmax at inference.

Source: paper sec. 3.2, eq. (1) (Gumbel-softmax, Jang et al. 2017);
docs/method.md sec. 1 (two logits keep/skip, keep if logit_keep >=
logit_skip at inference, keep-biased initialisation).
"""
from typing import Optional

import torch
import torch.nn as nn

KEEP, SKIP = 0, 1


def gumbel_gate(logits: torch.Tensor, tau: float, training: bool,
                generator: Optional[torch.Generator] = None,
                noise_scale: float = 1.0) -> torch.Tensor:
    """Turn (keep, skip) logits into a binary keep gate.

    In training a gate with logit difference d = keep - skip is on when
    d + noise_scale * (g_keep - g_skip) > 0 (g: Gumbel(0, 1) noise), i.e.
    with probability sigmoid(d / noise_scale); at inference when d >= 0.
    With the paper's noise_scale = 1 a logit d = 1.5 is kept in 82 % of the
    training passes and in every inference pass, so the sparsity loss, which
    sees the training gates, can settle on a rate that inference exceeds
    (docs/method.md sec. 2, "Training gates and inference gates");
    :class:`laud_mm.GumbelNoiseHook` anneals the scale so that the two
    agree at the end of training.

    Args:
        logits: (..., 2) logits, index 0 = keep, index 1 = skip.
        tau: Gumbel temperature (> 0); only used when ``training``.
        training: hard Gumbel-softmax with a straight-through gradient if
            True, else the deterministic gate ``logit_keep >= logit_skip``.
        generator: optional RNG for the Gumbel noise.
        noise_scale: factor on the Gumbel noise (finite, >= 0; 1: the
            paper's Gumbel-softmax, 0: the inference gate with the
            straight-through gradient of sigmoid(d / tau)); only used when
            ``training``.

    Returns:
        (...) gate in {0, 1}, same dtype as ``logits``. In training its
        gradient is that of the soft keep probability (straight-through).

    Raises:
        ValueError: if the last dimension is not 2, ``tau <= 0`` or
            ``noise_scale`` is not a finite number >= 0.

    Source: paper eq. (1) (noise_scale = 1).
    """
    if logits.shape[-1] != 2:
        raise ValueError(f'gate logits need a last dimension of 2 (keep, skip), '
                         f'got shape {tuple(logits.shape)}')
    if not training:
        return (logits[..., KEEP] >= logits[..., SKIP]).to(logits.dtype)
    if not tau > 0:
        raise ValueError(f'Gumbel temperature tau must be > 0, got {tau}')
    if not 0 <= noise_scale < float('inf'):
        raise ValueError(f'Gumbel noise_scale must be a finite number >= 0, '
                         f'got {noise_scale}')
    # Gumbel(0, 1) noise; computed in fp32 for stability under autocast.
    u = torch.rand(logits.shape, dtype=torch.float32, device=logits.device,
                   generator=generator)
    g = -torch.log((-torch.log(u.clamp_min(1e-10))).clamp_min(1e-10))
    if noise_scale != 1:
        g = g * noise_scale
    soft = torch.softmax((logits.float() + g) / tau, dim=-1)[..., KEEP]
    hard = (soft >= 0.5).to(soft.dtype)
    return (hard - soft.detach() + soft).to(logits.dtype)


def init_keep_bias(layer: nn.Module, keep: float, skip: float,
                   weight_std: float = 0.01) -> None:
    """Keep-biased initialisation of a gate's final layer.

    The final layer's outputs are interleaved (keep, skip) pairs: output
    ``2k`` is the keep logit of gate k and ``2k + 1`` its skip logit.

    Args:
        layer: nn.Conv2d or nn.Linear with ``2 * n_gates`` outputs and a bias.
        keep, skip: bias values (spatial / layer: 5, 0; channel: 2, -2).
        weight_std: std of the normal weight init, small so that training
            starts from the full network.

    Raises:
        ValueError: if the layer has no bias or an odd number of outputs.
    """
    if layer.bias is None or layer.bias.numel() % 2:
        raise ValueError('a gate layer needs a bias with 2 * n_gates entries')
    nn.init.normal_(layer.weight, 0., weight_std)
    with torch.no_grad():
        layer.bias.view(-1, 2)[:, KEEP] = keep
        layer.bias.view(-1, 2)[:, SKIP] = skip
