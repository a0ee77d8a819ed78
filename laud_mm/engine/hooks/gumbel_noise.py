"""Gumbel noise scale schedule for every masker of the model: training
gates that end as the inference gates.

In training a gate with keep - skip logit difference d is on with
probability sigmoid(d / s) (s: the noise scale; the paper's Gumbel-softmax
has s = 1), at inference when d >= 0. The sparsity loss sees the training
gates, so logits left small and positive after a short fine-tuning count as
partly off for the loss and as on for inference, and the inference rate
exceeds the target. Annealing s towards 0 makes the training gates converge
to the inference gates while the sparsity loss still holds the rate at its
target (docs/method.md sec. 2, "Training gates and inference gates";
measurements in docs/detection_demos.md).

Source: paper eq. (1) (s = 1); the annealing is ours (docs/method.md).
"""
from mmengine.hooks import Hook

from ...registry import HOOKS
from .gumbel_temperature import check_annealing, exponential, model_maskers


@HOOKS.register_module()
class GumbelNoiseHook(Hook):
    """Set the Gumbel noise scale s = s0 * (s1 / s0) ** (iter / max_iters)
    of every masker before each training iteration (constant when s0 ==
    s1) and log it as ``train/gumbel_noise``.

    s is a function of ``runner.iter`` alone, so a resumed run continues
    the schedule where it stopped. Evaluation is unaffected (inference gates
    have no noise).

    Args:
        scale0: noise scale at iteration 0 (finite, > 0; 1: the paper's
            Gumbel-softmax).
        scale1: noise scale at the last iteration (finite, > 0, <= scale0).

    Raises:
        ValueError: scale0 or scale1 not a finite number > 0, or scale1 >
            scale0 (the message names the key and value).
        RuntimeError: (before training) the model has no maskers.
    """

    priority = 'NORMAL'

    def __init__(self, scale0: float = 1.0, scale1: float = 0.1):
        check_annealing('GumbelNoiseHook', ('scale0', scale0),
                        ('scale1', scale1), 'the noise')
        self.scale0, self.scale1 = float(scale0), float(scale1)

    def scale_at(self, it: int, max_iters: int) -> float:
        """Noise scale at iteration ``it`` of ``max_iters``."""
        return exponential(self.scale0, self.scale1, it, max_iters)

    def before_train(self, runner) -> None:
        """Find the maskers.

        Raises:
            RuntimeError: if the model has no maskers.
        """
        self._maskers = model_maskers(runner)
        if not self._maskers:
            raise RuntimeError('GumbelNoiseHook: the model has no maskers '
                               '(is the backbone static, paradigm=None?)')

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        """Set and log the noise scale of this iteration.

        Args:
            runner: the mmengine Runner; the other arguments are unused.
        """
        s = self.scale_at(runner.iter, runner.max_iters)
        for m in getattr(self, '_maskers', None) or model_maskers(runner):
            m.noise_scale = s
        runner.message_hub.update_scalar('train/gumbel_noise', s)
