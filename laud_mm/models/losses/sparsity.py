"""FLOPs-based sparsity loss with per-block bounds relaxing over the first
part of training and a global term pulling the whole network to the target.

Source: paper sec. 3.5, eq. (2); docs/method.md sec. 2:

    prog  = cos^2(pi/2 * clip(p, 0, 1)),  p = progress / warmup_fraction
    upper = 1 - prog * (1 - t),  lower = prog * t
    L = mean_i [max(0, r_i - upper)^2 + max(0, lower - r_i)^2]
        + (F_dyn / F_static - t)^2
"""
import math
from typing import Dict, Optional

import torch
import torch.nn as nn
from mmengine.logging import MessageHub

from ...registry import MODELS
from ...structures.checks import check_bool, check_number


def train_progress() -> Optional[float]:
    """Training progress iter / max_iters in [0, 1] from mmengine's
    MessageHub (set by the Runner's RuntimeInfoHook), or None outside a
    Runner's training loop."""
    hub = MessageHub.get_current_instance()
    it, max_iters = hub.get_info('iter'), hub.get_info('max_iters')
    if it is None or not max_iters:
        return None
    return min(max(it / max_iters, 0.), 1.)


@MODELS.register_module()
class SparsityLoss(nn.Module):
    """Sparsity loss on FLOPs-based activation rates.

    Args:
        target_rate: t in (0, 1], the whole-backbone FLOPs ratio to reach.
        loss_weight: alpha (classification: 10; detection: 1).
        warmup_fraction: fraction of training over which the per-block bounds
            relax from [t, t] to [0, 1] (paper: 0.33). 0 disables the
            per-block terms' pinning (bounds are [0, 1] from the start).
        block_bounds: include the per-block bound terms (detection configs of
            the authors use only the global term).

    Shapes:
        forward(stats, progress) -> {'loss_sparsity': scalar}; ``stats`` is
        :meth:`LAUDResNet.activation_stats` ((N,) tensors per block).

    Raises:
        ValueError: ``target_rate`` outside (0, 1] (or a bool), a
            ``loss_weight`` that is not a finite number >= 0,
            ``warmup_fraction`` outside [0, 1], a ``block_bounds`` that is
            not a bool, or progress outside [0, 1].
    """

    def __init__(self, target_rate: float, loss_weight: float = 1.0,
                 warmup_fraction: float = 0.33, block_bounds: bool = True):
        super().__init__()
        if isinstance(target_rate, bool) or \
                not isinstance(target_rate, (int, float)) or \
                not 0 < target_rate <= 1:
            raise ValueError(f'SparsityLoss: target_rate={target_rate!r} must '
                             f'lie in (0, 1]')
        self.loss_weight = check_number('SparsityLoss', 'loss_weight',
                                        loss_weight, allow_zero=True)
        self.warmup_fraction = check_number('SparsityLoss', 'warmup_fraction',
                                            warmup_fraction, allow_zero=True)
        if self.warmup_fraction > 1:
            raise ValueError(f'SparsityLoss: warmup_fraction='
                             f'{warmup_fraction!r} must lie in [0, 1]')
        self.target_rate = float(target_rate)
        self.block_bounds = check_bool('SparsityLoss', 'block_bounds',
                                       block_bounds)

    def bounds(self, progress: float):
        """(lower, upper) per-block bounds at a training progress in [0, 1]."""
        if not 0 <= progress <= 1:
            raise ValueError(f'progress={progress!r} must lie in [0, 1]')
        p = 1. if self.warmup_fraction == 0 else \
            min(progress / self.warmup_fraction, 1.)
        prog = math.cos(math.pi / 2 * p) ** 2
        t = self.target_rate
        return prog * t, 1 - prog * (1 - t)

    def forward(self, stats: Dict, progress: Optional[float] = None
                ) -> Dict[str, torch.Tensor]:
        """Compute the loss.

        Args:
            stats: backbone activation statistics.
            progress: training progress in [0, 1]; default: from the
                MessageHub, or 1.0 (bounds fully relaxed) outside a Runner.
        """
        if progress is None:
            progress = train_progress()
            progress = 1. if progress is None else progress
        t = self.target_rate
        dense = stats['dense_flops']
        flops = stats['flops'].mean()
        loss = (flops / dense - t) ** 2
        if self.block_bounds:
            lower, upper = self.bounds(progress)
            terms = []
            for f, d in zip(stats['block_flops'], stats['block_dense_flops']):
                r = f.mean() / d
                terms.append((r - upper).clamp_min(0) ** 2 +
                             (lower - r).clamp_min(0) ** 2)
            loss = loss + torch.stack(terms).mean()
        return {'loss_sparsity': self.loss_weight * loss}
