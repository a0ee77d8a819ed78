#!/usr/bin/env python
"""Operators dispatched per block by LAUD-ResNet's dynamic paths, the CPU
path and the CUDA path's logic on CPU tensors, against the static block
(:func:`laud_mm.analysis.benchmark.dispatch.count_dispatch`): the host
cost that makes small inputs and GPUs host-bound, counted without a GPU
(docs/benchmarks.md, "Host cost per block").

Usage::

    python tools/analysis_tools/count_dispatch.py
    python tools/analysis_tools/count_dispatch.py --paradigms spatial --rates 1.0
"""
import argparse

from laud_mm.analysis.benchmark.dispatch import (PATHS, count_dispatch,
                                                 format_dispatch)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--depth', type=int, default=50)
    p.add_argument('--paradigms', nargs='+', default=['spatial', 'channel',
                                                      'layer'],
                   choices=['spatial', 'channel', 'layer'])
    p.add_argument('--rates', nargs='+', type=float, default=[0.5, 1.0])
    p.add_argument('--paths', nargs='+', default=list(PATHS), choices=PATHS)
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--size', type=int, default=64,
                   help='input side in pixels (small: the host cost shows)')
    p.add_argument('--repeats', type=int, default=20)
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    rows = count_dispatch(a.depth, a.paradigms, a.rates, a.batch, a.size,
                          a.paths, a.repeats)
    print(f'# LAUD-ResNet-{a.depth}, input {a.batch} x 3 x {a.size} x '
          f'{a.size}, 1 thread, mean per block')
    print(format_dispatch(rows))
    return rows


if __name__ == '__main__':
    main()
