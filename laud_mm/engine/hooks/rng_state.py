"""Save the random-number-generator states in Runner checkpoints and restore
them on resume, so that a resumed run draws the same Gumbel noise (and the
same RPN / RoI sampling, and the same augmentations with ``num_workers=0``)
as an uninterrupted run.

mmengine 0.10.7 restores the iteration, optimizer, schedulers and MessageHub
on resume, and re-seeds the generators with the config's seed, but it does
not save the generator states: after a resume the maskers' Gumbel noise
(``torch.rand`` on the global generator) restarts from the seed, so the loss
curve departs from the uninterrupted run.

The states are stored under ``checkpoint['laud_rng_state']`` as tensors and
plain Python numbers (loadable with ``torch.load(weights_only=True)``), one
entry per rank. They are restored at the exact point the uninterrupted run
was at: for :class:`~mmengine.runner.IterBasedTrainLoop`, after the loop has
advanced the dataloader past the already-trained batches (the advance
re-runs the data pipeline, which may draw random numbers), right before the
next batch is fetched; for epoch-based loops, before the first epoch, or,
with persistent dataloader workers, right before the first iteration: the
uninterrupted run made its train iterator (which draws its workers' base
seed from the global generator) in the first epoch and reuses it, the
resumed run makes a new one.

Two things between a checkpoint and the next training iteration would
otherwise move the training stream in one run and not in the other, or
differently: validation (making its dataloader iterator draws from the
global generator, after the checkpoint was written), so the hook puts the
generators back after every validation; and the train iterator above.

:class:`RNGStateHook` does this; name it in a config (the LAUD base
configs do: ``default_hooks.rng_state``).
"""
import random
from typing import Dict, List, Optional

import numpy as np
import torch
from mmengine.hooks import Hook

from ...registry import HOOKS

KEY = 'laud_rng_state'


def capture_rng_state() -> Dict:
    """The states of Python's, numpy's and torch's (CPU, CUDA) global
    generators, as tensors and Python numbers."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = dict(
        python=dict(version=version, internal=list(internal), gauss=gauss),
        numpy=dict(name=str(name), keys=torch.from_numpy(
            np.asarray(keys, dtype=np.int64)), pos=int(pos),
            has_gauss=int(has_gauss), cached=float(cached)),
        torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def apply_rng_state(state: Dict) -> None:
    """Restore the generators from :func:`capture_rng_state`'s dict."""
    p = state['python']
    random.setstate((p['version'], tuple(p['internal']), p['gauss']))
    n = state['numpy']
    np.random.set_state((n['name'], n['keys'].numpy().astype(np.uint32),
                         n['pos'], n['has_gauss'], n['cached']))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def gather_rng_states() -> List[Dict]:
    """Every rank's :func:`capture_rng_state` (a list of one when not
    distributed). Collective: call on all ranks."""
    from mmengine.dist import all_gather_object, get_world_size
    state = capture_rng_state()
    if get_world_size() == 1:
        return [state]
    return all_gather_object(state)


def select_rank_state(states: List[Dict], logger=None) -> Optional[Dict]:
    """This rank's state among the saved ones; rank 0's (with a warning)
    when the world size changed."""
    from mmengine.dist import get_rank, get_world_size
    rank, world = get_rank(), get_world_size()
    if len(states) == world:
        return states[rank]
    if logger is not None:
        logger.warning(f'{KEY}: checkpoint saved by {len(states)} ranks, '
                       f'resuming on {world}: every rank takes rank 0\'s '
                       f'random state')
    return states[0]


class _RestoreBeforeNext:
    """Iterator proxy: after ``skip`` batches, restore the RNG state, then
    yield batches unchanged."""

    def __init__(self, it, skip: int, state: Dict):
        self._it, self._skip, self._state = it, skip, state

    def __iter__(self):
        return self

    def __next__(self):
        if self._state is not None and self._skip == 0:
            apply_rng_state(self._state)
            self._state = None
        elif self._state is not None:
            self._skip -= 1
        return next(self._it)

    def __getattr__(self, name):
        return getattr(self._it, name)


