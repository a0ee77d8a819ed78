"""What the backbone benchmarks share: the option checks, the exactness
check, printing and saving a timing table (every family); for the CNN
backbones (LAUD-ResNet, LAUD-RegNetY) also the default granularity per
paradigm, the whole-backbone static and dynamic forwards, the backbone FLOPs
ratio and one timed comparison at a forced activation rate."""
import json
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..forced_gates import force_random_gates
from ..timing import bench_pair, machine_line

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


def dynamic_forward(net, stem: Callable, x: torch.Tensor) -> torch.Tensor:
    """Folded stem, then every block's dynamic forward, as the backbone's
    ``forward`` runs them (identity blocks own their input:
    :func:`~laud_mm.models.layers.dynamic.owned_block_inputs`)."""
    from laud_mm.models.layers.dynamic import owned_block_inputs
    x = stem(x)
    with owned_block_inputs(net.blocks):
        for blk in net.blocks:
            x = blk(x)
    return x


def backbone_flops_ratio(net, hw: Tuple[int, int]) -> float:
    """Dynamic / static FLOPs of the whole backbone (stem + blocks) after a
    forward (blocks' ``last_stats``); its inverse is the ideal speedup."""
    from laud_mm.structures import flops as flops_lib
    stem = float(flops_lib.stem_flops(net.stem_geometry(hw)))
    dyn = stem + sum(float(b.last_stats['flops'].mean()) for b in net.blocks)
    dense = stem + sum(b.last_stats['dense'] for b in net.blocks)
    return dyn / dense


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
        RuntimeError: max |static - dynamic| > ``rtol`` x max |static|.
    """
    diff = float((static_out - dynamic_out).abs().max())
    scale = float(static_out.abs().max())
    if diff > rtol * scale:
        raise RuntimeError(f'dynamic output differs from the static one at '
                           f'r = 1: max diff {diff:.3g} > {rtol} x max '
                           f'|static| ({scale:.3g})')


def timing_table(run: Callable[[], List[Dict]], header: str, threads: int,
                 json_path: Optional[str] = None, backend: bool = True,
                 load: bool = True) -> List[Dict]:
    """Set ``threads`` torch threads, print the machine line
    (:func:`~laud_mm.analysis.timing.machine_line` with ``backend`` /
    ``load``) and the table ``header``, call ``run()`` (which prints its
    rows as it measures them) and write its rows as JSON to ``json_path``
    if given.

    Returns:
        the rows ``run()`` returned.
    """
    torch.set_num_threads(threads)
    print(machine_line(backend=backend, load=load))
    print(header)
    rows = run()
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
    dynamic backbones alternately (:func:`~laud_mm.analysis.timing.
    bench_pair`). The blocks' ``last_stats`` hold the dynamic forward's
    statistics afterwards.

    Args:
        net: a LAUD CNN backbone with ``dynamic_inference=True``, eval mode.
        stem: the BN-folded stem (callable).
        static_block: ``fn(block, x)``, the BN-folded static block forward.
        x: input (N, 3, H, W).
        rate: activation rate in [0, 1].
        rate_mode: 'flops' (per-block r_i) or 'density'.
        warmup, repeats: see :func:`~laud_mm.analysis.timing.bench_pair`.

    Returns:
        (realised rate, FLOPs ratio dynamic / static, static ms, dynamic
        ms, CPU-time speedup).
    """
    n, hw = x.shape[0], tuple(x.shape[-2:])
    real = force_random_gates(net, rate, n, hw, seed=1, mode=rate_mode)
    with torch.no_grad():  # exactness spot check at r = 1
        b = dynamic_forward(net, stem, x)
        if rate == 1.0:
            check_exact(static_forward(net, stem, x, static_block), b, 1e-3)
    ratio = backbone_flops_ratio(net, hw)
    st, dy, cpu = bench_pair(
        lambda t: static_forward(net, stem, t, static_block),
        lambda t: dynamic_forward(net, stem, t), x, warmup, repeats)
    return real, ratio, st, dy, cpu
