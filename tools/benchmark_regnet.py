#!/usr/bin/env python
"""Measured CPU latency of LAUD-RegNetY dynamic inference against the static
(BN-folded) RegNetY, side by side in one run, with the latency predictor's
ratio for comparison.

For each arch (RegNetY-400MF / 800MF) and paradigm (layer; channel G =
2-2-2-2; spatial S = 4-4-2-1), the gates of every block are forced to random
patterns at activation rate r (exactly round(r * gates) gates on per sample
and block; layer skipping: round(r * N * blocks) of the (sample, block)
gates), and the whole backbone (BN-folded stem + blocks) is timed:

- static: every block dense with BN folded
  (:func:`laud_mm.models.regnet_dynamic.static_regnety_forward`);
- dynamic: ``block(x)`` with ``dynamic_inference=True`` (the model's eval
  path, incl. its per-block statistics).

Static and dynamic runs alternate after warm-up; medians are reported. The
'pred. v100' column is the latency predictor's dynamic / static ratio
(fused kernels, batch 128) at the realised gate rate.

Usage:
    python tools/benchmark_regnet.py                      # full table
    python tools/benchmark_regnet.py --archs regnety_400mf --rates 0.5 1.0

Source: paper sec. 3.4 and 4.2 (RegNetY latency); issue 7.
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

from laud_mm import LAUDRegNetY, ops  # noqa: E402
from laud_mm.latency import LatencyPredictor  # noqa: E402
from laud_mm.models.dynamic import fold_conv_bn  # noqa: E402
from laud_mm.models.regnet_dynamic import static_regnety_forward  # noqa: E402

PARADIGMS = {'layer': None, 'channel': (2, 2, 2, 2), 'spatial': (4, 4, 2, 1)}


def folded_stem(net: LAUDRegNetY):
    """BN-folded RegNet stem (3x3/2 conv + ReLU)."""
    w, b = fold_conv_bn(net.conv1, net.bn1)
    return lambda x: F.conv2d(x, w, b, 2, 1).relu_()


def static_forward(net, stem, x):
    x = stem(x)
    for blk in net.blocks:
        x = static_regnety_forward(blk, x)
    return x


def dynamic_forward(net, stem, x):
    x = stem(x)
    for blk in net.blocks:
        x = blk(x)
    return x


def force_random_gates(net: LAUDRegNetY, rate: float, n: int, hw,
                       seed: int) -> List[float]:
    """Force random gates at ``rate`` in every block; returns the realised
    mask density per block (fraction of pixels / channels / samples)."""
    g = torch.Generator().manual_seed(seed)
    geoms = net.block_geometries(hw)
    if net.paradigm == 'layer':
        k = len(net.blocks) * n
        flat = torch.zeros(k)
        flat[torch.randperm(k, generator=g)[:round(rate * k)]] = 1
        gates = flat.view(len(net.blocks), n)
        for blk, gate in zip(net.blocks, gates):
            blk.masker.forced_gate = gate.clone()
        return [float(gt.mean()) for gt in gates]
    dens = []
    for blk, geom in zip(net.blocks, geoms):
        shape = geom.patch_grid if net.paradigm == 'spatial' \
            else (geom.num_groups,)
        m = int(torch.tensor(shape).prod())
        gate = torch.zeros(n, m)
        for i in range(n):
            gate[i, torch.randperm(m, generator=g)[:round(rate * m)]] = 1
        blk.masker.forced_gate = gate.view(n, *shape)
        dens.append(float(gate.mean()))
    return dens


def bench_pair(static_fn, dyn_fn, x, warmup: int, repeats: int):
    """Alternate static / dynamic runs; medians in ms."""
    def timed(fn):
        t = time.perf_counter()
        fn(x)
        return time.perf_counter() - t
    with torch.no_grad():
        for _ in range(warmup):
            static_fn(x)
            dyn_fn(x)
        ts, td = [], []
        for _ in range(repeats):
            ts.append(timed(static_fn))
            td.append(timed(dyn_fn))
    return statistics.median(ts) * 1e3, statistics.median(td) * 1e3


def run(args) -> List[Dict]:
    rows = []
    pred = LatencyPredictor('v100')
    hw = (args.size, args.size)
    x = torch.randn(args.batch, 3, *hw)
    for arch in args.archs:
        for paradigm in args.paradigms:
            torch.manual_seed(0)
            net = LAUDRegNetY(arch, paradigm=paradigm,
                              granularity=PARADIGMS[paradigm],
                              dynamic_inference=True).eval()
            stem = folded_stem(net)
            geoms = net.block_geometries(hw)
            sgeom = net.stem_geometry(hw)
            p_static = pred.predict_static(geoms, 128, sgeom).total_ms
            for rate in args.rates:
                dens = force_random_gates(net, rate, args.batch, hw, seed=1)
                if rate == 1.0:  # exactness spot check
                    with torch.no_grad():
                        a = static_forward(net, stem, x)
                        b = dynamic_forward(net, stem, x)
                    assert (a - b).abs().max() <= 1e-3 * a.abs().max()
                st, dy = bench_pair(lambda t: static_forward(net, stem, t),
                                    lambda t: dynamic_forward(net, stem, t),
                                    x, args.warmup, args.repeats)
                p_dyn = pred.predict_backbone(geoms, dens, 128,
                                              sgeom).total_ms
                row = dict(arch=arch, batch=args.batch, size=args.size,
                           paradigm=paradigm, rate=rate,
                           gate_mean=sum(dens) / len(dens), static_ms=st,
                           dynamic_ms=dy, speedup=st / dy,
                           predicted_ratio=p_dyn / p_static)
                rows.append(row)
                print(fmt_row(row), flush=True)
    return rows


def fmt_row(r) -> str:
    return (f"| {r['arch']} | {r['batch']}x{r['size']}x{r['size']} | "
            f"{r['paradigm']} | {r['rate']:.2f} | {r['static_ms']:.1f} | "
            f"{r['dynamic_ms']:.1f} | {r['dynamic_ms'] / r['static_ms']:.2f} |"
            f" {r['predicted_ratio']:.2f} |")


HEADER = ('| backbone | input | paradigm | r | static ms | dynamic ms | '
          'measured dyn/static | pred. v100 dyn/static |\n'
          '|---|---|---|---|---|---|---|---|')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--archs', nargs='+',
                   default=['regnety_400mf', 'regnety_800mf'],
                   choices=['regnety_400mf', 'regnety_800mf'])
    p.add_argument('--paradigms', nargs='+', default=list(PARADIGMS),
                   choices=list(PARADIGMS))
    p.add_argument('--rates', type=float, nargs='+',
                   default=[0.25, 0.5, 0.75, 1.0])
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--size', type=int, default=224)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--repeats', type=int, default=7)
    p.add_argument('--json', default=None, help='write the rows as JSON')
    args = p.parse_args(argv)
    for name in ('threads', 'repeats', 'batch', 'size'):
        if getattr(args, name) < 1:
            raise ValueError(f'--{name}={getattr(args, name)} must be >= 1')
    if any(not 0 <= r <= 1 for r in args.rates):
        raise ValueError(f'--rates={args.rates} must lie in [0, 1]')
    torch.set_num_threads(args.threads)
    print(f'# torch {torch.__version__}, {torch.get_num_threads()} threads, '
          f'ops backend {ops.backend()}, {platform.processor() or "cpu"} '
          f'({os.cpu_count()} logical CPUs), load average '
          f'{os.getloadavg()[0]:.1f}')
    print(HEADER)
    rows = run(args)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1)


if __name__ == '__main__':
    main()
