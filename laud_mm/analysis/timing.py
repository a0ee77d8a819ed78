"""Timing helpers shared by the benchmarks of :mod:`laud_mm.analysis`.

- :func:`timed`: wall-clock and process CPU seconds of one call;
- :func:`bench_pair`: a static and a dynamic function timed alternately
  after warm-up (:class:`PairTiming`: medians, and the speedup as the
  median of the per-pair ratios), as every backbone benchmark compares
  them;
- :func:`bench_best_static`: the same with the static function timed in
  every memory format of ``laud_mm.models.layers.backbone.STATIC_LAYOUTS``
  in each round, the faster format being the baseline (CNN backbones: a
  user deploying the static network picks the faster one);
- :func:`static_inputs`: the input in every static memory format;
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
from typing import Callable, Dict, NamedTuple, Optional, Sequence, Tuple

import torch

from laud_mm.models.layers.backbone import STATIC_LAYOUTS


def timed(fn: Callable, x) -> Tuple[float, float]:
    """Run ``fn(x)`` once.

    Returns:
        (wall seconds, process CPU seconds) of the call.
    """
    t, c = time.perf_counter(), time.process_time()
    fn(x)
    return time.perf_counter() - t, time.process_time() - c


class PairTiming(NamedTuple):
    """What :func:`bench_pair` / :func:`bench_best_static` measured.

    Attributes:
        static_ms, dynamic_ms: median wall-clock milliseconds of each (the
            static one in ``static_layout``).
        speedup: median over the repeats of the pair's wall-clock ratio
            static / dynamic.
        cpu_speedup: the same with process CPU time (robust to other
            processes sharing the cores; see docs/benchmarks.md).
        static_layout: the static input's memory format, a key of
            :data:`~laud_mm.models.layers.backbone.STATIC_LAYOUTS`
            (``'as given'`` from :func:`bench_pair`).
        static_layout_ms: median wall-clock ms of the static function in
            every timed format (layout -> ms).
    """
    static_ms: float
    dynamic_ms: float
    speedup: float
    cpu_speedup: float
    static_layout: str = 'as given'
    static_layout_ms: Optional[Dict[str, float]] = None


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
    return _bench({'as given': x}, static_fn, dyn_fn, x, warmup, repeats)


def bench_best_static(static_fn: Callable, dyn_fn: Callable,
                      x: torch.Tensor, warmup: int, repeats: int,
                      layouts: Sequence[str] = tuple(STATIC_LAYOUTS)
                      ) -> PairTiming:
    """:func:`bench_pair` against the faster memory format of the static
    network: each round times ``static_fn`` on ``x`` converted to every
    format of ``layouts`` (converted once, before the timing: a deployed
    static network receives its input in its format), then ``dyn_fn(x)``
    on ``x`` as given. The format with the smaller median wall-clock time
    is the baseline; the speedups are the medians of the per-round ratios
    against it.

    Args:
        x: (N, C, H, W) input.
        layouts: keys of
            :data:`~laud_mm.models.layers.backbone.STATIC_LAYOUTS`.

    Returns:
        :class:`PairTiming` with ``static_layout`` (the faster format) and
        ``static_layout_ms`` (every format's median ms).

    Raises:
        ValueError: an unknown layout, or ``x`` not 4-D.
    """
    return _bench(static_inputs(x, layouts), static_fn, dyn_fn, x, warmup,
                  repeats)


def static_inputs(x: torch.Tensor,
                  layouts: Sequence[str] = tuple(STATIC_LAYOUTS)
                  ) -> Dict[str, torch.Tensor]:
    """``x`` converted once to every memory format of ``layouts``, the
    inputs the static network is timed on (a deployed static network
    receives its input in its format).

    Args:
        x: (N, C, H, W) input.
        layouts: keys of
            :data:`~laud_mm.models.layers.backbone.STATIC_LAYOUTS`.

    Returns:
        layout -> x in that format (x itself where it already is).

    Raises:
        ValueError: an unknown or empty ``layouts`` (naming it), or ``x``
            not 4-D.
    """
    bad = [k for k in layouts if k not in STATIC_LAYOUTS]
    if bad or not layouts:
        raise ValueError(f'layouts={list(layouts)} must be keys of '
                         f'{list(STATIC_LAYOUTS)}')
    if x.dim() != 4:
        raise ValueError(f'x must be (N, C, H, W), got {tuple(x.shape)}')
    return {k: x.contiguous(memory_format=STATIC_LAYOUTS[k]) for k in layouts}


def _bench(inputs: Dict, static_fn: Callable, dyn_fn: Callable, x,
           warmup: int, repeats: int) -> PairTiming:
    """Rounds of ``static_fn`` on every input of ``inputs`` (layout
    -> input), then ``dyn_fn(x)``; see :func:`bench_best_static`."""
    with torch.no_grad():
        for _ in range(warmup):
            for xs in inputs.values():
                static_fn(xs)
            dyn_fn(x)
        ts = {layout: [] for layout in inputs}
        td = []
        for _ in range(repeats):
            for layout, xs in inputs.items():
                ts[layout].append(timed(static_fn, xs))
            td.append(timed(dyn_fn, x))
    med = statistics.median
    by_layout = {layout: med(t[0] for t in v) * 1e3
                 for layout, v in ts.items()}
    best = min(by_layout, key=by_layout.get)
    s = ts[best]
    return PairTiming(
        by_layout[best], med(t[0] for t in td) * 1e3,
        med(a[0] / max(d[0], 1e-12) for a, d in zip(s, td)),
        med(a[1] / max(d[1], 1e-9) for a, d in zip(s, td)),
        static_layout=best, static_layout_ms=by_layout)


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
