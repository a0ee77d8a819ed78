#!/usr/bin/env python
"""Measured CPU latency of LAUD-RegNetY dynamic inference against the static
(BN-folded) RegNetY, side by side in one run, with the latency predictor's
ratio for comparison.

For each arch (RegNetY-400MF / 800MF) and paradigm (layer; channel G =
2-2-2-2; spatial S = 4-4-2-1), the gates of every block are forced to random
patterns at activation rate r (the paper's FLOPs-based per-block rate r_i by
default, as in ``tools/benchmark_latency.py``, whose gate forcing, timing
loop and FLOPs ratio this tool shares), and the whole backbone (BN-folded
stem + blocks) is timed:

- static: every block dense with BN folded
  (:func:`laud_mm.models.regnet.dynamic.static_regnety_forward`);
- dynamic: ``block(x)`` with ``dynamic_inference=True`` (the model's eval
  path, incl. its per-block statistics).

Static and dynamic runs alternate after warm-up; medians are reported. The
last column is the latency predictor's static / dynamic ratio (fused
kernels, V100, batch 128) at the realised per-block mask densities.

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
import sys
from typing import Dict, List

import torch
import torch.nn.functional as F

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from laud_mm import LAUDRegNetY, ops  # noqa: E402
from laud_mm.latency import LatencyPredictor  # noqa: E402
from laud_mm.models.layers.folding import fold_conv_bn  # noqa: E402
from laud_mm.models.regnet.dynamic import \
    static_regnety_forward  # noqa: E402

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from benchmark_latency import (backbone_flops_ratio,  # noqa: E402
                               bench_pair, dynamic_forward,
                               force_random_gates)

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
                real = force_random_gates(net, rate, args.batch, hw, seed=1,
                                          mode=args.rate_mode)
                with torch.no_grad():  # exactness spot check at r = 1
                    a = static_forward(net, stem, x) if rate == 1.0 \
                        else None
                    b = dynamic_forward(net, stem, x)
                if a is not None:
                    assert (a - b).abs().max() <= 1e-3 * a.abs().max()
                ratio = backbone_flops_ratio(net, hw)
                dens = [float(blk.last_stats['density'].float().mean())
                        for blk in net.blocks]
                st, dy, cpu = bench_pair(
                    lambda t: static_forward(net, stem, t),
                    lambda t: dynamic_forward(net, stem, t), x, args.warmup,
                    args.repeats)
                p_dyn = pred.predict_backbone(geoms, dens, 128,
                                              sgeom).total_ms
                row = dict(arch=arch, batch=args.batch, size=args.size,
                           paradigm=paradigm, rate=rate, rate_real=real,
                           flops_ratio=ratio, static_ms=st, dynamic_ms=dy,
                           speedup=st / dy, cpu_speedup=cpu,
                           predicted_ratio=p_dyn / p_static)
                rows.append(row)
                print(fmt_row(row), flush=True)
    return rows


def fmt_row(r) -> str:
    return (f"| {r['arch']} | {r['batch']}x{r['size']}x{r['size']} | "
            f"{r['paradigm']} | {r['rate']:.2f} | {r['rate_real']:.3f} | "
            f"{r['static_ms']:.1f} | {r['dynamic_ms']:.1f} | "
            f"{r['speedup']:.2f}x | {r['cpu_speedup']:.2f}x | "
            f"{1 / r['flops_ratio']:.2f}x | {1 / r['predicted_ratio']:.2f}x |")


HEADER = ('| backbone | input | paradigm | r | realised mean r_i | static ms | '
          'dynamic ms | speedup (wall) | speedup (CPU time) | ideal (FLOPs) | '
          'predicted speedup (v100, batch 128) |\n'
          '|---|---|---|---|---|---|---|---|---|---|---|')


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
    p.add_argument('--rate-mode', default='flops', choices=['flops', 'density'],
                   help="'flops': r is the paper's FLOPs-based per-block "
                   "activation rate r_i (default); 'density': mask density")
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
    return rows


if __name__ == '__main__':
    main()
