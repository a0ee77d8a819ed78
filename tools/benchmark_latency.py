#!/usr/bin/env python
"""Measured latency of LAUD-ResNet dynamic inference against the static
(BN-folded) backbone, side by side in one run.

For each backbone (LAUD-ResNet-50 / 101), input size (224 px classification
batch, detection-sized batch) and paradigm (layer; channel G = 2-2-2-2;
spatial S = 4-4-2-1), the gates of every block are forced to random patterns
at activation rate r: by default the paper's FLOPs-based per-block rate r_i
(FLOPs computed / dense FLOPs of the block including the masker and the dense
downsample; docs/method.md sec. 2), so each block keeps the number of patches /
channel groups per sample (samples for layer skipping) whose r_i is closest
to r; ``--rate-mode density`` uses the mask density instead. The table gives
the realised mean r_i and the ideal speedup (static / dynamic FLOPs of the
whole backbone, stem included). The whole backbone (BN-folded stem + 16 / 33
blocks) is timed:

- static: every block dense with BN folded (``static_bottleneck_forward``);
- dynamic: ``block(x)`` with ``dynamic_inference=True`` (the model's real
  eval path, incl. its per-block statistics).

Static and dynamic runs alternate (after warm-up) and the median of the
repeats is reported, so the ratios are robust to load on shared machines.
``--per-block`` adds a per-block table for one configuration;
``--spatial-breakdown`` splits each spatial block's dynamic time into its
steps (conv1, gather, patch convolutions, scatter).

Usage:
    python tools/benchmark_latency.py                       # full table + plot
    python tools/benchmark_latency.py --quick               # R50 224 only
    python tools/benchmark_latency.py --depths 50 --sizes 224 --rates 0.5 1.0

Source: paper sec. 3.4 and sec. 4 (latency of LAUD-ResNet); issue 3 goals.
"""
import argparse
import json
import os
import os.path as osp
import platform
import statistics
import sys
import time
from typing import Dict, List

import torch
import torch.nn.functional as F

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from laud_mm import ops  # noqa: E402
from laud_mm.models import LAUDResNet  # noqa: E402
from laud_mm.ops.max_pool import max_pool2d  # noqa: E402
from laud_mm.models.layers.folding import fold_conv_bn  # noqa: E402
from laud_mm.models.resnet.dynamic import \
    static_bottleneck_forward  # noqa: E402

PARADIGMS = {'layer': None, 'channel': (2, 2, 2, 2), 'spatial': (4, 4, 2, 1)}
SIZES = {'224': (8, (224, 224)), 'det': (1, (800, 1216))}


def folded_stem(net: LAUDResNet):
    """BN-folded stem (conv 7x7 s2 + ReLU + max-pool) of a ResNet; the pool
    is the model's own (:func:`laud_mm.ops.max_pool.max_pool2d`)."""
    if net.deep_stem:
        raise ValueError('deep_stem is not supported by the benchmark')
    w, b = fold_conv_bn(net.conv1, net.norm1)

    def stem(x):
        x = F.conv2d(x, w, b, 2, 3).relu_()
        return max_pool2d(x, 3, 2, 1)
    return stem


def static_forward(net, stem, x):
    x = stem(x)
    for blk in net.blocks:
        x = static_bottleneck_forward(blk, x)
    return x


def dynamic_forward(net, stem, x):
    """Folded stem, then every block's dynamic forward, as
    ``LAUDResNet.forward`` runs them (identity blocks own their input:
    :func:`~laud_mm.models.layers.dynamic.owned_block_inputs`)."""
    from laud_mm.models.layers.dynamic import owned_block_inputs
    x = stem(x)
    with owned_block_inputs(net.blocks):
        for blk in net.blocks:
            x = blk(x)
    return x


def _block_rate(blk, gate: torch.Tensor, geom) -> float:
    """FLOPs-based activation rate r_i of one block for a gate pattern:
    FLOPs computed / dense FLOPs, batch mean, incl. masker and downsample
    (docs/method.md sec. 2; the block's own statistics code)."""
    blk._record_stats(gate, geom, blk.op_flops(geom.in_hw))
    st = blk.last_stats
    return float(st['flops'].mean()) / st['dense']


def _patterns(n: int, m: int, g: torch.Generator):
    """Per-sample random orders of m gates: gate k of sample i is on iff
    its rank < the kept count."""
    return torch.stack([torch.randperm(m, generator=g) for _ in range(n)])


