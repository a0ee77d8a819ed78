"""Gumbel temperature schedule for every masker of the model.

Source: paper appendix B (tau decays exponentially from 5 to 0.1 during
ImageNet training), METHOD_NOTES section 2 and 3 (detection: fixed 0.1).
"""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from ...models.maskers import MaskerBase
from ...registry import HOOKS
from .. import rng_state


@HOOKS.register_module()
class GumbelTemperatureHook(Hook):
    """Set tau = tau0 * (tau1 / tau0) ** (iter / max_iters) before every
    training iteration (constant when tau0 == tau1) and log it as
    ``train/gumbel_tau``.

    tau is a function of ``runner.iter`` alone, so a resumed run continues
    the schedule exactly where it stopped. With ``restore_rng`` the hook also
    saves every rank's random-generator states in the checkpoints and
    restores them on ``resume`` (:mod:`laud_mm.engine.rng_state`), so the
    Gumbel noise after a resume is the noise of the uninterrupted run.

    Args:
        tau0: temperature at iteration 0 (> 0). Paper: 5.0.
        tau1: temperature at the last iteration (> 0). Paper: 0.1;
            detection: tau0 = tau1 = 0.1.
        restore_rng: save / restore the generator states (default True).

    Raises:
        ValueError: tau0 or tau1 not > 0.
        RuntimeError: (before training) the model has no maskers.
    """

    priority = 'NORMAL'

    def __init__(self, tau0: float = 5.0, tau1: float = 0.1,
                 restore_rng: bool = True):
        for key, v in (('tau0', tau0), ('tau1', tau1)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f'GumbelTemperatureHook: {key}={v!r} must be '
                                 f'a number > 0')
        self.tau0, self.tau1 = float(tau0), float(tau1)
        self.restore_rng = bool(restore_rng)
        self._rng_states = None  # per-rank states after the last iteration
        self._resume_states = None  # loaded by resume, applied in before_train

    def tau_at(self, it: int, max_iters: int) -> float:
        """Temperature at iteration ``it`` of ``max_iters``."""
        frac = min(max(it / max(max_iters, 1), 0.), 1.)
        return self.tau0 * (self.tau1 / self.tau0) ** frac

    @staticmethod
    def _maskers(runner):
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        return [m for m in model.modules() if isinstance(m, MaskerBase)]

    def before_train(self, runner) -> None:
        self._cached = self._maskers(runner)
        if not self._cached:
            raise RuntimeError('GumbelTemperatureHook: the model has no '
                               'maskers (is the backbone static, paradigm=None?)')
        if self._resume_states is not None:
            rng_state.install_restore(runner, rng_state.select_rank_state(
                self._resume_states, runner.logger))
            self._resume_states = None

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        # checkpoints are written by rank 0 alone (Runner.save_checkpoint is
        # master_only): gather every rank's state here, on all ranks
        if self.restore_rng and runner.world_size > 1:
            self._rng_states = rng_state.gather_rng_states()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if not self.restore_rng:
            return
        checkpoint[rng_state.KEY] = self._rng_states \
            if runner.world_size > 1 and self._rng_states is not None \
            else [rng_state.capture_rng_state()]

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # only a resume continues the random streams (load_from fine-tunes)
        if self.restore_rng and getattr(runner, '_resume', False) and \
                rng_state.KEY in checkpoint:
            self._resume_states = checkpoint[rng_state.KEY]

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        tau = self.tau_at(runner.iter, runner.max_iters)
        maskers = getattr(self, '_cached', None) or self._maskers(runner)
        for m in maskers:
            m.tau = tau
        runner.message_hub.update_scalar('train/gumbel_tau', tau)
