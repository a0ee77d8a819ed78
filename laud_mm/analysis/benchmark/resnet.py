"""Measured latency of LAUD-ResNet dynamic inference against the static
(BN-folded) backbone, side by side in one run.

For each backbone (LAUD-ResNet-50 / 101), input size (224 px classification
batch, detection-sized batch) and paradigm (layer; channel G = 2-2-2-2;
spatial S = 4-4-2-1), the gates of every block are forced to random patterns
at activation rate r: by default the paper's FLOPs-based per-block rate r_i
(FLOPs computed / dense FLOPs of the block including the masker and the dense
downsample; docs/method.md sec. 2), so each block keeps the number of patches /
channel groups per sample (samples for layer skipping) whose r_i is closest
to r; ``rate_mode='density'`` uses the mask density instead. The table gives
the realised mean r_i and the ideal speedup (static / dynamic FLOPs of the
whole backbone, stem included). The whole backbone (BN-folded stem + 16 / 33
blocks) is timed:

- static: every block dense with BN folded (``static_bottleneck_forward``);
- dynamic: ``backbone(x)`` with ``dynamic_inference=True``, the forward a
  user runs (its input check, its BN-folded stem, every block's eval
  path: :func:`.common.dynamic_forward`; the per-block statistics are
  counted when read, after the timing:
  :class:`laud_mm.models.layers.BlockStats`).

Static and dynamic runs alternate (after warm-up) and the median of the
repeats is reported, so the ratios are robust to load on shared machines.
:func:`per_block` times each block alone for one configuration;
:mod:`.spatial_steps` splits each spatial block's dynamic time into its
steps. Command line: ``tools/analysis_tools/benchmark_latency.py``.

Source: paper sec. 3.4 and sec. 4 (latency of LAUD-ResNet).
"""
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from laud_mm.models import LAUDResNet
from laud_mm.models.layers.folding import LayoutWeight, fold_conv_bn
from laud_mm.models.resnet.backbone import RESNET_ARCHS
from laud_mm.models.resnet.dynamic import static_bottleneck_forward
from laud_mm.ops.max_pool import max_pool2d

from ..forced_gates import force_random_gates
from ..timing import bench_best_static
from . import spatial_steps
from .in_network import block_times_in_network
from .common import (PARADIGMS, STATIC_LAYOUT, THREADS, Column,
                     check_options, dynamic_layout, header, timing_keys,
                     leading_columns, table_row, thread_counts,
                     time_forced_rate, timing_columns, timing_table)

#: input of each size key: (batch, (H, W)); the 224 px batch is
#: ``batch`` of :func:`benchmark_resnet`
SIZES = {'224': (8, (224, 224)), 'det': (1, (800, 1216))}

#: the columns of the backbone table (rows of :func:`run`)
COLUMNS = leading_columns(
    lambda r: f"R{r['depth']}",
    lambda r: f"{r['batch']}x{r['hw'][0]}x{r['hw'][1]}") + [
    Column('realised mean r_i', lambda r: f"{r['rate_real']:.3f}"),
    *timing_columns(), STATIC_LAYOUT,
    Column('ideal (static / dynamic FLOPs)',
           lambda r: f"{1 / r['flops_ratio']:.2f}x")]
HEADER = header(COLUMNS)
#: the columns :func:`run` adds with ``compare_unplanned``: the dynamic
#: path without the per-forward plan (``policy.FORWARD_PLAN`` off), timed
#: against the static network in its own pairs
UNPLANNED_COLUMNS = [
    Column('unplanned speedup (wall)',
           lambda r: f"{r['unplanned_speedup']:.2f}x"),
    Column('unplanned speedup (CPU time)',
           lambda r: f"{r['unplanned_cpu_speedup']:.2f}x")]
#: how :func:`per_block` times the blocks (``--per-block``)
PER_BLOCK_MODES = ('alone', 'in-network')
#: the columns of the per-block table (rows of :func:`per_block`)
BLOCK_COLUMNS = [
    Column('paradigm', lambda b: b['paradigm']), THREADS,
    Column('block', lambda b: b['block']),
    Column('input', lambda b: 'x'.join(map(str, b['in_shape']))),
    *timing_columns(ms='.2f'),
    Column('static layout', lambda b: b['static_layout'])]


