"""What the backbone benchmarks share: the option checks, the exactness
check, the table columns (:class:`Column`: the timing columns, wall-clock
speedup first, are written once here), printing and saving a timing table
over a list of thread counts (every family); for the CNN backbones
(LAUD-ResNet, LAUD-RegNetY) also the default granularity per paradigm, the
whole-backbone static and dynamic forwards, the backbone FLOPs ratio and one
timed comparison at a forced activation rate."""
import contextlib
import json
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

from ..forced_gates import force_random_gates
from ..timing import PairTiming, bench_best_static, machine_line

#: granularity per paradigm of the benchmarked backbones (layer: none,
#: channel G = 2-2-2-2, spatial S = 4-4-2-1)
PARADIGMS = {'layer': None, 'channel': (2, 2, 2, 2), 'spatial': (4, 4, 2, 1)}


def static_forward(net, stem: Callable, x: torch.Tensor,
                   block_fn: Callable) -> torch.Tensor:
    """``stem(x)``, then ``block_fn(block, x)`` (a BN-folded static block
    forward) for every block of ``net.blocks``."""
    x = stem(x)
    for blk in net.blocks:
        x = block_fn(blk, x)
    return x


def dynamic_forward(net, x: torch.Tensor) -> torch.Tensor:
    """The backbone's own ``forward``, as a user runs it (its input check,
    its BN-folded stem, every block's dynamic forward with the host work
    planned), fed the backbone's ``dynamic_memory_format`` when it has one
    (the conversion of ``x`` timed with the forward). The static side
    (:func:`static_forward`) runs no input check, as a deployed static
    network does not.

    Args:
        net: a LAUD CNN backbone in eval mode with dynamic inference on,
            returning its last stage (the default ``out_indices``).
        x: (N, 3, H, W) images.

    Returns:
        the last stage's output (N, C, H', W').
    """
    if hasattr(net, 'dynamic_memory_format'):
        x = x.contiguous(memory_format=net.dynamic_memory_format(x))
    return net(x)[-1]


@contextlib.contextmanager
def dynamic_layout(nchw: bool):
    """Within the context, with ``nchw`` the backbones' dynamic paths run in
    NCHW (``laud_mm.ops.policy.CHANNELS_LAST_CPU`` off: their
    ``dynamic_memory_format`` says NCHW), for the benchmarks'
    ``--dynamic-nchw`` comparisons; the switch is restored afterwards. The
    static baseline still takes the faster format."""
    from laud_mm.ops import policy
    prev = policy.CHANNELS_LAST_CPU
    if nchw:
        policy.CHANNELS_LAST_CPU = False
    try:
        yield
    finally:
        policy.CHANNELS_LAST_CPU = prev


def backbone_flops_ratio(net, hw: Tuple[int, int]) -> float:
    """Dynamic / static FLOPs of the whole backbone (stem + blocks) after a
    forward (blocks' ``last_stats``); its inverse is the ideal speedup."""
    from laud_mm.structures import flops as flops_lib
    stem = float(flops_lib.stem_flops(net.stem_geometry(hw)))
    dyn = stem + sum(float(b.last_stats['flops'].mean()) for b in net.blocks)
    dense = stem + sum(b.last_stats['dense'] for b in net.blocks)
    return dyn / dense


@dataclass(frozen=True)
class Column:
    """One column of a benchmark table.

    Attributes:
        title: the header cell.
        cell: row dict -> the cell's text.
    """
    title: str
    cell: Callable[[Dict], str]


def header(columns: Sequence[Column]) -> str:
    """The markdown header (title line and separator) of ``columns``."""
    return ('| ' + ' | '.join(c.title for c in columns) + ' |\n' +
            '|' + '---|' * len(columns))


def table_row(columns: Sequence[Column], row: Dict) -> str:
    """One markdown row of ``columns`` for a row dict."""
    return '| ' + ' | '.join(c.cell(row) for c in columns) + ' |'


