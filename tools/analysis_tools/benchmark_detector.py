#!/usr/bin/env python
"""What a detection practitioner feels, measured on real COCO images: a LAUD
training iteration against the static backbone's, and whole Faster R-CNN
inference with dynamic inference against the static detector
(:func:`laud_mm.analysis.benchmark.detector.benchmark_detector`).

Usage (from the repository root):
    python tools/analysis_tools/benchmark_detector.py --threads 2
    python tools/analysis_tools/benchmark_detector.py --parts infer --paradigms layer --rate 0.5
"""
import argparse
import json

from laud_mm.analysis.benchmark.common import PARADIGMS
from laud_mm.analysis.benchmark.detector import benchmark_detector


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--paradigms', nargs='+', default=list(PARADIGMS),
                   choices=list(PARADIGMS))
    p.add_argument('--parts', nargs='+', default=['train', 'infer'],
                   choices=['train', 'infer'])
    p.add_argument('--rate', type=float, default=0.5,
                   help='activation rate of the inference rows')
    p.add_argument('--scale', type=int, nargs=2, default=[1333, 800],
                   help='inference Resize scale (long, short side)')
    p.add_argument('--train-scale', type=int, nargs=2, default=[1333, 800])
    p.add_argument('--train-batch', type=int, default=2)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--json', default=None, help='write the rows as JSON')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    rows = benchmark_detector(
        paradigms=args.paradigms, rate=args.rate, scale=tuple(args.scale),
        train_scale=tuple(args.train_scale), train_batch=args.train_batch,
        threads=args.threads, warmup=args.warmup, repeats=args.repeats,
        parts=args.parts)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1, default=str)
    return rows


if __name__ == '__main__':
    main()