def folded_stem(net: LAUDResNet):
    """BN-folded stem (conv 7x7 s2 + ReLU + max-pool) of a ResNet, as a
    callable, its weight in the input's memory format
    (:class:`~laud_mm.models.layers.folding.LayoutWeight`, as the
    backbone's own stem); the pool is the model's own
    (:func:`laud_mm.ops.max_pool.max_pool2d`).

    Raises:
        ValueError: ``net.deep_stem`` is set.
    """
    if net.deep_stem:
        raise ValueError('deep_stem is not supported by the benchmark')
    w, b = fold_conv_bn(net.conv1, net.norm1)
    w = LayoutWeight(w)

    def stem(x):
        x = F.conv2d(x, w.like(x), b, 2, 3).relu_()
        return max_pool2d(x, 3, 2, 1)
    return stem


def build(depth: int, paradigm: str, seed: int = 0) -> LAUDResNet:
    """LAUD-ResNet-``depth`` of ``paradigm`` (granularity of
    :data:`~.common.PARADIGMS`), dynamic inference, eval mode, weights from
    ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    net = LAUDResNet(depth, paradigm=paradigm,
                     granularity=PARADIGMS[paradigm],
                     dynamic_inference=True)
    net.eval()  # mmdet's ResNet.train() returns None: no chaining
    return net


def run(depths: Sequence[int], sizes: Sequence[str],
        paradigms: Sequence[str], rates: Sequence[float], batch: int,
        rate_mode: str, warmup: int, repeats: int,
        compare_unplanned: bool = False) -> List[Dict]:
    """Time every (depth, size, paradigm, rate) at torch's current thread
    count; prints each row (:func:`fmt_row`) as it is measured.

    Args:
        compare_unplanned: after each row's pairs, time the same gates
            again with ``laud_mm.ops.policy.FORWARD_PLAN`` off (every
            block makes its host-side choices at its own call,
            :mod:`laud_mm.models.layers.forward_plan`), each dynamic
            forward paired with a static one as in the row.

    Returns:
        one dict per row: depth, size, batch, hw, paradigm, threads, rate,
        rate_real, flops_ratio, rate_mode, static_ms (the faster static
        memory format), dynamic_ms, speedup (wall), cpu_speedup,
        static_layout, static_layout_ms (:func:`~.common.timing_keys`);
        with ``compare_unplanned`` also unplanned_ms, unplanned_speedup,
        unplanned_cpu_speedup.
    """
    rows = []
    for depth in depths:
        for size in sizes:
            n, hw = SIZES[size]
            if size == '224':
                n = batch
            x = torch.randn(n, 3, *hw)
            for paradigm in paradigms:
                net = build(depth, paradigm)
                stem = folded_stem(net)
                for rate in rates:
                    real, ratio, tm = time_forced_rate(
                        net, stem, static_bottleneck_forward, x, rate,
                        rate_mode, warmup, repeats)
                    row = dict(depth=depth, size=size, batch=n, hw=hw,
                               paradigm=paradigm,
                               threads=torch.get_num_threads(), rate=rate,
                               rate_real=real, flops_ratio=ratio,
                               rate_mode=rate_mode, **timing_keys(tm))
                    if compare_unplanned:
                        row.update(_time_unplanned(net, stem, x, rate,
                                                   rate_mode, warmup,
                                                   repeats))
                    rows.append(row)
                    print(fmt_row(row), flush=True)
    return rows


def _time_unplanned(net, stem, x, rate, rate_mode, warmup, repeats
                    ) -> Dict[str, float]:
    """:func:`time_forced_rate` with ``policy.FORWARD_PLAN`` off: the row
    keys of ``run(compare_unplanned=True)``."""
    from laud_mm.ops import policy
    prev = policy.FORWARD_PLAN
    policy.FORWARD_PLAN = False
    try:
        _, _, tm = time_forced_rate(net, stem, static_bottleneck_forward, x,
                                    rate, rate_mode, warmup, repeats)
    finally:
        policy.FORWARD_PLAN = prev
    return dict(unplanned_ms=tm.dynamic_ms, unplanned_speedup=tm.speedup,
                unplanned_cpu_speedup=tm.cpu_speedup)


def _check_per_block_mode(mode: str) -> None:
    """Refuse a ``--per-block`` mode outside :data:`PER_BLOCK_MODES`.

    Raises:
        ValueError: naming the option and the value.
    """
    if mode not in PER_BLOCK_MODES:
        raise ValueError(f'--per-block={mode!r} must be one of '
                         f'{PER_BLOCK_MODES}')


def per_block(depth: int, paradigms: Sequence[str], batch: int,
              block_rate: float, rate_mode: str, repeats: int,
              mode: str = 'alone', warmup: int = 2) -> List[Dict]:
    """Per-block static vs dynamic at one rate (``depth``, 224 px), each
    network in the memory format it is deployed in, as the whole-backbone
    rows compare them: the static one in its faster format, the dynamic
    one in the backbone's ``dynamic_memory_format`` (channels_last where
    the fused CPU kernels run, else NCHW; NCHW with ``--dynamic-nchw``).

    Args:
        mode: 'alone': each block timed on its own input (the static
            network's activations), 1 warm-up pair, the static block in
            each format (:func:`~laud_mm.analysis.timing.bench_best_static`,
            the faster per block); 'in-network': every block stamped within
            the whole forwards
            (:func:`~.in_network.block_times_in_network`, ``warmup``
            pairs; the static format whose whole forward is faster), with
            a 'stem' and a 'total' row.

    Returns:
        one dict per (paradigm, block): paradigm, threads, mode, block
        ('stage.index'), in_shape, static_ms, dynamic_ms, speedup,
        cpu_speedup, static_layout.

    Raises:
        ValueError: an unknown ``mode`` (naming ``--per-block``).
    """
    _check_per_block_mode(mode)
    hw = SIZES['224'][1]
    x = torch.randn(batch, 3, *hw)
    out = []
    for paradigm in paradigms:
        net = build(depth, paradigm)
        stem = folded_stem(net)
        force_random_gates(net, block_rate, batch, hw, seed=1,
                           mode=rate_mode)
        if mode == 'in-network':
            for r in block_times_in_network(
                    net, stem, static_bottleneck_forward, x, warmup,
                    repeats):
                out.append(dict(r, paradigm=paradigm, mode=mode,
                                threads=torch.get_num_threads()))
            continue
        with torch.no_grad():
            inputs, t = [], stem(x)
            for blk in net.blocks:
                inputs.append(t)
                t = static_bottleneck_forward(blk, t)
        for blk, xin in zip(net.blocks, inputs):
            xd = xin.contiguous(memory_format=net.dynamic_memory_format(xin))
            tm = bench_best_static(
                lambda t: static_bottleneck_forward(blk, t), blk, xd, 1,
                repeats)
            out.append(dict(paradigm=paradigm, mode=mode,
                            threads=torch.get_num_threads(),
                            block=f'{blk.stage}.{blk.index}',
                            in_shape=tuple(xin.shape), static_ms=tm.static_ms,
                            dynamic_ms=tm.dynamic_ms, speedup=tm.speedup,
                            cpu_speedup=tm.cpu_speedup,
                            static_layout=tm.static_layout))
    return out


def table_columns(compare_unplanned: bool = False) -> List[Column]:
    """The backbone table's columns: :data:`COLUMNS`, with
    :data:`UNPLANNED_COLUMNS` after them when ``compare_unplanned``."""
    return COLUMNS + (UNPLANNED_COLUMNS if compare_unplanned else [])


def fmt_row(r: Dict) -> str:
    """One markdown row of the backbone table for a row of :func:`run`
    (:data:`HEADER`'s columns, plus the unplanned ones when the row has
    them)."""
    return table_row(table_columns('unplanned_speedup' in r), r)


def format_blocks(blocks: Sequence[Dict]) -> str:
    """Markdown table of :func:`per_block` rows."""
    return '\n'.join([header(BLOCK_COLUMNS)] +
                     [table_row(BLOCK_COLUMNS, b) for b in blocks])


def plot(rows: Sequence[Dict], path: str, key: str = 'speedup') -> str:
    """Speedup (``key``: 'speedup' wall, 'cpu_speedup' CPU time) against the
    activation rate, one panel per (depth, size), one line per paradigm and
    thread count (the most threads solid) with the paradigm's FLOPs ideal
    and 1/r; writes a PNG and returns ``path``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    confs = sorted({(r['depth'], r['size']) for r in rows})
    fig, axes = plt.subplots(1, len(confs), figsize=(5 * len(confs), 4),
                             squeeze=False)
    for ax, (depth, size) in zip(axes[0], confs):
        sub = [r for r in rows if (r['depth'], r['size']) == (depth, size)]
        rates = sorted({r['rate'] for r in sub})
        ax.plot(rates, [1 / r for r in rates], 'k--', lw=0.8, label='1/r')
        counts = sorted({r.get('threads', 1) for r in sub})
        for i, p in enumerate(PARADIGMS):
            for j, t in enumerate(counts):
                pts = sorted((r['rate'], r[key], 1 / r['flops_ratio'])
                             for r in sub if r['paradigm'] == p and
                             r.get('threads', 1) == t)
                if not pts:
                    continue
                xs, ys, ideal = zip(*pts)
                # the most threads solid, fewer dashed
                ax.plot(xs, ys, 'o-' if t == counts[-1] else 's--',
                        color=f'C{i}', label=f'{p}, {t} thr.')
                if j == 0:
                    ax.plot(xs, ideal, ':', color=f'C{i}',
                            label=f'{p} ideal (FLOPs)')
        ax.axhline(1.0, color='grey', lw=0.5)
        n, hw = sub[0]['batch'], sub[0]['hw']
        ax.set_title(f'LAUD-R{depth}, {n}x3x{hw[0]}x{hw[1]}')
        ax.set_xlabel('activation rate r')
        ax.set_ylabel(f'{key} over static (BN folded)')
        ax.set_ylim(0, min(6, max(1 / min(rates), 2) + 0.5))
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def benchmark_resnet(depths: Optional[Sequence[int]] = None,
                     sizes: Optional[Sequence[str]] = None,
                     paradigms: Sequence[str] = tuple(PARADIGMS),
                     rates: Sequence[float] = (0.1, 0.25, 0.5, 0.75, 1.0),
                     batch: int = 8,
                     threads: Union[int, Sequence[int], None] = None,
                     warmup: int = 2, repeats: int = 7,
                     rate_mode: str = 'flops',
                     per_block_table: bool = False,
                     per_block_mode: str = 'alone', block_rate: float = 0.5,
                     spatial_breakdown: bool = False,
                     spatial_dense_threshold: Optional[float] = None,
                     compare_unplanned: bool = False,
                     dynamic_nchw: bool = False,
                     quick: bool = False,
                     plot_path: Optional[str] = None,
                     json_path: Optional[str] = None) -> Dict[str, list]:
    """The whole LAUD-ResNet benchmark: prints the machine line and the
    table (every configuration at each thread count), writes the plots, the
    per-block and spatial-step tables on request, and the JSON.

    Args:
        depths, sizes, paradigms, rates: the grid (``depths`` of
            :data:`~laud_mm.models.resnet.backbone.RESNET_ARCHS`, default 50
            and 101; ``sizes`` keys of
            :data:`SIZES`, default both).
        batch: batch of the 224 px input (detection input: 1).
        threads: torch thread counts (an int or a list; None: 1 and every
            logical CPU), each row measured at each.
        warmup, repeats: see :func:`~laud_mm.analysis.timing.bench_pair`.
        rate_mode: 'flops' (the paper's per-block r_i) or 'density'.
        per_block_table: add the per-block table (first depth, 224 px,
            ``block_rate``).
        per_block_mode: 'alone' or 'in-network' (see :func:`per_block`).
        block_rate: rate of the per-block and spatial-step tables.
        spatial_breakdown: add the spatial-step table
            (:func:`~.spatial_steps.spatial_breakdown`).
        spatial_dense_threshold: override of
            ``laud_mm.ops.policy.SPATIAL_DENSE_THRESHOLD`` during the run
            (> 0; > 1: never dense).
        compare_unplanned: add the dynamic path without the per-forward
            plan to every row (:func:`run`).
        dynamic_nchw: run the dynamic path in NCHW
            (``laud_mm.ops.policy.CHANNELS_LAST_CPU`` off during the run;
            the static baseline still takes the faster format).
        quick: R50, 224 px only (``depths`` / ``sizes`` not given).
        plot_path: PNG of the wall-clock speedups (``*_cpu.png`` beside it:
            CPU time); falsy: no plot.
        json_path: where to write rows, blocks and spatial steps as JSON.

    Returns:
        dict(rows=..., blocks=..., spatial_steps=...) (see :func:`run`,
        :func:`per_block`, :func:`~.spatial_steps.spatial_breakdown`).

    Raises:
        ValueError: an option out of range (names the option and value).
    """
    check_options(rates, warmup=warmup, repeats=repeats, batch=batch)
    threads = thread_counts(threads)
    if spatial_dense_threshold is not None and spatial_dense_threshold <= 0:
        raise ValueError('--spatial-dense-threshold must be > 0, got '
                         f'{spatial_dense_threshold}')
    _check_per_block_mode(per_block_mode)
    if not 0 <= block_rate <= 1:
        raise ValueError(f'--block-rate={block_rate} must lie in [0, 1]')
    if quick:
        if depths is not None or sizes is not None:
            raise ValueError(f'--quick (R50, 224 px) cannot be combined with '
                             f'--depths={depths} / --sizes={sizes}')
        depths, sizes = [50], ['224']
    depths = [50, 101] if depths is None else list(depths)
    sizes = ['224', 'det'] if sizes is None else list(sizes)
    bad = [d for d in depths if d not in RESNET_ARCHS]
    if bad or not depths:
        raise ValueError(f'--depths={depths}: each must be one of '
                         f'{sorted(RESNET_ARCHS)}')
    bad = [z for z in sizes if z not in SIZES]
    if bad or not sizes:
        raise ValueError(f'--sizes={sizes}: each must be one of '
                         f'{sorted(SIZES)}')
    from laud_mm.ops import policy
    prev = policy.SPATIAL_DENSE_THRESHOLD
    if spatial_dense_threshold is not None:
        policy.SPATIAL_DENSE_THRESHOLD = spatial_dense_threshold
    try:
        with dynamic_layout(dynamic_nchw):
            return _benchmark(depths, sizes, paradigms, rates, batch,
                              threads, warmup, repeats, rate_mode,
                              per_block_table, per_block_mode, block_rate,
                              spatial_breakdown, compare_unplanned,
                              plot_path, json_path)
    finally:
        policy.SPATIAL_DENSE_THRESHOLD = prev


def _benchmark(depths, sizes, paradigms, rates, batch, threads, warmup,
               repeats, rate_mode, per_block_table, per_block_mode,
               block_rate, spatial_breakdown, compare_unplanned, plot_path,
               json_path):
    """:func:`benchmark_resnet` after its option checks."""
    rows = timing_table(
        lambda t: run(depths, sizes, paradigms, rates, batch, rate_mode,
                      warmup, repeats, compare_unplanned),
        table_columns(compare_unplanned), threads)
    if plot_path:
        os.makedirs(osp.dirname(osp.abspath(plot_path)), exist_ok=True)
        plot(rows, plot_path)
        cpu_path = plot_path.replace('.png', '_cpu.png')
        plot(rows, cpu_path, key='cpu_speedup')
        print(f'plots: {plot_path} (wall), {cpu_path} (CPU time)')
    blocks, split = [], []
    prev = torch.get_num_threads()
    try:
        for t in threads:
            torch.set_num_threads(t)
            if per_block_table:
                blocks += per_block(depths[0], paradigms, batch, block_rate,
                                    rate_mode, repeats, per_block_mode,
                                    warmup)
            if spatial_breakdown:
                net = build(depths[0], 'spatial')
                split += spatial_steps.spatial_breakdown(
                    net, folded_stem(net), batch, block_rate, rate_mode,
                    repeats, SIZES['224'][1])
    finally:
        torch.set_num_threads(prev)
    if blocks:
        print(f'\n## per block, {per_block_mode} (R{depths[0]}, '
              f'{batch}x224x224, r={block_rate})\n')
        print(format_blocks(blocks))
    if split:
        print(f'\n## spatial steps (R{depths[0]}, {batch}x224x224, '
              f'r={block_rate}, CPU ms)\n')
        print(spatial_steps.format_spatial_steps(split))
    result = dict(rows=rows, blocks=blocks, spatial_steps=split)
    if json_path:
        with open(json_path, 'w') as f:
            json.dump(result, f, indent=1)
    return result