def timing_columns(what: str = '', ms: str = '.1f') -> List[Column]:
    """The timing columns every backbone table has, in this order: static
    ms, dynamic ms, speedup (wall) - the headline -, speedup (CPU time)
    beside it. Rows carry ``static_ms``, ``dynamic_ms`` (wall-clock
    medians), ``speedup`` and ``cpu_speedup`` (medians of the per-pair
    ratios of wall-clock and of process CPU time,
    :func:`~laud_mm.analysis.timing.bench_pair`).

    Args:
        what: the timed part in the titles (e.g. ``'encoder '``).
        ms: format of the milliseconds.
    """
    sp = f'{what}speedup' if what else 'speedup'
    return [Column(f'static {what}ms', lambda r: f"{r['static_ms']:{ms}}"),
            Column(f'dynamic {what}ms', lambda r: f"{r['dynamic_ms']:{ms}}"),
            Column(f'{sp} (wall)', lambda r: f"{r['speedup']:.2f}x"),
            Column(f'{sp} (CPU time)', lambda r: f"{r['cpu_speedup']:.2f}x")]


#: the static baseline's memory format and both formats' times (rows
#: carry ``static_layout`` and ``static_layout_ms``, :func:`timing_keys`)
STATIC_LAYOUT = Column(
    'static layout (NCHW / channels_last ms)',
    lambda r: f"{r['static_layout']} ({r['static_layout_ms']['NCHW']:.1f} "
              f"/ {r['static_layout_ms']['channels_last']:.1f})")


def timing_keys(tm: PairTiming) -> Dict:
    """The row keys of a :class:`~laud_mm.analysis.timing.PairTiming`:
    static_ms, dynamic_ms, speedup, cpu_speedup, static_layout,
    static_layout_ms."""
    return dict(static_ms=tm.static_ms, dynamic_ms=tm.dynamic_ms,
                speedup=tm.speedup, cpu_speedup=tm.cpu_speedup,
                static_layout=tm.static_layout,
                static_layout_ms=tm.static_layout_ms)


#: the thread-count column (rows carry ``threads``)
THREADS = Column('threads', lambda r: str(r['threads']))


def leading_columns(backbone: Callable[[Dict], str],
                    image: Callable[[Dict], str] = lambda r:
                    f"{r['batch']}x{r['size']}x{r['size']}"
                    ) -> List[Column]:
    """The columns every backbone table starts with: backbone, input,
    paradigm, threads, r (rows carry ``paradigm``, ``threads``, ``rate``;
    by default ``batch`` and a square ``size``)."""
    return [Column('backbone', backbone), Column('input', image),
            Column('paradigm', lambda r: r['paradigm']), THREADS,
            Column('r', lambda r: f"{r['rate']:.2f}")]


def thread_counts(threads: Union[int, Sequence[int], None]) -> List[int]:
    """The ``--threads`` list: an int or a sequence, None = [1, all logical
    CPUs] (one thread and every core, the two settings a table reports).

    Raises:
        ValueError: a count < 1 (naming the option).
    """
    if threads is None:
        threads = sorted({1, os.cpu_count() or 1})
    elif isinstance(threads, int):
        threads = [threads]
    threads = [int(t) for t in threads]
    if not threads or any(t < 1 for t in threads):
        raise ValueError(f'--threads={threads} must be counts >= 1')
    return threads


def check_options(rates: Sequence[float], warmup: int = 0, **counts: int
                  ) -> None:
    """Refuse benchmark options out of range.

    Args:
        rates: activation rates, each in [0, 1] (``--rates``).
        warmup: untimed runs, >= 0 (``--warmup``).
        **counts: options that must be >= 1 (threads, repeats, batch,
            size), by their option name (``_`` for ``-``).

    Raises:
        ValueError: naming the option and its value.
    """
    for name, v in counts.items():
        if v < 1:
            raise ValueError(f'--{name.replace("_", "-")}={v} must be >= 1')
    if warmup < 0:
        raise ValueError(f'--warmup={warmup} must be >= 0')
    if any(not 0 <= r <= 1 for r in rates):
        raise ValueError(f'--rates={list(rates)} must lie in [0, 1]')