def persistent_workers(dataloader) -> bool:
    """Whether ``dataloader`` (a torch DataLoader) keeps its worker
    processes, and so its iterator, across epochs."""
    return bool(getattr(dataloader, 'persistent_workers', False)) and \
        getattr(dataloader, 'num_workers', 0) > 0


def install_restore(runner, state: Dict) -> Optional[Dict]:
    """Restore ``state`` where an uninterrupted run would be: before the
    batch of iteration ``runner.iter`` (iteration-based loops); now
    (epoch-based loops, which resume at an epoch start); or, with
    persistent train workers, at the first iteration (returned: the caller
    applies it then, after the epoch made its iterator)."""
    loop = runner.train_loop
    if hasattr(loop, 'dataloader_iterator'):
        loop.dataloader_iterator = _RestoreBeforeNext(
            loop.dataloader_iterator, loop.iter, state)
    elif persistent_workers(getattr(loop, 'dataloader', None)):
        return state
    else:
        apply_rng_state(state)
    return None


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Save every rank's random-generator states in the checkpoints and
    restore them on ``resume`` (see the module docstring), so that a resumed
    run draws the noise (Gumbel gates, RoI sampling, augmentations) of the
    uninterrupted run.

    Note:
        Only a resume (``runner._resume``) restores the states; ``load_from``
        fine-tunes with fresh streams. Under distributed training the states
        are gathered on every rank after each iteration (checkpoints are
        written by rank 0 alone), a collective per iteration.
    """

    priority = 'NORMAL'

    def __init__(self):
        self._rng_states = None  # per-rank states after the last iteration
        self._resume_states = None  # loaded by resume, applied in before_train
        self._first_iter_state = None  # applied at the first iteration
        self._val_state = None  # the training stream while validating

    def before_train(self, runner) -> None:
        """Install the restore of a resumed run's states.

        Args:
            runner: the mmengine Runner.
        """
        if self._resume_states is not None:
            self._first_iter_state = install_restore(
                runner, select_rank_state(self._resume_states,
                                          runner.logger))
            self._resume_states = None

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        """Apply a resumed state deferred past the making of a persistent
        train iterator (:func:`install_restore`).

        Args:
            runner: the mmengine Runner; the other arguments are unused.
        """
        if self._first_iter_state is not None:
            apply_rng_state(self._first_iter_state)
            self._first_iter_state = None

    def before_val(self, runner) -> None:
        """Keep the generators' states: validation must not move the
        training stream (it runs after a checkpoint is written, so a run
        resumed from that checkpoint does not replay it).

        Args:
            runner: the mmengine Runner.
        """
        self._val_state = capture_rng_state()

    def after_val(self, runner) -> None:
        """Put the generators back as :meth:`before_val` found them.

        Args:
            runner: the mmengine Runner.
        """
        if self._val_state is not None:
            apply_rng_state(self._val_state)
            self._val_state = None

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        """Gather every rank's states (distributed runs only).

        Args:
            runner: the mmengine Runner; the other arguments are unused.
        """
        if runner.world_size > 1:
            self._rng_states = gather_rng_states()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Store the states under ``checkpoint['laud_rng_state']``.

        Args:
            runner: the mmengine Runner.
            checkpoint: the checkpoint dict being saved.
        """
        checkpoint[KEY] = self._rng_states \
            if runner.world_size > 1 and self._rng_states is not None \
            else [capture_rng_state()]

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Keep a resumed checkpoint's states for :meth:`before_train`.

        Args:
            runner: the mmengine Runner.
            checkpoint: the loaded checkpoint dict.
        """
        if getattr(runner, '_resume', False) and KEY in checkpoint:
            self._resume_states = checkpoint[KEY]
