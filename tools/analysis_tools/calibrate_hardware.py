"""Measure this machine (CPU, or the lent GPU) and write a HardwareSpec file
(:func:`laud_mm.latency.calibration.calibrate_hardware`): launch cost,
off-chip and on-chip bandwidth, compute rate (and on a CPU the weight
re-layout rate, SIMD width and last-level cache), the rates of a
transformer layer's token GEMMs and fused attention (``gemm_speed``,
``attention_speed``) and the bandwidth of its streaming kernels in a
whole encoder layer (``token_stream_gbs``); ``--fit`` refines the
compute rate and bandwidth on measured static ResNet-50 blocks, so that
``validate_predictor.py`` validates out of sample.

Usage::

    python tools/analysis_tools/calibrate_hardware.py [--device cpu|cuda] [--threads N]
        [--out work_dirs/hardware/cpu_calibrated.yaml] [--fit] [--name NAME]
        [--clock auto|cpu|wall] [--warm-caches]

On a CPU the blocks (``--fit`` and the dynamic path's terms) are timed as
inside a backbone forward, where each block's weights were last read a
forward earlier: before every call the caches are evicted, a twin of the
block (its own weights) runs and the input is read (``--warm-caches``:
calls back to back, weights in cache).
"""
import argparse

from laud_mm.latency.calibration import (add_layout_argument,
                                         calibrate_hardware)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    p.add_argument('--threads', type=int, default=None,
                   help='CPU threads (default: all cores)')
    p.add_argument('--name', default=None, help='spec name')
    p.add_argument('--out', default=None,
                   help='output .yaml/.json (default work_dirs/hardware/'
                   '<name>.yaml)')
    p.add_argument('--fit', action='store_true',
                   help='refine on measured static ResNet-50 blocks')
    p.add_argument('--clock', default='auto', choices=['auto', 'cpu', 'wall'],
                   help="timer of the static blocks (see time_fn): 'auto' = "
                   "the thread's CPU time with one CPU thread, else wall")
    p.add_argument('--warm-caches', action='store_true',
                   help='time the blocks back to back (weights stay in '
                   'cache) instead of as inside a forward')
    add_layout_argument(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        return calibrate_hardware(device=args.device, threads=args.threads,
                                  name=args.name, out=args.out, fit=args.fit,
                                  clock=args.clock,
                                  warm_caches=args.warm_caches,
                                  layout=args.layout)
    except RuntimeError as e:  # --device cuda without a CUDA device
        raise SystemExit(str(e))


if __name__ == '__main__':
    main()
