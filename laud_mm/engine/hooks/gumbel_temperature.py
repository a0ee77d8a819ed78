"""Gumbel temperature schedule for every masker of the model.

Source: paper appendix B.2 (tau decays exponentially from 5 to 0.1 during
ImageNet training) and B.3 (detection: fixed 0.1); docs/method.md sec. 2-3.
"""
import math

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from ...models.layers.maskers import MaskerBase
from ...registry import HOOKS


def model_maskers(runner) -> list:
    """Every :class:`~laud_mm.models.layers.maskers.MaskerBase` of the
    runner's model (unwrapped from DDP)."""
    model = runner.model.module if is_model_wrapper(runner.model) \
        else runner.model
    return [m for m in model.modules() if isinstance(m, MaskerBase)]


def check_annealing(hook: str, start: tuple, end: tuple, what: str) -> None:
    """Validate the two ends ``(key, value)`` of an annealed quantity.

    Raises:
        ValueError: a value that is not a finite number > 0 (bool
            included), or end > start; the message names hook, key and
            value.
    """
    for key, v in (start, end):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or \
                not math.isfinite(v) or not v > 0:
            raise ValueError(f'{hook}: {key}={v!r} must be a finite number '
                             f'> 0')
    if end[1] > start[1]:
        raise ValueError(f'{hook}: {end[0]}={end[1]!r} > {start[0]}='
                         f'{start[1]!r}: {what} anneals down ({start[0]} = '
                         f'{end[0]} for a fixed value)')


def exponential(v0: float, v1: float, it: int, max_iters: int) -> float:
    """v0 * (v1 / v0) ** (it / max_iters), ``it`` clipped to [0,
    max_iters]: the exponential annealing of paper appendix B.2."""
    frac = min(max(it / max(max_iters, 1), 0.), 1.)
    return v0 * (v1 / v0) ** frac


@HOOKS.register_module()
class GumbelTemperatureHook(Hook):
    """Set tau = tau0 * (tau1 / tau0) ** (iter / max_iters) before every
    training iteration (constant when tau0 == tau1) and log it as
    ``train/gumbel_tau``.

    tau is a function of ``runner.iter`` alone, so a resumed run continues
    the schedule exactly where it stopped (the Gumbel noise itself continues
    with :class:`laud_mm.RNGStateHook`).

    Note:
        Runs at priority NORMAL, before the training iteration, so the
        maskers see the new temperature in that iteration's forward.

    Args:
        tau0: temperature at iteration 0 (finite, > 0). Paper: 5.0.
        tau1: temperature at the last iteration (finite, > 0, <= tau0).
            Paper: 0.1; detection: tau0 = tau1 = 0.1.
            Both None: the model's ``laud_tau_schedule``, set by its weights
            route (:mod:`laud_mm.models.layers.weights`: fixed 0.1 from a
            LAUD ImageNet checkpoint, 5 -> 0.1 from static weights).

    Raises:
        ValueError: tau0 or tau1 not a finite number > 0, tau1 > tau0, or
            only one of them None (the message names the key and value).
        RuntimeError: (before training) the model has no maskers, or no
            ``laud_tau_schedule`` when tau0 and tau1 are None.
    """

    priority = 'NORMAL'

    def __init__(self, tau0: float = 5.0, tau1: float = 0.1):
        if tau0 is None and tau1 is None:
            self.tau0 = self.tau1 = None  # from the model's weights route
            return
        check_annealing('GumbelTemperatureHook', ('tau0', tau0),
                        ('tau1', tau1), 'the temperature')
        self.tau0, self.tau1 = float(tau0), float(tau1)

    def tau_at(self, it: int, max_iters: int) -> float:
        """Temperature at iteration ``it`` of ``max_iters``."""
        return exponential(*self._taus(), it, max_iters)

    def before_train(self, runner) -> None:
        """Find the maskers (and the schedule, when it is the model's).

        Args:
            runner: the mmengine Runner.

        Raises:
            RuntimeError: if the model has no maskers, or no schedule.
        """
        self._cached = model_maskers(runner)
        if not self._cached:
            raise RuntimeError('GumbelTemperatureHook: the model has no '
                               'maskers (is the backbone static, paradigm=None?)')
        if self.tau0 is None:
            model = runner.model.module if is_model_wrapper(runner.model) \
                else runner.model
            schedule = getattr(model, 'laud_tau_schedule', None)
            if schedule is None:
                raise RuntimeError(
                    'GumbelTemperatureHook(tau0=None, tau1=None) takes the '
                    'schedule from the model\'s weights route, and '
                    f'{type(model).__name__} has none; give tau0 and tau1')
            self._schedule = tuple(schedule)
            runner.logger.info(
                f'GumbelTemperatureHook: tau {schedule[0]} -> {schedule[1]} '
                f'({getattr(model, "laud_weights_route", "the model")})')

    def _taus(self):
        if self.tau0 is not None:
            return self.tau0, self.tau1
        return self._schedule

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        """Set and log the temperature of this iteration.

        Args:
            runner: the mmengine Runner; the other arguments are unused.
        """
        tau = self.tau_at(runner.iter, runner.max_iters)
        maskers = getattr(self, '_cached', None) or model_maskers(runner)
        for m in maskers:
            m.tau = tau
        runner.message_hub.update_scalar('train/gumbel_tau', tau)
