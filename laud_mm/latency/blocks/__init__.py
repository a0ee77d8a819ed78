"""Per-family latency blocks: the kernels each block kind runs, registered
by geometry ``kind`` so that the predictor dispatches without knowing the
families.

A latency block is a function ``fn(pred, g, batch, density) ->
List[OpLatency]`` (whole batch; ``pred`` the :class:`~laud_mm.latency.
LatencyPredictor`, read for ``hw``, ``eager`` and its other settings); a
stem latency is ``fn(pred, stem, batch) -> List[OpLatency]``. Adding a
family means one module here that registers its kinds.

Source: paper appendix A (the latency of each dynamic operator from the
block configuration, the activation rate and the hardware).
"""
from typing import Callable, Dict

_BLOCKS: Dict[str, Callable] = {}
_STEMS: Dict[str, Callable] = {}


def _register(table: Dict[str, Callable], kind: str, what: str):
    def deco(fn: Callable) -> Callable:
        old = table.get(kind)
        if old is not None and old is not fn:
            raise ValueError(f'{what} latency of kind={kind!r} is registered '
                             f'already ({old.__module__}.{old.__name__})')
        table[kind] = fn
        return fn
    return deco


def register_block_latency(kind: str):
    """Decorator: register ``fn(pred, g, batch, density)`` for blocks whose
    geometry has ``kind``.

    Raises:
        ValueError: if ``kind`` is registered already with another function.
    """
    return _register(_BLOCKS, kind, 'block')


def register_stem_latency(kind: str):
    """Decorator: register ``fn(pred, stem, batch)`` for stems of ``kind``.

    Raises:
        ValueError: if ``kind`` is registered already with another function.
    """
    return _register(_STEMS, kind, 'stem')


def _lookup(table: Dict[str, Callable], kind: str, what: str) -> Callable:
    try:
        return table[kind]
    except KeyError:
        raise ValueError(f'no {what} latency for kind={kind!r} (registered: '
                         f'{sorted(table)})') from None


def block_latency(kind: str) -> Callable:
    """The registered block latency function of ``kind``.

    Raises:
        ValueError: for an unregistered kind.
    """
    return _lookup(_BLOCKS, kind, 'block')


def stem_latency(kind: str) -> Callable:
    """The registered stem latency function of ``kind``.

    Raises:
        ValueError: for an unregistered kind.
    """
    return _lookup(_STEMS, kind, 'stem')


from . import regnet, resnet, t2t_vit  # noqa: E402,F401  (register the kinds)
