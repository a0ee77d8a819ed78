"""Host cost of the dynamic paths: operators dispatched per block.

On a GPU the dynamic paths are host-bound (docs/benchmarks.md, "CUDA": 20 -
31 ms of host time per R50 forward at batch 128 on an H200, more than the
16 ms of GPU work of layer skipping at r = 0.25), and on a CPU a small
input (batch 1 at 224 px) pays the same per-operator cost. Every operator
the Python side dispatches costs host time whatever its size, so the count
of dispatched operators per block is the machine-independent measure of
that cost, and it can be taken without a GPU: the CUDA paths' logic runs on CPU tensors with
``laud_mm.ops.policy.DEVICE_PATH_ON_CPU`` (the CPU kernels and PyTorch
references stand in for the CUDA kernels; a compiled laud_mm kernel is not
an ATen operator and is not counted, exactly as its CUDA twin is one
launch).

:func:`count_dispatch` runs a LAUD-ResNet's blocks one by one on the
backbone's own intermediate inputs (random gates forced at the FLOPs-based
rate r, as every benchmark) and counts, under ``torch.profiler``, the ATen
operators each block dispatches: the top-level ones (those without an ATen
caller: the Python side's, plus the few that laud_mm's compiled kernels
call themselves, such as an output allocation, and ``tolist``'s
conjugate / negation checks) and all of them (including the operators
they call in turn; on a GPU each is dispatcher work, and most launch a
kernel). The calls into laud_mm's kernels are not ATen operators and are
not counted; with the CUDA logic on CPU tensors the CPU stand-ins'
internal calls are, so those rows are approximate. The static BN-folded
block is the reference. The wall time per block (median of ``repeats``
calls, one thread) is printed beside the counts; on the tiny input used
by default it is mostly host time.

Source: engineering of the paper's sec. 3.4 operators (the fused CUDA
operators it assumes dispatch one kernel per operator and block).
"""
import statistics
from typing import Dict, List, Sequence

import torch

from ..forced_gates import force_random_gates
from ..timing import wall_ms
from .common import PARADIGMS, Column, header, table_row
from .resnet import build, folded_stem

#: the dynamic paths counted: the CPU path, and the CUDA path's logic on CPU
#: tensors (``policy.DEVICE_PATH_ON_CPU``)
PATHS = ('cpu', 'cuda')

COLUMNS = [
    Column('paradigm', lambda r: r['paradigm']),
    Column('path', lambda r: 'CUDA (logic on CPU)' if r['path'] == 'cuda'
           else 'CPU'),
    Column('r', lambda r: f"{r['rate']:.2f}"),
    Column('top-level ops / block', lambda r: f"{r['top_ops']:.1f}"),
    Column('all ATen ops / block', lambda r: f"{r['all_ops']:.1f}"),
    Column('static: top-level / all', lambda r:
           f"{r['static_top_ops']:.1f} / {r['static_all_ops']:.1f}"),
    Column('us / block (static)', lambda r:
           f"{r['us']:.0f} ({r['static_us']:.0f})"),
]


def _ops(fn) -> tuple:
    """(top-level ATen operators, all ATen operators) one call of ``fn``
    dispatches."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = [e for e in prof.events() if e.name.startswith('aten::')]
    return sum(e.cpu_parent is None for e in events), len(events)


def count_dispatch(depth: int = 50,
                   paradigms: Sequence[str] = ('spatial', 'channel',
                                               'layer'),
                   rates: Sequence[float] = (0.5, 1.0), batch: int = 2,
                   size: int = 64, paths: Sequence[str] = PATHS,
                   repeats: int = 20) -> List[Dict]:
    """Operators dispatched per block by each dynamic path of
    LAUD-ResNet-``depth`` (see the module docstring), mean over the blocks.

    Args:
        depth: ResNet depth.
        paradigms, rates: the configurations (random gates at the
            FLOPs-based rate r, seed 1).
        batch, size: the input, (batch, 3, size, size).
        paths: 'cpu' and / or 'cuda' (its logic on CPU tensors).
        repeats: timed calls per block (median).

    Returns:
        one dict per (paradigm, path, rate): top_ops, all_ops (operators
        per block), static_top_ops, static_all_ops, us and static_us
        (median wall microseconds per block, 1 thread).

    Raises:
        ValueError: an unknown path or paradigm, a rate outside [0, 1],
            batch, size or repeats not an int >= 1 (naming the option).
    """
    from ...models.resnet.dynamic import static_bottleneck_forward
    from ...ops import policy
    bad = sorted(set(paths) - set(PATHS))
    if bad:
        raise ValueError(f'paths={bad} must be among {list(PATHS)}')
    bad = sorted(set(paradigms) - set(PARADIGMS))
    if bad:
        raise ValueError(f'paradigms={bad} must be among '
                         f'{sorted(PARADIGMS)}')
    for name, v in dict(batch=batch, size=size, repeats=repeats).items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f'{name}={v!r} must be an int >= 1')
    for r in rates:
        if not 0.0 <= r <= 1.0:
            raise ValueError(f'rate={r!r} must lie in [0, 1]')
    threads = torch.get_num_threads()
    saved = policy.DEVICE_PATH_ON_CPU
    torch.set_num_threads(1)
    rows = []
    try:
        x = torch.randn(batch, 3, size, size)
        for paradigm in paradigms:
            net = build(depth, paradigm)
            stem = folded_stem(net)
            for rate in rates:
                force_random_gates(net, rate, batch, (size, size), seed=1)
                for path in paths:
                    policy.DEVICE_PATH_ON_CPU = path == 'cuda'
                    acc = dict(top_ops=0., all_ops=0., static_top_ops=0.,
                               static_all_ops=0., us=0., static_us=0.)
                    with torch.no_grad():
                        t = stem(x)
                        for blk in net.blocks:
                            # (outside owned_block_inputs a block never
                            # writes into its input: t is reused)
                            def dyn(b=blk, t=t):
                                return b(t)

                            def static(b=blk, t=t):
                                return static_bottleneck_forward(b, t)
                            dyn(), static()  # BN folds, caches
                            top, every = _ops(dyn)
                            s_top, s_every = _ops(static)
                            acc['top_ops'] += top
                            acc['all_ops'] += every
                            acc['static_top_ops'] += s_top
                            acc['static_all_ops'] += s_every
                            acc['us'] += 1e3 * statistics.median(
                                wall_ms(dyn) for _ in range(repeats))
                            acc['static_us'] += 1e3 * statistics.median(
                                wall_ms(static) for _ in range(repeats))
                            t = static_bottleneck_forward(blk, t)
                    nb = len(net.blocks)
                    rows.append(dict(depth=depth, paradigm=paradigm,
                                     path=path, rate=rate,
                                     batch=batch, size=size,
                                     **{k: v / nb for k, v in acc.items()}))
    finally:
        policy.DEVICE_PATH_ON_CPU = saved
        torch.set_num_threads(threads)
    return rows


def format_dispatch(rows: Sequence[Dict]) -> str:
    """The markdown table of :func:`count_dispatch`'s rows."""
    return '\n'.join([header(COLUMNS)] + [table_row(COLUMNS, r)
                                          for r in rows])
