"""Knowledge distillation from a frozen static teacher (soft targets).

Source: paper sec. 3.5 (ImageNet training objective); docs/method.md sec. 2:

    L = CE(z, y) + alpha * L_sparse + beta * T^2 * KL(softmax(z_t / T) || softmax(z / T))

with beta = 0.5 and T = 4.0 for every dynamic model (Hinton et al., 2015,
"Distilling the knowledge in a neural network": the T^2 factor keeps the
gradient scale of the soft term independent of T).
"""
from typing import Dict

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...registry import MODELS
from ...structures.checks import check_number


def distillation_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                    temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(z_t / T) || softmax(z_s / T)), averaged over the batch.

    KL is summed over the classes and averaged over the N samples
    (``reduction='batchmean'``, the true KL divergence per sample).

    Args:
        student_logits: (N, K) student logits z_s (gradients flow into them).
        teacher_logits: (N, K) teacher logits z_t (treated as constants).
        temperature: T > 0.

    Returns:
        Scalar tensor (>= 0; 0 iff the softened distributions agree).

    Raises:
        ValueError: shapes differ or are not 2-D, or ``temperature <= 0``.
    """
    temperature = check_number('distillation_kl', 'temperature',
                                   temperature)
    if student_logits.dim() != 2 or \
            student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f'distillation_kl: student logits {tuple(student_logits.shape)} '
            f'and teacher logits {tuple(teacher_logits.shape)} must both be '
            f'(N, num_classes)')
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach().float() / temperature,
                            dim=1)
    kl = F.kl_div(log_p_s, log_p_t, reduction='batchmean', log_target=True)
    return kl * temperature ** 2


@MODELS.register_module()
class DistillationLoss(nn.Module):
    """beta * T^2 * KL(softmax(z_t / T) || softmax(z / T)) (paper sec. 3.5).

    Args:
        temperature: T > 0 (paper: 4.0).
        loss_weight: beta >= 0 (paper: 0.5).
        loss_name: key of the returned loss (must contain 'loss' so that
            mmengine adds it to the total).

    Shapes:
        forward(student_logits (N, K), teacher_logits (N, K)) ->
        {loss_name: scalar}.

    Raises:
        ValueError: ``temperature`` not > 0, ``loss_weight`` < 0, a
            ``loss_name`` without 'loss' (each message names the key and
            value); mismatched logits shapes in forward.
    """

    def __init__(self, temperature: float = 4.0, loss_weight: float = 0.5,
                 loss_name: str = 'loss_distill'):
        super().__init__()
        self.temperature = check_number('DistillationLoss', 'temperature',
                                            temperature)
        self.loss_weight = check_number('DistillationLoss', 'loss_weight',
                                            loss_weight, allow_zero=True)
        if not isinstance(loss_name, str) or 'loss' not in loss_name:
            raise ValueError(f'DistillationLoss: loss_name={loss_name!r} must '
                             f"be a string containing 'loss'")
        self.loss_name = loss_name

    def forward(self, student_logits: torch.Tensor,
                teacher_logits: torch.Tensor) -> Dict[str, torch.Tensor]:
        loss = distillation_kl(student_logits, teacher_logits,
                               self.temperature)
        return {self.loss_name: self.loss_weight * loss}

    def extra_repr(self) -> str:
        return f'temperature={self.temperature}, loss_weight={self.loss_weight}'
