"""Validate the latency predictor against measured latency on this machine
(:func:`laud_mm.analysis.validation.validate_predictor`).

Usage::

    python tools/analysis_tools/validate_predictor.py [--hardware SPEC.yaml|cpu]
        [--device cpu|cuda] [--threads 2] [--quick] [--fit]
        [--out-dir work_dirs/validate_predictor] [--no-backbone]
        [--repeats 3] [--min-time 0.05] [--clock auto|cpu|wall]
        [--reuse work_dirs/validate_predictor/results.json] [--warm-caches]

Measures (PyTorch, fp32, BN folded) ResNet-50 bottleneck blocks on the
dynamic-inference path at forced gates of exact densities across paradigms,
granularities, activation rates and batch sizes, plus the static blocks and
whole backbones, and compares with the predictor (``implementation='eager'``,
the same device spec): MAPE and Spearman rank correlation, overall and per
paradigm. On a CPU every timed block call starts as inside a backbone
forward: caches evicted, a twin of the block (its own weights) run, the
input read, so the block's weights come from DRAM (``--warm-caches``:
calls back to back instead, weights in cache). ``--fit`` first fits the
spec on a random 30 % of the cases and reports the other 70 % (held out)
as well;
``--reuse`` re-predicts the cases of an earlier ``results.json`` without
measuring.

Writes ``results.json``, ``table.md`` (the table of
``docs/latency_predictor.md``), ``pred_vs_measured.png`` (like the paper's
Fig. 5).
"""
import argparse

from laud_mm.analysis.validation import validate_predictor
from laud_mm.latency.calibration import add_layout_argument


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--hardware', default='cpu',
                   help='device spec name or .yaml/.json (calibrated)')
    p.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--quick', action='store_true',
                   help='fewer blocks / rates / batches (~3 min on 2 cores)')
    p.add_argument('--fit', action='store_true',
                   help='fit the spec on 30 %% of the cases first')
    p.add_argument('--no-backbone', action='store_true',
                   help='skip the whole-backbone cases')
    p.add_argument('--min-time', type=float, default=None,
                   help='seconds per timing batch (default 0.05)')
    p.add_argument('--repeats', type=int, default=None,
                   help='sweeps over all cases; each case keeps its '
                   'fastest sweep (default 3)')
    p.add_argument('--clock', default=None, choices=['auto', 'cpu', 'wall'],
                   help="timer: 'cpu' = the thread's CPU time (excludes "
                   "time slices of other processes); 'auto' (default) = cpu "
                   "with one CPU thread, else wall")
    p.add_argument('--reuse', default=None, metavar='RESULTS_JSON',
                   help='re-predict the measured cases of an earlier '
                   'results.json instead of measuring again (model changes; '
                   'the measuring options do not apply, the layout is the '
                   "file's)")
    p.add_argument('--warm-caches', action='store_true',
                   help='time the blocks back to back (weights stay in '
                   'cache) instead of as inside a forward (caches evicted, '
                   'a twin block run, the input read before every call)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out-dir', default='work_dirs/validate_predictor')
    add_layout_argument(p, default=None)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    return validate_predictor(
        hardware=args.hardware, device=args.device, threads=args.threads,
        quick=args.quick, fit=args.fit, no_backbone=args.no_backbone,
        min_time=args.min_time, repeats=args.repeats, clock=args.clock,
        reuse=args.reuse, seed=args.seed, out_dir=args.out_dir,
        warm_caches=args.warm_caches, layout=args.layout)


if __name__ == '__main__':
    main()
