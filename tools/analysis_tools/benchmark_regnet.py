#!/usr/bin/env python
"""Measured CPU latency of LAUD-RegNetY dynamic inference against the static
(BN-folded) RegNetY, side by side in one run, with the latency predictor's
ratio for comparison
(:func:`laud_mm.analysis.benchmark.regnet.benchmark_regnet`; gate forcing,
timing loop and FLOPs ratio as in ``benchmark_latency.py``).

Usage:
    python tools/analysis_tools/benchmark_regnet.py                      # full table
    python tools/analysis_tools/benchmark_regnet.py --archs regnety_400mf --rates 0.5 1.0
    python tools/analysis_tools/benchmark_regnet.py --det --rates 0.5 1.0   # 8 x 224 and 1 x 800 x 1216
"""
import argparse

from laud_mm.analysis.benchmark.regnet import (ARCHS, PARADIGMS,
                                               benchmark_regnet)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--archs', nargs='+', default=list(ARCHS),
                   choices=list(ARCHS))
    p.add_argument('--paradigms', nargs='+', default=list(PARADIGMS),
                   choices=list(PARADIGMS))
    p.add_argument('--rates', type=float, nargs='+',
                   default=[0.25, 0.5, 0.75, 1.0])
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--size', type=int, default=224)
    p.add_argument('--det', action='store_true',
                   help='also time a detection input, 1 x 3 x 800 x 1216 '
                   '(as benchmark_latency.py --sizes det)')
    p.add_argument('--threads', type=int, nargs='+', default=None,
                   help='torch thread counts, every row measured at each '
                   '(default: 1 and every logical CPU)')
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--repeats', type=int, default=7)
    p.add_argument('--rate-mode', default='flops', choices=['flops', 'density'],
                   help="'flops': r is the paper's FLOPs-based per-block "
                   "activation rate r_i (default); 'density': mask density")
    p.add_argument('--dynamic-nchw', action='store_true',
                   help='run the dynamic path in NCHW '
                   '(laud_mm.ops.policy.CHANNELS_LAST_CPU off) instead of '
                   'the backbone\'s dynamic_memory_format: for comparisons; '
                   'the static baseline still takes the faster of NCHW and '
                   'channels_last')
    p.add_argument('--json', default=None, help='write the rows as JSON')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    return benchmark_regnet(
        archs=args.archs, paradigms=args.paradigms, rates=args.rates,
        batch=args.batch, size=args.size, det=args.det,
        threads=args.threads,
        warmup=args.warmup, repeats=args.repeats, rate_mode=args.rate_mode,
        json_path=args.json, dynamic_nchw=args.dynamic_nchw)


if __name__ == '__main__':
    main()
