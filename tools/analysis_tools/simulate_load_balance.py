#!/usr/bin/env python
"""Load balance of the fused CPU kernels at 2 - 64 threads for random
masks, computed without running them
(:func:`laud_mm.analysis.load_balance.simulate`: the per-thread work of the
partition the kernels build, summed over the blocks of a LAUD-ResNet).

Usage::

    python tools/analysis_tools/simulate_load_balance.py
    python tools/analysis_tools/simulate_load_balance.py --sizes det --rates 0.5 --threads 2 64
"""
import argparse

from laud_mm.analysis.load_balance import format_table, simulate


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--depth', type=int, default=50)
    p.add_argument('--sizes', nargs='+', default=['224', 'det'])
    p.add_argument('--paradigms', nargs='+',
                   default=['spatial', 'channel', 'layer'])
    p.add_argument('--rates', type=float, nargs='+', default=[0.25, 0.5, 0.75])
    p.add_argument('--threads', type=int, nargs='+',
                   default=[2, 4, 8, 16, 32, 64])
    p.add_argument('--seeds', type=int, default=3,
                   help='random masks per configuration (mean)')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    rows = simulate(depth=args.depth, sizes=args.sizes,
                    paradigms=args.paradigms, rates=args.rates,
                    threads=args.threads, seeds=args.seeds)
    print(format_table(rows))
    return rows


if __name__ == '__main__':
    main()
