#!/usr/bin/env python
"""Measured CPU latency of LAUD-T2T-ViT dynamic inference against the static
T2T-ViT, side by side in one run, with the latency predictor's ratio
(:func:`laud_mm.analysis.benchmark.t2t_vit.benchmark_t2t_vit`): token
skipping (spatial), head skipping (channel) and layer skipping at forced
random gates of rate r; the whole backbone is timed as a user runs it,
``static_forward(x)`` and ``backbone(x)`` alternately, and the dense
Tokens-to-Token module alone for its share.

Usage:
    python tools/analysis_tools/benchmark_t2t_vit.py              # T2T-ViT-t-14, 8 x 224 px
    python tools/analysis_tools/benchmark_t2t_vit.py --paradigms layer --rates 0.5 1.0
    python tools/analysis_tools/benchmark_t2t_vit.py --tiny --repeats 1       # smoke test
    # the predictor's milliseconds beside the measured ones (SPEC: a spec
    # of calibrate_hardware.py --threads 2)
    python tools/analysis_tools/benchmark_t2t_vit.py --threads 2 --hardware SPEC
"""
import argparse

from laud_mm.analysis.benchmark.t2t_vit import PARADIGMS, benchmark_t2t_vit
from laud_mm.models.t2t_vit import T2T_VIT_ARCHS


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--arch', default=None, choices=sorted(T2T_VIT_ARCHS),
                   help='default: t2t-vit-t-14')
    p.add_argument('--paradigms', nargs='+', default=list(PARADIGMS),
                   choices=list(PARADIGMS))
    p.add_argument('--rates', type=float, nargs='+', default=[0.25, 0.5, 1.0])
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--size', type=int, default=None,
                   help='input side in pixels (default 224)')
    p.add_argument('--threads', type=int, nargs='+', default=None,
                   help='torch thread counts, every row measured at each '
                   '(default: 1 and every logical CPU)')
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--tiny', action='store_true',
                   help='a 2-layer, 64-dim model on 64 px (smoke test)')
    p.add_argument('--hardware', default=None,
                   help="the 'pred.' columns' device: a spec file of "
                   'calibrate_hardware.py on this CPU, predicted at --batch '
                   "as this project's path runs, at the spec's thread count "
                   '(num_pe) only; default: the V100 at batch 128')
    p.add_argument('--json', default=None, help='write the rows as JSON')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    return benchmark_t2t_vit(
        arch=args.arch, paradigms=args.paradigms, rates=args.rates,
        batch=args.batch, size=args.size, threads=args.threads,
        warmup=args.warmup, repeats=args.repeats, tiny=args.tiny,
        json_path=args.json, hardware=args.hardware)


if __name__ == '__main__':
    main()
