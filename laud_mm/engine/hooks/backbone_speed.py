"""Measured backbone speed-up on the evaluated images: the backbone as the
model runs it (dynamic inference, or masked-dense) against the static
network of the same weights, on the same batches, on the device and with
the threads the evaluation uses.

The predicted latency (:class:`laud_mm.BackboneLatencyMetric`) is the
paper's device model; this hook times what this machine does. It adds
``laud/measured_ms``, ``laud/measured_static_ms`` (wall-clock backbone time
per image; the static network in the faster of NCHW and channels_last,
named by ``laud/measured_static_layout``) and ``laud/measured_speedup`` to
the evaluation's metrics, so they are logged on the line of the task
metric and the predicted latency.

Source: paper sec. 4 (latency of the backbone on the validation set); this
project's dynamic-inference kernels (sec. 3.4).
"""
import time
from typing import Dict, Optional, Sequence

import torch
from mmengine.dist import all_reduce
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from ...models.layers.backbone import STATIC_LAYOUTS
from ...registry import HOOKS
from ...structures.checks import check_bool

PHASES = ('val', 'test')


def _sync(x: torch.Tensor) -> None:
    if x.is_cuda:
        torch.cuda.synchronize(x.device)


@HOOKS.register_module()
class BackboneSpeedHook(Hook):
    """Time the LAUD backbone against its static network on every evaluated
    batch.

    After the model's own backbone forward on a batch, the hook runs, on the
    same input tensor and for ``repeats`` rounds, the static network
    (``backbone.static_forward``: dense, no maskers, BN folded) on the input
    in every memory format of
    :data:`~laud_mm.models.layers.backbone.STATIC_LAYOUTS` (NCHW and
    channels_last, converted before the timing) and the backbone again as
    configured (``dynamic_inference`` or not) on the input in the backbone's
    ``dynamic_memory_format`` where it has one (channels_last where its
    fused CPU kernels run; converted before the timing; else as given), each
    timed with a wall clock (``time.perf_counter``; CUDA synchronised).
    With ``warmup`` one untimed call of each precedes the rounds (kernel and
    primitive creation for a new input shape). The fastest round of each is
    kept and summed over the batches; the static network's time is that of
    the format with the smaller sum (what a user deploying it would pick),
    divided by the images. The extra forwards leave the model's outputs and
    statistics as they were (eval mode is deterministic).

    Note:
        Priority HIGHEST: its ``after_*_epoch`` runs before mmengine's
        RuntimeInfoHook copies the metrics to the log. Evaluation takes about
        ``3 * (repeats + warmup)`` extra backbone forwards per batch.
        Distributed evaluation sums the times and images of every rank.

    Args:
        repeats: timed rounds per batch (>= 1).
        warmup: one untimed call of each network first.
        phases: evaluations to time, a non-empty subset of ('val', 'test').

    Raises:
        ValueError: ``repeats`` < 1, ``warmup`` not a bool, or ``phases``
            empty, not a sequence or with an unknown phase (names the
            value).
        RuntimeError: (at the epoch start) the model's backbone is not a LAUD
            backbone.
    """

    priority = 'HIGHEST'

    def __init__(self, repeats: int = 1, warmup: bool = True,
                 phases: Sequence[str] = ('test',)):
        if isinstance(repeats, bool) or not isinstance(repeats, int) or \
                repeats < 1:
            raise ValueError(f'BackboneSpeedHook: repeats={repeats!r} must '
                             f'be an integer >= 1')
        if isinstance(phases, str) or \
                not isinstance(phases, (tuple, list)) or not phases or \
                any(p not in PHASES for p in phases):
            raise ValueError(f'BackboneSpeedHook: phases={phases!r} must be '
                             f'a non-empty subset of {PHASES}')
        self.repeats = repeats
        self.warmup = check_bool('BackboneSpeedHook', 'warmup', warmup)
        self.phases = tuple(phases)
        self._handle = None
        self._busy = False
        self._reset()

    def _reset(self) -> None:
        self.dynamic_s = 0.
        self.static_s = {name: 0. for name in STATIC_LAYOUTS}
        self.images = 0

    # ------------------------------------------------------------- timing
    def _time(self, fn, x: torch.Tensor) -> float:
        _sync(x)
        t0 = time.perf_counter()
        fn(x)
        _sync(x)
        return time.perf_counter() - t0

    def _after_backbone(self, backbone, args, output) -> None:
        if self._busy or backbone.training or not args:
            return
        x = args[0]
        xs = {name: x.contiguous(memory_format=fmt)
              for name, fmt in STATIC_LAYOUTS.items()}
        if hasattr(backbone, 'dynamic_memory_format'):
            x = x.contiguous(memory_format=backbone.dynamic_memory_format(x))
        self._busy = True
        try:
            with torch.no_grad():
                if self.warmup:
                    for t in xs.values():
                        backbone.static_forward(t)
                    backbone(x)
                st = {name: min(self._time(backbone.static_forward, t)
                                for _ in range(self.repeats))
                      for name, t in xs.items()}
                dy = min(self._time(backbone, x) for _ in range(self.repeats))
        finally:
            self._busy = False
        for name, s in st.items():
            self.static_s[name] += s
        self.dynamic_s += dy
        self.images += int(x.shape[0])

    # -------------------------------------------------------------- hooks
    def _start(self, runner, phase: str) -> None:
        if phase not in self.phases:
            return
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        backbone = getattr(model, 'backbone', None)
        if not hasattr(backbone, 'static_forward'):
            raise RuntimeError(
                f'BackboneSpeedHook: the model has no LAUD backbone (got '
                f'{type(backbone).__name__}); it times laud_mm backbones')
        self._reset()
        self._handle = backbone.register_forward_hook(self._after_backbone)
        runner.logger.info(
            f'BackboneSpeedHook: timing the backbone '
            f'({"dynamic inference" if backbone.dynamic_inference else "masked-dense"}) '
            f'against its static network, {torch.get_num_threads()} threads, '
            f'{self.repeats} round(s) per batch')

    def _finish(self, phase: str, metrics: Optional[Dict]) -> None:
        if self._handle is None:
            return
        self._handle.remove()
        self._handle = None
        names = list(self.static_s)
        t = torch.tensor([self.dynamic_s, float(self.images)] +
                         [self.static_s[k] for k in names],
                         dtype=torch.float64)
        all_reduce(t)
        dyn, n, *static = t.tolist()
        if metrics is not None and n > 0:
            st, layout = min(zip(static, names))
            metrics['laud/measured_ms'] = 1e3 * dyn / n
            metrics['laud/measured_static_ms'] = 1e3 * st / n
            metrics['laud/measured_static_layout'] = layout
            metrics['laud/measured_speedup'] = st / dyn

    def before_val_epoch(self, runner) -> None:
        """Start timing a validation epoch (when 'val' is a phase)."""
        self._start(runner, 'val')

    def before_test_epoch(self, runner) -> None:
        """Start timing a test epoch (when 'test' is a phase)."""
        self._start(runner, 'test')

    def after_val_epoch(self, runner, metrics: Optional[Dict] = None) -> None:
        """Add the measured figures to the validation metrics.

        Args:
            runner: the mmengine Runner.
            metrics: the evaluation's metrics, extended in place.
        """
        self._finish('val', metrics)

    def after_test_epoch(self, runner, metrics: Optional[Dict] = None) -> None:
        """Add the measured figures to the test metrics.

        Args:
            runner: the mmengine Runner.
            metrics: the evaluation's metrics, extended in place.
        """
        self._finish('test', metrics)
