"""Timing helpers shared by the benchmarks of :mod:`laud_mm.analysis`.

- :func:`timed`: wall-clock and process CPU seconds of one call;
- :func:`bench_pair`: a static and a dynamic function timed alternately
  after warm-up (:class:`PairTiming`: medians, and the speedup as the
  median of the per-pair ratios), as every backbone benchmark compares
  them;
- :func:`cpu_ms`: median process CPU time of repeated calls (kernel
  micro-benchmarks, per-step breakdowns);
- :func:`wall_ms`: wall-clock milliseconds of one call;
- :func:`machine_line`: the ``# torch ...`` line above a timing table.

The predictor calibration and validation time with
:func:`laud_mm.latency.calibration.time_fn` instead (fastest of many calls,
the thread's CPU time with one thread).

Process CPU time is robust to other processes sharing the cores: a time
slice given to another process is not counted (see docs/benchmarks.md).
"""
import os
import platform
import statistics
import time
from typing import Callable, NamedTuple, Optional, Sequence, Tuple

import torch


def timed(fn: Callable, x) -> Tuple[float, float]:
    """Run ``fn(x)`` once.

    Returns:
        (wall seconds, process CPU seconds) of the call.
    """
    t, c = time.perf_counter(), time.process_time()
    fn(x)
    return time.perf_counter() - t, time.process_time() - c


class PairTiming(NamedTuple):
    """What :func:`bench_pair` measured.

    Attributes:
        static_ms, dynamic_ms: median wall-clock milliseconds of each.
        speedup: median over the repeats of the pair's wall-clock ratio
            static / dynamic.
        cpu_speedup: the same with process CPU time (robust to other
            processes sharing the cores; see docs/benchmarks.md).
    """
    static_ms: float
    dynamic_ms: float
    speedup: float
    cpu_speedup: float


def bench_pair(static_fn: Callable, dyn_fn: Callable, x, warmup: int,
               repeats: int) -> PairTiming:
    """Time ``static_fn(x)`` and ``dyn_fn(x)`` alternately under
    ``torch.no_grad``: ``warmup`` calls of each first, then ``repeats``
    pairs (static, then dynamic).

    The speedups are medians of the per-pair ratios: the two calls of a
    pair run a second or less apart, so a slow spell of the machine (other
    processes, frequency changes: two runs of the same static network differ
    by up to 20 % on the 2-core machine of docs/benchmarks.md) slows both
    and cancels in their ratio, where a ratio of separate medians keeps it.

    Returns:
        :class:`PairTiming` (ms, and ratios static / dynamic).
    """
    with torch.no_grad():
        for _ in range(warmup):
            static_fn(x)
            dyn_fn(x)
        ts, td = [], []
        for _ in range(repeats):
            ts.append(timed(static_fn, x))
            td.append(timed(dyn_fn, x))
    med = statistics.median
    return PairTiming(
        med(t[0] for t in ts) * 1e3, med(t[0] for t in td) * 1e3,
        med(s[0] / max(d[0], 1e-12) for s, d in zip(ts, td)),
        med(s[1] / max(d[1], 1e-9) for s, d in zip(ts, td)))


def cpu_ms(fn: Callable, warmup: int = 2, repeats: int = 9) -> float:
    """Median process CPU time of ``fn()`` in ms over ``repeats`` calls,
    after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        c = time.process_time()
        fn()
        ts.append(time.process_time() - c)
    return statistics.median(ts) * 1e3


def wall_ms(fn: Callable) -> float:
    """Wall-clock milliseconds of one call ``fn()``."""
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def machine_line(backend: bool = True, load: bool = False,
                 threads: Optional[Sequence[int]] = None) -> str:
    """The header line of a timing table: torch version, threads (torch's
    current count, or the ``threads`` a table runs at), (with ``backend``)
    the :mod:`laud_mm.ops` backend and whether its kernels use the thread
    pool, processor and logical CPUs, (with ``load``) the 1-, 5- and
    15-minute load averages (other processes share the cores: see
    docs/benchmarks.md)."""
    t = torch.get_num_threads() if threads is None else \
        '/'.join(str(v) for v in threads)
    parts = [f'# torch {torch.__version__}, {t} threads']
    if backend:
        from laud_mm import ops
        parts.append(f'ops backend {ops.backend()}' +
                     (' (parallel kernels)' if ops.parallel_kernels()
                      else ''))
    parts.append(f'{platform.processor() or "cpu"} ({os.cpu_count()} logical '
                 f'CPUs)')
    if load:
        parts.append('load average ' + ' / '.join(
            f'{v:.1f}' for v in os.getloadavg()))
    return ', '.join(parts)
