#!/usr/bin/env python
"""GPU benchmark of LAUD-ResNet-50 / 101 (static cuDNN network vs the CUDA
dynamic paths, batch 128 x 224 x 224) and validation of the latency
predictor's device spec against it; writes OUT_DIR/gpu_benchmark.json and
OUT_DIR/gpu_benchmark.md (:mod:`laud_mm.analysis.benchmark.gpu`).
``tools/gpu_check.sh`` runs it after building and testing the kernels.

Usage:
    python tools/analysis_tools/benchmark_gpu.py OUT_DIR                  # R50 + R101, fp32
    python tools/analysis_tools/benchmark_gpu.py OUT_DIR --depths 50 --dtype float16

Refuses (exit status 3) without a CUDA GPU or the CUDA kernels.
"""
import argparse

from laud_mm.analysis.benchmark.gpu import (NoGPUError, markdown, run,
                                            write_report)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('out_dir')
    p.add_argument('--depths', type=int, nargs='+', default=[50, 101],
                   choices=[50, 101, 152])
    p.add_argument('--paradigms', nargs='+',
                   default=['layer', 'channel', 'spatial'],
                   choices=['layer', 'channel', 'spatial'])
    p.add_argument('--batch', type=int, default=128)
    p.add_argument('--size', type=int, default=224)
    p.add_argument('--dtype', default='float32',
                   choices=['float32', 'float16', 'bfloat16'])
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--repeats', type=int, default=10)
    p.add_argument('--hardware', default='h200')
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    try:
        res = run(a.depths, a.paradigms, None, a.batch, a.size, a.dtype,
                  a.warmup, a.repeats, a.hardware)
    except NoGPUError as e:
        print(f'benchmark_gpu: REFUSED: {e}')
        return 3
    paths = write_report(res, a.out_dir)
    print(markdown(res))
    print(f"wrote {paths['json']} and {paths['markdown']}")
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