def check_exact(static_out: torch.Tensor, dynamic_out: torch.Tensor,
                rtol: float) -> None:
    """At r = 1 the dynamic path computes what the static one does.

    Raises:
        RuntimeError: outputs of different shapes, or max |static -
            dynamic| not within ``rtol`` x max |static| (a NaN anywhere
            included).
    """
    if static_out.shape != dynamic_out.shape:
        raise RuntimeError(f'dynamic output {tuple(dynamic_out.shape)} and '
                           f'static output {tuple(static_out.shape)} differ '
                           f'in shape at r = 1')
    diff = float((static_out - dynamic_out).abs().max())
    scale = float(static_out.abs().max())
    if not diff <= rtol * scale:
        raise RuntimeError(f'dynamic output differs from the static one at '
                           f'r = 1: max diff {diff:.3g} > {rtol} x max '
                           f'|static| ({scale:.3g})')


def timing_table(run: Callable[[int], List[Dict]], columns: Sequence[Column],
                 threads: Union[int, Sequence[int], None],
                 json_path: Optional[str] = None, backend: bool = True,
                 load: bool = True) -> List[Dict]:
    """Print the machine line (:func:`~laud_mm.analysis.timing.machine_line`
    with ``backend`` / ``load``) and the table header, then for each thread
    count set torch's threads and call ``run(threads)`` (which prints its
    rows, ``table_row(columns, row)``, as it measures them and puts
    ``threads`` in each); write all rows as JSON to ``json_path`` if given.
    The thread count is restored afterwards.

    Returns:
        the rows of every ``run``, in order.
    """
    counts = thread_counts(threads)
    prev = torch.get_num_threads()
    rows = []
    try:
        torch.set_num_threads(counts[0])
        print(machine_line(backend=backend, load=load,
                           threads=counts))
        print(header(columns))
        for t in counts:
            torch.set_num_threads(t)
            rows += run(t)
    finally:
        torch.set_num_threads(prev)
    if json_path:
        with open(json_path, 'w') as f:
            json.dump(rows, f, indent=1)
    return rows


def time_forced_rate(net, stem: Callable, static_block: Callable,
                     x: torch.Tensor, rate: float, rate_mode: str,
                     warmup: int, repeats: int
                     ) -> Tuple[float, float, float, float, float]:
    """Force random gates at ``rate`` in every block (seed 1,
    :func:`~laud_mm.analysis.forced_gates.force_random_gates`), check
    exactness at r = 1 (relative 1e-3), and time the whole static and
    dynamic backbones alternately, the static one in NCHW and in
    channels_last, the faster being the baseline
    (:func:`~laud_mm.analysis.timing.bench_best_static`; the dynamic one
    on ``x`` as given, NCHW, which :func:`dynamic_forward` converts to the
    backbone's own format within the timing). The blocks' ``last_stats``
    hold the dynamic forward's statistics afterwards.

    Args:
        net: a LAUD CNN backbone with ``dynamic_inference=True``, eval mode.
        stem: the BN-folded stem (callable).
        static_block: ``fn(block, x)``, the BN-folded static block forward.
        x: input (N, 3, H, W).
        rate: activation rate in [0, 1].
        rate_mode: 'flops' (per-block r_i) or 'density'.
        warmup, repeats: see :func:`~laud_mm.analysis.timing.bench_pair`.

    Returns:
        (realised rate, FLOPs ratio dynamic / static,
        :class:`~laud_mm.analysis.timing.PairTiming`).
    """
    n, hw = x.shape[0], tuple(x.shape[-2:])
    real = force_random_gates(net, rate, n, hw, seed=1, mode=rate_mode)
    with torch.no_grad():  # exactness spot check at r = 1
        b = dynamic_forward(net, x)
        if rate == 1.0:
            check_exact(static_forward(net, stem, x, static_block), b, 1e-3)
    ratio = backbone_flops_ratio(net, hw)
    timing = bench_best_static(
        lambda t: static_forward(net, stem, t, static_block),
        lambda t: dynamic_forward(net, t), x, warmup, repeats)
    return real, ratio, timing
