"""Per-block latency of a LAUD CNN backbone measured inside the whole
forward, static and dynamic side by side.

:func:`~.resnet.per_block` times each block alone on a fresh copy of its
input. Inside the backbone a block runs under different conditions: an
identity block owns its input and writes into it
(:func:`~laud_mm.models.layers.dynamic.owned_block_inputs`), a dense
spatial block hands the next block's masker its logits
(:mod:`~laud_mm.models.layers.spatial_logit_record`), and each block finds
the caches as the previous one left them. :func:`block_times_in_network`
times the whole static and dynamic forwards alternately, each in the
memory format it is deployed in (the static network in its faster format,
as :func:`~laud_mm.analysis.timing.bench_best_static` picks it for the
whole forward; the dynamic one in the backbone's ``dynamic_memory_format``),
and takes a time stamp after the stem and after every block, so within
each forward the parts add up to the whole (the table's medians per part
need not), and their ratios show where the backbone's speedup is won or
lost.

Source: paper sec. 3.4 (the latency of each block adds up to the
backbone's).
"""
import statistics
import time
from typing import Callable, Dict, List, Sequence

import torch

from laud_mm.models.layers.backbone import STATIC_LAYOUTS

from ..timing import static_inputs
from .common import check_options


def _stamped_forward(blocks: Sequence, stem: Callable, x: torch.Tensor,
                     block_fn: Callable) -> List[tuple]:
    """Run ``stem`` then ``block_fn(block, t)`` for each block, taking
    (wall s, process CPU s) after the input and after each step.

    Returns:
        ``len(blocks) + 2`` time stamps (before the stem, after the stem,
        after each block).
    """
    stamps = [(time.perf_counter(), time.process_time())]
    t = stem(x)
    stamps.append((time.perf_counter(), time.process_time()))
    for blk in blocks:
        t = block_fn(blk, t)
        stamps.append((time.perf_counter(), time.process_time()))
    return stamps


def block_times_in_network(net, stem: Callable, static_block: Callable,
                           x: torch.Tensor, warmup: int, repeats: int,
                           layouts: Sequence[str] = tuple(STATIC_LAYOUTS)
                           ) -> List[Dict]:
    """Time every block of ``net`` within the whole static and dynamic
    forwards, each network in the memory format it is deployed in.

    The static forward runs ``static_block(block, t)`` on every block
    after ``stem``, on ``x`` converted to every format of ``layouts``
    (converted once, before the timing, as
    :func:`~laud_mm.analysis.timing.bench_best_static` does for the whole
    forward); the format whose whole forward has the smaller median
    wall-clock time is the baseline. The dynamic forward runs ``block(t)``
    inside :func:`~laud_mm.models.layers.dynamic.owned_block_inputs`, as
    the backbone's own ``forward`` does, on ``x`` in the backbone's
    ``dynamic_memory_format`` (channels_last where the fused CPU kernels
    run, else NCHW; NCHW with ``--dynamic-nchw``; the conversion not
    timed). After ``warmup`` untimed rounds, ``repeats`` rounds (the
    static forward in each format, then the dynamic one) run under
    ``torch.no_grad``, each forward stamped after the stem and every
    block. Forced gates (tests, benchmarks) set on the blocks' maskers
    beforehand apply.

    Args:
        net: a LAUD CNN backbone (``blocks``, ``dynamic_memory_format``)
            with ``dynamic_inference=True``, eval mode.
        stem: the BN-folded stem (callable, (N, 3, H, W) -> the first
            block's input, in its input's memory format).
        static_block: ``fn(block, x)``, the BN-folded static block forward.
        x: (N, 3, H, W) input.
        warmup: untimed rounds, >= 0.
        repeats: timed rounds, >= 1.
        layouts: the static network's formats, keys of
            :data:`~laud_mm.models.layers.backbone.STATIC_LAYOUTS`.

    Returns:
        one dict per part, the stem first (``block='stem'``), then each
        block (``'stage.index'``), then the whole forward
        (``block='total'``): block, in_shape (the part's input shape),
        static_ms, dynamic_ms (median wall-clock ms; static: in the
        baseline format), speedup and cpu_speedup (medians of the per-pair
        ratios of wall-clock and of process CPU time), static_layout (the
        baseline format, the same in every row).

    Raises:
        ValueError: ``warmup`` < 0 or ``repeats`` < 1 (naming them), an
            unknown layout, or ``x`` not 4-D.
    """
    from laud_mm.models.layers.dynamic import owned_block_inputs
    check_options([], warmup=warmup, repeats=repeats)
    xs = static_inputs(x, layouts)
    blocks = list(net.blocks)
    xd = x.contiguous(memory_format=net.dynamic_memory_format(x))

    def static(t):
        return _stamped_forward(blocks, stem, t, static_block)

    def dynamic():
        with owned_block_inputs(blocks):
            return _stamped_forward(blocks, stem, xd, lambda b, t: b(t))

    shapes = [tuple(x.shape)]
    with torch.no_grad():
        t = stem(x)
        for blk in blocks:
            shapes.append(tuple(t.shape))
            t = static_block(blk, t)
        for _ in range(warmup):
            for t in xs.values():
                static(t)
            dynamic()
        rounds = [({k: static(t) for k, t in xs.items()}, dynamic())
                  for _ in range(repeats)]
    med = statistics.median
    # the baseline: the format with the faster whole static forward
    best = min(layouts, key=lambda k: med(st[k][-1][0] - st[k][0][0]
                                          for st, _ in rounds))
    pairs = [(st[best], dy) for st, dy in rounds]
    names = ['stem'] + [f'{b.stage}.{b.index}' for b in blocks]
    # part i spans stamps i .. i + 1; 'total' spans the first and last
    spans = [(i, i + 1) for i in range(len(names))] + [(0, len(names))]
    shapes.append(tuple(x.shape))
    out = []
    for name, shape, (a, b) in zip(names + ['total'], shapes, spans):
        s = [(st[b][0] - st[a][0], st[b][1] - st[a][1]) for st, _ in pairs]
        d = [(dy[b][0] - dy[a][0], dy[b][1] - dy[a][1]) for _, dy in pairs]
        out.append(dict(
            block=name, in_shape=shape,
            static_ms=med(v[0] for v in s) * 1e3,
            dynamic_ms=med(v[0] for v in d) * 1e3,
            speedup=med(p[0] / max(q[0], 1e-12) for p, q in zip(s, d)),
            cpu_speedup=med(p[1] / max(q[1], 1e-9) for p, q in zip(s, d)),
            static_layout=best))
    return out