def force_random_gates(net: LAUDResNet, rate: float, n: int, hw, seed: int,
                       mode: str = 'flops') -> float:
    """Force random gates at activation rate ``rate`` in every block.

    mode 'flops' (default): the paper's FLOPs-based rate r_i (FLOPs computed
    / dense FLOPs of the block, incl. masker and dense downsample, conv1 with
    the dilated mask, conv2 with the squared channel density; docs/method.md
    sec. 2): in each block the kept count (patches / groups per sample;
    samples for layer skipping) whose r_i is closest to ``rate``. mode
    'density': the mask density itself (round(rate * gates) kept).

    Layer skipping with batches below 4: (block, sample) gates are switched
    on in random order until the blocks' FLOPs reach ``rate``.

    Returns:
        the realised mean over blocks of r_i ('flops') or of the density.

    Raises:
        ValueError: unknown mode.
    """
    if mode not in ('flops', 'density'):
        raise ValueError(f"mode={mode!r} must be 'flops' or 'density'")
    g = torch.Generator().manual_seed(seed)
    geoms = net.block_geometries(hw)
    realised = []
    if net.paradigm == 'layer' and n < 4:
        nb = len(net.blocks)
        order = torch.randperm(nb * n, generator=g)
        gates = torch.zeros(nb * n)
        if mode == 'density':
            gates[order[:round(rate * nb * n)]] = 1
        else:
            fl = [blk.op_flops(geo.in_hw) for blk, geo in zip(net.blocks,
                                                              geoms)]
            dense = n * sum(sum(f.values()) for f in fl)
            fixed = n * sum(f['masker'] + f.get('downsample', 0) for f in fl)
            done = fixed
            for k in order.tolist():
                if done >= rate * dense:
                    break
                f = fl[k // n]
                res = f['conv1'] + f['conv2'] + f['conv3']
                # stop at the count closest to the target
                if abs(done + res - rate * dense) > abs(done - rate * dense):
                    break
                gates[k] = 1
                done += res
        gates = gates.view(nb, n)
        for blk, gate, geo in zip(net.blocks, gates, geoms):
            blk.masker.forced_gate = gate.clone()
            realised.append(_block_rate(blk, gate, geo) if mode == 'flops'
                            else float(gate.mean()))
        return sum(realised) / len(realised)
    for blk, geo in zip(net.blocks, geoms):
        if net.paradigm == 'layer':
            shape, m = (n,), n
            ranks = torch.randperm(n, generator=g)[None]  # (1, N)
        else:
            shape = geo.patch_grid if net.paradigm == 'spatial' \
                else (geo.num_groups,)
            m = int(torch.tensor(shape).prod())
            ranks = _patterns(n, m, g)  # (N, m)

        def make(k):
            gate = (ranks < k).float()
            return gate.view(n) if net.paradigm == 'layer' \
                else gate.view(n, *shape)
        if mode == 'density':
            k = round(rate * m)
        else:
            k = min(range(m + 1),
                    key=lambda j: abs(_block_rate(blk, make(j), geo) - rate))
        gate = make(k)
        blk.masker.forced_gate = gate
        realised.append(_block_rate(blk, gate, geo) if mode == 'flops'
                        else float(gate.mean()))
    return sum(realised) / len(realised)


def backbone_flops_ratio(net: LAUDResNet, hw) -> float:
    """Dynamic / static FLOPs of the whole backbone (stem + blocks) after a
    forward (blocks' ``last_stats``); its inverse is the ideal speedup."""
    from laud_mm.structures import flops as flops_lib
    stem = float(flops_lib.stem_flops(net.stem_geometry(hw)))
    dyn = stem + sum(float(b.last_stats['flops'].mean()) for b in net.blocks)
    dense = stem + sum(b.last_stats['dense'] for b in net.blocks)
    return dyn / dense


def timed(fn, x):
    """(wall seconds, process CPU seconds) of one call."""
    t, c = time.perf_counter(), time.process_time()
    fn(x)
    return time.perf_counter() - t, time.process_time() - c


def bench_pair(static_fn, dyn_fn, x, warmup: int, repeats: int):
    """Alternate static / dynamic runs after warm-up.

    Returns:
        (static ms, dynamic ms, CPU-time ratio static / dynamic): wall-clock
        medians, and the ratio of median process CPU times (robust to other
        processes sharing the cores; see docs/benchmarks.md).
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
    return (med(t[0] for t in ts) * 1e3, med(t[0] for t in td) * 1e3,
            med(t[1] for t in ts) / max(med(t[1] for t in td), 1e-9))


def build(depth: int, paradigm: str, seed: int = 0) -> LAUDResNet:
    torch.manual_seed(seed)
    net = LAUDResNet(depth, paradigm=paradigm,
                     granularity=PARADIGMS[paradigm],
                     dynamic_inference=True)
    net.eval()  # mmdet's ResNet.train() returns None: no chaining
    return net


def run(args) -> List[Dict]:
    rows = []
    for depth in args.depths:
        for size in args.sizes:
            n, hw = SIZES[size]
            if size == '224':
                n = args.batch
            x = torch.randn(n, 3, *hw)
            for paradigm in args.paradigms:
                net = build(depth, paradigm)
                stem = folded_stem(net)
                for rate in args.rates:
                    real = force_random_gates(net, rate, n, hw, seed=1,
                                              mode=args.rate_mode)
                    with torch.no_grad():  # exactness spot check
                        a = static_forward(net, stem, x) if rate == 1.0 \
                            else None
                        b = dynamic_forward(net, stem, x)
                    if a is not None:
                        assert (a - b).abs().max() <= 1e-3 * a.abs().max()
                    ratio = backbone_flops_ratio(net, hw)
                    st, dy, cpu = bench_pair(
                        lambda t: static_forward(net, stem, t),
                        lambda t: dynamic_forward(net, stem, t), x,
                        args.warmup, args.repeats)
                    row = dict(depth=depth, size=size, batch=n, hw=hw,
                               paradigm=paradigm, rate=rate, rate_real=real,
                               flops_ratio=ratio, rate_mode=args.rate_mode,
                               static_ms=st, dynamic_ms=dy, speedup=st / dy,
                               cpu_speedup=cpu)
                    rows.append(row)
                    print(fmt_row(row), flush=True)
    return rows


def per_block(args) -> List[Dict]:
    """Per-block static vs dynamic at one rate (R50 or first depth, 224)."""
    depth, size, rate = args.depths[0], '224', args.block_rate
    n, hw = args.batch, SIZES[size][1]
    x = torch.randn(n, 3, *hw)
    out = []
    for paradigm in args.paradigms:
        net = build(depth, paradigm)
        stem = folded_stem(net)
        force_random_gates(net, rate, n, hw, seed=1, mode=args.rate_mode)
        with torch.no_grad():
            inputs, t = [], stem(x)
            for blk in net.blocks:
                inputs.append(t)
                t = static_bottleneck_forward(blk, t)
        for blk, xin in zip(net.blocks, inputs):
            st, dy, cpu = bench_pair(
                lambda t: static_bottleneck_forward(blk, t), blk, xin, 1,
                args.repeats)
            out.append(dict(paradigm=paradigm, block=f'{blk.stage}.{blk.index}',
                            in_shape=tuple(xin.shape), static_ms=st,
                            dynamic_ms=dy, speedup=st / dy, cpu_speedup=cpu))
    return out


def spatial_breakdown(args) -> List[Dict]:
    """Where a spatial block's dynamic time goes: per R50 block (224 px,
    ``--block-rate``), the CPU time of each step of the sparse path (conv1
    dense, gather with halo - or, in stride-2 blocks with few patches, conv1
    on the gathered input windows, ``window_conv1``, both in one step -,
    conv2 + conv3 of the patches, fused scatter-add + ReLU in place as in
    the backbone) next to the
    static block's conv1 and conv2 + conv3, the block on that path
    (``SPATIAL_FUSED_CPU`` off), the fused CPU kernel's call alone
    (``laud_mm.ops.spatial_branch_add_relu``, in place as in the backbone)
    with the masker it runs on its own, and the block as the dynamic path
    runs it. Blocks the dense fallback runs are skipped.

    Returns:
        one dict per block: block, S, density (active patch fraction),
        windows (window_conv1 used), static / dynamic step and block times
        in ms (gather_block: the gather / scatter path; masker, fused: the
        fused path's steps; dynamic_block: the block as it runs).
    """
    from benchmark_kernels import cpu_ms
    import laud_mm.ops.policy as dyn
    from laud_mm.models.resnet.dynamic import (_gather, _scatter,
                                               _spatial_branch, _spatial_gate,
                                               folded, spatial_patch_convs,
                                               window_conv1)
    from laud_mm.ops.policy import (SPATIAL_DENSE_THRESHOLD,
                                    uses_window_conv1)
    n, hw = args.batch, SIZES['224'][1]
    net = build(args.depths[0], 'spatial')
    stem = folded_stem(net)
    force_random_gates(net, args.block_rate, n, hw, seed=1,
                       mode=args.rate_mode)

    def ms(fn):
        return cpu_ms(fn, warmup=1, repeats=args.repeats)
    out = []
    with torch.no_grad():
        t = stem(torch.randn(n, 3, *hw))
        for blk in net.blocks:
            x = t
            t = static_bottleneck_forward(blk, x)
            gate = blk.masker.forced_gate
            d = float((gate > 0.5).float().mean())
            if d == 0 or d >= SPATIAL_DENSE_THRESHOLD:
                continue
            fb, s = folded(blk), blk.granularity
            width = fb.w1.shape[0]
            idx = (gate > 0.5).nonzero()
            h1 = F.conv2d(x, fb.w1, fb.b1)
            h1r = torch.relu(h1)
            win = _gather(h1, idx, s, fb.stride, fb.dilation, width, True)
            y = spatial_patch_convs(fb, win, s)
            ident = fb.shortcut(x)
            buf = ident.clone()
            windows = uses_window_conv1(s, fb.stride, fb.dilation,
                                        idx.shape[0], n * x[0, 0].numel())
            if windows:  # window_conv1: conv1 and the gather in one step
                conv1 = ms(lambda: window_conv1(fb, x, idx, s))
                gather = 0.
            else:
                conv1 = ms(lambda: F.conv2d(x, fb.w1, fb.b1))
                gather = ms(lambda: _gather(h1, idx, s, fb.stride,
                                            fb.dilation, width, True))
            row = dict(
                block=f'{blk.stage}.{blk.index}', S=s, density=d,
                windows=windows,
                static_conv1=ms(lambda: F.conv2d(x, fb.w1, fb.b1).relu_()),
                static_conv23=ms(lambda: F.conv2d(F.conv2d(
                    h1r, fb.w2, fb.b2, fb.stride, fb.padding,
                    fb.dilation).relu_(), fb.w3, fb.b3)),
                static_block=ms(lambda: static_bottleneck_forward(blk, x)),
                conv1=conv1, gather=gather,
                patch_convs=ms(lambda: spatial_patch_convs(fb, win, s)),
                # in place, as in the backbone: into the downsample output,
                # or into the owned input (identity_nonneg) of an identity
                # block (a copy here, made once)
                scatter=ms(lambda: _scatter(buf, y, idx, (s, s), True, None,
                                            ident is x)))
            prev = dyn.SPATIAL_FUSED_CPU
            try:  # the same block on the gather / scatter path
                dyn.SPATIAL_FUSED_CPU = False
                row['gather_block'] = ms(lambda: blk(x))
            finally:
                dyn.SPATIAL_FUSED_CPU = prev
            # the fused kernel (when the block uses it), in place as in the
            # backbone, and the masker it runs on its own
            row['masker'] = ms(lambda: _spatial_gate(fb, blk.masker, x,
                                                     tuple(gate.shape)))
            fbuf = ident.clone()
            row['fused'] = ms(lambda: _spatial_branch(
                fbuf, x, fbuf, idx, fb.spatial_packed(), s,
                fb.stride, fb.dilation, identity_nonneg=ident is x))
            row['dynamic_block'] = ms(lambda: blk(x))
            out.append(row)
    return out


def fmt_row(r) -> str:
    return (f"| R{r['depth']} | {r['batch']}x{r['hw'][0]}x{r['hw'][1]} | "
            f"{r['paradigm']} | {r['rate']:.2f} | {r['rate_real']:.3f} | "
            f"{r['static_ms']:.1f} | {r['dynamic_ms']:.1f} | "
            f"{r['speedup']:.2f}x | {r['cpu_speedup']:.2f}x | "
            f"{1 / r['flops_ratio']:.2f}x |")


HEADER = ('| backbone | input | paradigm | r | realised mean r_i | static ms '
          '| dynamic ms | speedup (wall) | speedup (CPU time) | ideal '
          '(static / dynamic FLOPs) |\n|---|---|---|---|---|---|---|---|---|---|')


def plot(rows, path, key='speedup'):
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
        for i, p in enumerate(PARADIGMS):
            pts = sorted((r['rate'], r[key], 1 / r['flops_ratio'])
                         for r in sub if r['paradigm'] == p)
            if pts:
                xs, ys, ideal = zip(*pts)
                ax.plot(xs, ys, 'o-', color=f'C{i}', label=p)
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--depths', type=int, nargs='+', default=[50, 101])
    p.add_argument('--sizes', nargs='+', default=['224', 'det'],
                   choices=sorted(SIZES))
    p.add_argument('--paradigms', nargs='+', default=list(PARADIGMS),
                   choices=list(PARADIGMS))
    p.add_argument('--rates', type=float, nargs='+',
                   default=[0.1, 0.25, 0.5, 0.75, 1.0])
    p.add_argument('--batch', type=int, default=8,
                   help='batch of the 224 px input (detection input: 1)')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--repeats', type=int, default=7)
    p.add_argument('--rate-mode', default='flops', choices=['flops', 'density'],
                   help="'flops': r is the paper's FLOPs-based per-block "
                   "activation rate r_i (default); 'density': the mask density")
    p.add_argument('--per-block', action='store_true')
    p.add_argument('--block-rate', type=float, default=0.5)
    p.add_argument('--spatial-breakdown', action='store_true',
                   help='per spatial block (first depth, 224 px, '
                   '--block-rate): CPU time of each step of the sparse path '
                   'against the static convolutions')
    p.add_argument('--spatial-dense-threshold', type=float, default=None,
                   help='override laud_mm.models.resnet.dynamic.'
                   'SPATIAL_DENSE_THRESHOLD (fraction of active patches from '
                   'which spatial blocks on the gather / scatter path compute '
                   'densely; > 1: never; the fused CPU kernel has no '
                   'fallback)')
    p.add_argument('--quick', action='store_true',
                   help='R50, 224 px only')
    p.add_argument('--plot', default='docs/benchmark_speedup.png')
    p.add_argument('--json', default=None, help='write the rows as JSON')
    args = p.parse_args(argv)
    for name in ('threads', 'repeats', 'batch'):
        if getattr(args, name) < 1:
            raise ValueError(f'--{name} must be >= 1')
    if any(not 0 <= r <= 1 for r in args.rates):
        raise ValueError(f'--rates must lie in [0, 1], got {args.rates}')
    if args.spatial_dense_threshold is not None:
        if args.spatial_dense_threshold <= 0:
            raise ValueError('--spatial-dense-threshold must be > 0, got '
                             f'{args.spatial_dense_threshold}')
        from laud_mm.ops import policy
        policy.SPATIAL_DENSE_THRESHOLD = args.spatial_dense_threshold
    if args.quick:
        args.depths, args.sizes = [50], ['224']
    torch.set_num_threads(args.threads)
    print(f'# torch {torch.__version__}, {torch.get_num_threads()} threads, '
          f'ops backend {ops.backend()}, {platform.processor() or "cpu"} '
          f'({os.cpu_count()} logical CPUs)')
    print(HEADER)
    rows = run(args)
    if args.plot:
        os.makedirs(osp.dirname(osp.abspath(args.plot)), exist_ok=True)
        plot(rows, args.plot)
        cpu_path = args.plot.replace('.png', '_cpu.png')
        plot(rows, cpu_path, key='cpu_speedup')
        print(f'plots: {args.plot} (wall), {cpu_path} (CPU time)')
    blocks = per_block(args) if args.per_block else []
    if blocks:
        print(f'\n## per block (R{args.depths[0]}, {args.batch}x224x224, '
              f'r={args.block_rate})\n')
        print('| paradigm | block | input | static ms | dynamic ms | speedup '
              '(wall) | speedup (CPU time) |\n|---|---|---|---|---|---|---|')
        for b in blocks:
            print(f"| {b['paradigm']} | {b['block']} | "
                  f"{'x'.join(map(str, b['in_shape']))} | {b['static_ms']:.2f}"
                  f" | {b['dynamic_ms']:.2f} | {b['speedup']:.2f}x | "
                  f"{b['cpu_speedup']:.2f}x |")
    split = spatial_breakdown(args) if args.spatial_breakdown else []
    if split:
        print(f'\n## spatial steps (R{args.depths[0]}, {args.batch}x224x224, '
              f'r={args.block_rate}, CPU ms)\n')
        print('| block | S | active patches | static conv1 | static conv2+3 '
              '| static block | conv1 | gather | conv2+3 (patches) | '
              'scatter | gather-path block | masker | fused kernel | '
              'dynamic block | static / dynamic |\n'
              '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')
        for r in split:
            c1 = f"{r['conv1']:.2f} (windows)" if r['windows'] \
                else f"{r['conv1']:.2f}"
            g = '(in conv1)' if r['windows'] else f"{r['gather']:.2f}"
            print(f"| {r['block']} | {r['S']} | {r['density']:.2f} | "
                  f"{r['static_conv1']:.2f} | {r['static_conv23']:.2f} | "
                  f"{r['static_block']:.2f} | {c1} | "
                  f"{g} | {r['patch_convs']:.2f} | "
                  f"{r['scatter']:.2f} | {r['gather_block']:.2f} | "
                  f"{r['masker']:.2f} | {r['fused']:.2f} | "
                  f"{r['dynamic_block']:.2f} | "
                  f"{r['static_block'] / r['dynamic_block']:.2f}x |")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(rows=rows, blocks=blocks, spatial_steps=split), f,
                      indent=1)


if __name__ == '__main__':
    main()
