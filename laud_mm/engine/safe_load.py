"""Load mmengine Runner checkpoints under torch >= 2.6 (``weights_only=True``
by default) without weakening ``weights_only`` globally.

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``; from torch 2.6
that refuses Runner checkpoints, which pickle a few non-tensor objects (the
MessageHub's ``HistoryBuffer``s, numpy arrays and scalars, ``ConfigDict``).
We allow-list exactly those types with ``torch.serialization.add_safe_globals``
so resume, ``load_from`` and ``init_cfg=dict(type='Pretrained')`` work while
arbitrary pickled code is still refused.

One more object needs care: ``HistoryBuffer.__getstate__`` pickles its
class-level registry of statistics methods, and a method pickles as
``getattr(HistoryBuffer, 'min')``. Allow-listing ``builtins.getattr`` would
let a checkpoint reach any attribute of any allowed object (arbitrary code),
so instead :func:`register_safe_globals` makes ``HistoryBuffer`` leave its four
built-in methods (min, max, current, mean, which every HistoryBuffer
re-registers on creation) out of the pickle. Checkpoints saved with laud_mm
imported therefore load with ``weights_only=True``; a Runner checkpoint saved
without it carries ``getattr`` and must be converted once by a user who trusts
it (``tools/convert_checkpoint.py``).
"""
import importlib
from typing import List

import torch

# (module, attribute) pairs found in mmengine 0.10.7 Runner checkpoints
# (torch.serialization.get_unsafe_globals_in_checkpoint on a real one).
_SAFE = [
    ('mmengine.logging.history_buffer', 'HistoryBuffer'),
    ('mmengine.config.config', 'ConfigDict'),
    ('numpy', 'ndarray'),
    ('numpy', 'dtype'),
    ('numpy._core.multiarray', '_reconstruct'),
    ('numpy._core.multiarray', 'scalar'),
    ('numpy.core.multiarray', '_reconstruct'),
    ('numpy.core.multiarray', 'scalar'),
    ('collections', 'OrderedDict'),
    ('builtins', 'slice'),
]
_NUMPY_DTYPES = ['Float64DType', 'Float32DType', 'Float16DType', 'Int64DType',
                 'Int32DType', 'Int16DType', 'Int8DType', 'UInt8DType',
                 'BoolDType']


def _history_buffer_getstate(self) -> dict:
    """``HistoryBuffer.__getstate__`` without the built-in statistics methods
    (custom ones registered with ``register_statistics`` are kept)."""
    from mmengine.logging.history_buffer import HistoryBuffer
    state = dict(self.__dict__)
    state.pop('statistics_methods', None)
    custom = {k: v for k, v in type(self)._statistics_methods.items()
              if getattr(HistoryBuffer, k, None) is not v}
    if custom:
        state['statistics_methods'] = custom
    return state


def register_safe_globals() -> List[str]:
    """Allow-list the types of mmengine Runner checkpoints for
    ``torch.load(weights_only=True)``.

    Returns:
        The qualified names registered (those importable here).
    """
    if not hasattr(torch.serialization, 'add_safe_globals'):
        return []  # torch < 2.4: weights_only is off by default anyway
    done, objs = [], []
    for mod, attr in _SAFE:
        try:
            obj = getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError):
            continue
        # numpy 2 pickles as numpy._core.*; register under the pickled name
        objs.append((obj, f'{mod}.{attr}') if mod.startswith('numpy.') else obj)
        done.append(f'{mod}.{attr}')
    try:
        import numpy.dtypes as nd
        for name in _NUMPY_DTYPES:
            if hasattr(nd, name):
                objs.append(getattr(nd, name))
                done.append(f'numpy.dtypes.{name}')
    except ImportError:
        pass
    torch.serialization.add_safe_globals(objs)
    try:
        from mmengine.logging.history_buffer import HistoryBuffer
        HistoryBuffer.__getstate__ = _history_buffer_getstate
    except ImportError:
        pass
    return done
