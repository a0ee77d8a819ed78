#!/usr/bin/env python
"""Micro-benchmarks behind the dynamic-inference kernel choices and the CPU
terms of the latency predictor
(:func:`laud_mm.analysis.kernels.benchmark_kernels`): each row times two ways
of computing the same thing on LAUD-ResNet-50 shapes (224 px, batch 8) and
prints a markdown table (``docs/benchmarks.md``, "Kernel micro-benchmarks").

Usage::

    OMP_WAIT_POLICY=PASSIVE taskset -c 0 python tools/analysis_tools/benchmark_kernels.py --threads 1
    python tools/analysis_tools/benchmark_kernels.py --only masker scatter
"""
import argparse

from laud_mm.analysis.kernels import KERNEL_GROUPS, benchmark_kernels


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--only', nargs='+', choices=sorted(KERNEL_GROUPS),
                   help='run only these rows (default: all)')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    return benchmark_kernels(only=args.only, threads=args.threads)


if __name__ == '__main__':
    main()
