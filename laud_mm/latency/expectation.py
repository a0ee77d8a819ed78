"""Expected cost under random masks: the public helpers the per-family
latency blocks use to price a fractional expected amount of work (kept
samples, active patches, kept channels) with kernels that exist only for
whole counts.

Source: paper appendix A (the latency of a dynamic operator at activation
rate r), docs/latency_predictor.md ("expectation over random masks").
"""
import math
from typing import Callable, List

from .operators import OpLatency

__all__ = ['expected_ops', 'expected_max_normal']

# expected maximum of n standard normal variables (n = 1 .. 8)
_MAX_NORMAL = (0., 0., 0.5642, 0.8463, 1.0294, 1.1630, 1.2672, 1.3522, 1.4236)


def expected_max_normal(n: int) -> float:
    """Expected maximum of ``n`` independent standard normal variables
    (exact table up to 8, the asymptotic expansion above).

    Args:
        n: count (>= 1).

    Returns:
        E[max(Z_1 .. Z_n)], dimensionless.
    """
    if n < len(_MAX_NORMAL):
        return _MAX_NORMAL[n]
    a = math.sqrt(2. * math.log(n))
    return a - (math.log(math.log(n)) + math.log(4 * math.pi)) / (2. * a)


def expected_ops(make: Callable[[int], List[OpLatency]], count: float,
                 with_zero: bool = False) -> List[OpLatency]:
    """Kernels for a fractional expected ``count`` of work items: ``make(n)``
    at the neighbouring integers, blended linearly (``make(0)`` is no kernel
    at all unless ``with_zero``).

    Args:
        make: ``n -> kernels`` for ``n`` whole work items.
        count: expected work items (>= 0).
        with_zero: also call ``make(0)`` (paths that cost something even
            with nothing kept).

    Returns:
        list of :class:`OpLatency` (milliseconds, blended fields).
    """
    lo = int(math.floor(count + 1e-9))
    frac = count - lo
    if frac < 1e-9:
        return make(lo) if (lo > 0 or with_zero) else []
    hi_ops = make(lo + 1)
    if lo == 0 and not with_zero:
        return [o.scaled(frac) for o in hi_ops]
    lo_ops = make(lo)
    if len(lo_ops) != len(hi_ops):
        return [o.scaled(1 - frac) for o in lo_ops] + \
            [o.scaled(frac) for o in hi_ops]
    return [OpLatency(a.name, (1 - frac) * a.ms + frac * b.ms,
                      (1 - frac) * a.compute_ms + frac * b.compute_ms,
                      (1 - frac) * a.memory_ms + frac * b.memory_ms,
                      (1 - frac) * a.launch_ms + frac * b.launch_ms,
                      (1 - frac) * a.macs + frac * b.macs,
                      (1 - frac) * a.offchip_bytes + frac * b.offchip_bytes,
                      (1 - frac) * a.onchip_bytes + frac * b.onchip_bytes,
                      b.tile, b.n_tiles, b.utilisation)
            for a, b in zip(lo_ops, hi_ops)]
