#!/usr/bin/env python
"""Measured latency of LAUD-ResNet dynamic inference against the static
(BN-folded) backbone, side by side in one run
(:func:`laud_mm.analysis.benchmark.resnet.benchmark_resnet`).

For each backbone (R50 / R101), input size (224 px batch, detection-sized
batch) and paradigm, the gates of every block are forced to random patterns
at activation rate r (the paper's FLOPs-based per-block rate r_i, or the
mask density with ``--rate-mode density``) and the whole backbone is timed,
static and dynamic runs alternating; medians are reported.
``--per-block`` adds a per-block table for one configuration (each block
alone on its input; ``--per-block in-network``: every block stamped within
the whole static and dynamic forwards; both networks in their deployed
memory formats, as in the whole-backbone rows);
``--spatial-breakdown`` splits each spatial block's dynamic time into its
steps (conv1, gather, patch convolutions, scatter, fused kernel; each
network's steps in its deployed memory format);
``--compare-unplanned`` adds the dynamic path without the per-forward plan
to every row; ``--dynamic-nchw`` runs the dynamic path in NCHW instead of
channels_last (for comparisons).

Usage:
    python tools/analysis_tools/benchmark_latency.py              # full table + plot
    python tools/analysis_tools/benchmark_latency.py --quick      # R50 224 only
    python tools/analysis_tools/benchmark_latency.py --depths 50 --sizes 224 --rates 0.5 1.0
"""
import argparse

from laud_mm.analysis.benchmark.resnet import (PARADIGMS, PER_BLOCK_MODES,
                                               SIZES, benchmark_resnet)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--depths', type=int, nargs='+', default=None,
                   help='ResNet depths (default: 50 101)')
    p.add_argument('--sizes', nargs='+', default=None, choices=sorted(SIZES),
                   help='input sizes (default: 224 det)')
    p.add_argument('--paradigms', nargs='+', default=list(PARADIGMS),
                   choices=list(PARADIGMS))
    p.add_argument('--rates', type=float, nargs='+',
                   default=[0.1, 0.25, 0.5, 0.75, 1.0])
    p.add_argument('--batch', type=int, default=8,
                   help='batch of the 224 px input (detection input: 1)')
    p.add_argument('--threads', type=int, nargs='+', default=None,
                   help='torch thread counts, every row measured at each '
                   '(default: 1 and every logical CPU)')
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--repeats', type=int, default=7)
    p.add_argument('--rate-mode', default='flops', choices=['flops', 'density'],
                   help="'flops': r is the paper's FLOPs-based per-block "
                   "activation rate r_i (default); 'density': the mask density")
    p.add_argument('--per-block', nargs='?', const='alone', default=None,
                   choices=PER_BLOCK_MODES,
                   help='add the per-block table (first depth, 224 px, '
                   "--block-rate): 'alone' (default) times each block on its "
                   "own input; 'in-network' stamps every block within the "
                   'whole static and dynamic forwards (owned inputs, logit '
                   'hand-offs and caches as the backbone runs them); the '
                   'static network in its faster memory format, the dynamic '
                   'one in the backbone\'s (channels_last where the fused '
                   'CPU kernels run; NCHW with --dynamic-nchw)')
    p.add_argument('--block-rate', type=float, default=0.5)
    p.add_argument('--spatial-breakdown', action='store_true',
                   help='per spatial block (first depth, 224 px, '
                   '--block-rate): CPU time of each step of the sparse path '
                   'against the static convolutions (the static block in '
                   'its faster memory format, the fused path in the '
                   "backbone's dynamic format, the gather / scatter path "
                   'in NCHW)')
    p.add_argument('--spatial-dense-threshold', type=float, default=None,
                   help='override laud_mm.ops.policy.SPATIAL_DENSE_THRESHOLD '
                   '(fraction of active patches from which spatial blocks on '
                   'the gather / scatter path compute densely; > 1: never; '
                   'the fused CPU kernel has no fallback)')
    p.add_argument('--compare-unplanned', action='store_true',
                   help='add to every row the dynamic path without the '
                   'per-forward plan (laud_mm.ops.policy.FORWARD_PLAN off: '
                   'each block makes its host-side choices at its own '
                   'call), timed against the static network in its own '
                   'pairs')
    p.add_argument('--dynamic-nchw', action='store_true',
                   help='run the dynamic path in NCHW '
                   '(laud_mm.ops.policy.CHANNELS_LAST_CPU off), as before it '
                   'ran channels_last: for comparisons; the static baseline '
                   'still takes the faster of NCHW and channels_last')
    p.add_argument('--quick', action='store_true',
                   help='R50, 224 px only')
    p.add_argument('--plot', default=None,
                   help='write the speedup-vs-rate plots here (PNG; a second '
                   'one with the suffix _cpu for CPU time); default: none, so '
                   'that a partial run never replaces the figures in docs/')
    p.add_argument('--json', default=None, help='write the rows as JSON')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    return benchmark_resnet(
        depths=args.depths, sizes=args.sizes, paradigms=args.paradigms,
        rates=args.rates, batch=args.batch, threads=args.threads,
        warmup=args.warmup, repeats=args.repeats, rate_mode=args.rate_mode,
        per_block_table=args.per_block is not None,
        per_block_mode=args.per_block or 'alone', block_rate=args.block_rate,
        spatial_breakdown=args.spatial_breakdown,
        spatial_dense_threshold=args.spatial_dense_threshold,
        compare_unplanned=args.compare_unplanned,
        dynamic_nchw=args.dynamic_nchw, quick=args.quick,
        plot_path=args.plot, json_path=args.json)


if __name__ == '__main__':
    main()
