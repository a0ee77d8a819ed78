"""Runner checkpoints that load with ``torch.load(weights_only=True)``.

mmengine 0.10.7's ``HistoryBuffer.__getstate__`` pickles the class-level
registry of statistics methods, and a method pickles as
``getattr(HistoryBuffer, 'min')``. Allow-listing ``builtins.getattr`` would
let a checkpoint reach any attribute of any allowed object (arbitrary code),
so :class:`WeightsOnlyCheckpointHook` saves the MessageHub's buffers as
:class:`WeightsOnlyHistoryBuffer`, a subclass whose pickle leaves out the
four built-in methods (min, max, current, mean, which every buffer
re-registers on creation) and keeps custom ones. The subclass is
allow-listed for ``weights_only`` loading where it is defined (the rest of
a Runner checkpoint's types: :mod:`laud_mm.compat.torch_load`); a loaded
buffer is a ``HistoryBuffer`` to mmengine.

Checkpoints saved without the hook carry ``getattr`` and load only with
``weights_only=False`` (``tools/model_converters/convert_checkpoint.py
strip --trusted`` re-saves them for a user who trusts the file).

Source: mmengine 0.10.7 ``logging/history_buffer.py`` and
``runner/runner.py`` (``save_checkpoint`` calls ``before_save_checkpoint``
after building the ``message_hub`` entry); torch >= 2.6 ``weights_only``.
"""
import torch
from mmengine.hooks import Hook
from mmengine.logging.history_buffer import HistoryBuffer

from ...models.layers.checkpoint import check_checkpoint_file
from ...registry import HOOKS


class WeightsOnlyHistoryBuffer(HistoryBuffer):
    """``HistoryBuffer`` whose pickle holds data only: the built-in
    statistics methods are left out (see the module docstring)."""

    def __getstate__(self) -> dict:
        """The instance state without the built-in statistics methods.

        Returns:
            dict of the buffer's attributes (custom statistics methods
            registered with ``register_statistics`` kept).
        """
        state = dict(self.__dict__)
        state.pop('statistics_methods', None)
        custom = {k: v for k, v in type(self)._statistics_methods.items()
                  if getattr(HistoryBuffer, k, None) is not v}
        if custom:
            state['statistics_methods'] = custom
        return state

    @classmethod
    def from_buffer(cls, buf: HistoryBuffer) -> 'WeightsOnlyHistoryBuffer':
        """A copy of ``buf`` (its history arrays shared) as this class."""
        new = cls.__new__(cls)
        new.__dict__.update({k: v for k, v in buf.__dict__.items()
                             if k != 'statistics_methods'})
        return new


if hasattr(torch.serialization, 'add_safe_globals'):  # torch >= 2.4
    torch.serialization.add_safe_globals([WeightsOnlyHistoryBuffer])


@HOOKS.register_module()
class WeightsOnlyCheckpointHook(Hook):
    """Save the MessageHub's scalars as :class:`WeightsOnlyHistoryBuffer`,
    so that resume, ``load_from`` and ``Pretrained`` init read the
    checkpoints with ``weights_only=True``.

    Note:
        Only the checkpoint's copy of the MessageHub state changes; the
        live buffers of the run are untouched.
    """

    priority = 'VERY_LOW'

    def before_run(self, runner) -> None:
        """Refuse a ``load_from`` file that is not a PyTorch checkpoint
        before the Runner unpickles it
        (:func:`laud_mm.models.layers.checkpoint.check_checkpoint_file`).

        Raises:
            ValueError: naming ``load_from`` and the path.
        """
        load_from = getattr(runner, '_load_from', None)
        if isinstance(load_from, str):
            check_checkpoint_file(load_from, 'load_from')

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Convert ``checkpoint['message_hub']['log_scalars']``.

        Args:
            runner: the mmengine Runner (unused).
            checkpoint: the checkpoint dict being saved.
        """
        hub = checkpoint.get('message_hub')
        scalars = hub.get('log_scalars') if isinstance(hub, dict) else None
        if not scalars:
            return
        for k, v in list(scalars.items()):
            if isinstance(v, HistoryBuffer):
                scalars[k] = WeightsOnlyHistoryBuffer.from_buffer(v)
