"""Load mmengine Runner checkpoints under torch >= 2.6 (``weights_only=True``
by default) without weakening ``weights_only`` globally.

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``; from torch 2.6
that refuses Runner checkpoints, which pickle a few non-tensor objects (the
MessageHub's ``HistoryBuffer``s, numpy arrays and scalars, ``ConfigDict``).
We allow-list exactly those types with ``torch.serialization.add_safe_globals``
so resume, ``load_from`` and ``init_cfg=dict(type='Pretrained')`` work while
arbitrary pickled code is still refused.

Compat: torch >= 2.6 (``weights_only=True`` by default) with mmengine
0.10.7 (``torch.load`` without ``weights_only``). The MessageHub's buffers
need one more step at save time: :class:`laud_mm.WeightsOnlyCheckpointHook`.
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
    return done
