"""Measured CPU latency of LAUD-RegNetY dynamic inference against the static
(BN-folded) RegNetY, side by side in one run, with the latency predictor's
ratio for comparison.

For each arch (RegNetY-400MF / 800MF) and paradigm (layer; channel G =
2-2-2-2; spatial S = 4-4-2-1), the gates of every block are forced to random
patterns at activation rate r (the paper's FLOPs-based per-block rate r_i by
default, the gate forcing, timing loop and FLOPs ratio of the LAUD-ResNet
benchmark, :mod:`.common`), and the whole backbone (BN-folded stem + blocks)
is timed:

- static: every block dense with BN folded
  (:func:`laud_mm.models.regnet.dynamic.static_regnety_forward`);
- dynamic: ``backbone(x)`` with ``dynamic_inference=True``, the forward a
  user runs (its input check, its BN-folded stem, every block's eval
  path: :func:`.common.dynamic_forward`; the per-block statistics are
  counted when read, after the timing:
  :class:`laud_mm.models.layers.BlockStats`).

Static and dynamic runs alternate after warm-up; medians are reported. The
last column is the latency predictor's static / dynamic ratio (fused
kernels, V100, batch 128) at the realised per-block mask densities.
Command line: ``tools/analysis_tools/benchmark_regnet.py``.

Source: paper sec. 3.4 and 4.2 (RegNetY latency).
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from laud_mm.latency import LatencyPredictor
from laud_mm.models import LAUDRegNetY
from laud_mm.models.layers.folding import LayoutWeight, fold_conv_bn
from laud_mm.models.regnet.dynamic import static_regnety_forward

from .common import (PARADIGMS, STATIC_LAYOUT, Column, check_options,
                     dynamic_layout, header, leading_columns, table_row,
                     time_forced_rate, timing_columns, timing_keys,
                     timing_table)
from .resnet import SIZES

#: the benchmarked architectures
ARCHS = ('regnety_400mf', 'regnety_800mf')

#: the detection input of ``--det``: (batch, (H, W)), the LAUD-ResNet
#: benchmark's ``--sizes det`` (1 x 3 x 800 x 1216)
DET_INPUT = SIZES['det']

#: the columns of the table (rows of :func:`run`)
COLUMNS = leading_columns(
    lambda r: r['arch'],
    lambda r: f"{r['batch']}x{r['hw'][0]}x{r['hw'][1]}") + [
    Column('realised mean r_i', lambda r: f"{r['rate_real']:.3f}"),
    *timing_columns(), STATIC_LAYOUT,
    Column('ideal (FLOPs)', lambda r: f"{1 / r['flops_ratio']:.2f}x"),
    Column('predicted speedup (v100, batch 128)',
           lambda r: f"{1 / r['predicted_ratio']:.2f}x")]
HEADER = header(COLUMNS)


def folded_stem(net: LAUDRegNetY):
    """BN-folded RegNet stem (3x3/2 conv + ReLU), as a callable, its
    weight in the input's memory format
    (:class:`~laud_mm.models.layers.folding.LayoutWeight`, as the
    backbone's own stem)."""
    w, b = fold_conv_bn(net.conv1, net.bn1)
    w = LayoutWeight(w)
    return lambda x: F.conv2d(x, w.like(x), b, 2, 1).relu_()


def run(archs: Sequence[str], paradigms: Sequence[str],
        rates: Sequence[float], inputs: Sequence[Tuple[int, Tuple[int, int]]],
        rate_mode: str, warmup: int, repeats: int) -> List[Dict]:
    """Time every (arch, input, paradigm, rate) at torch's current thread
    count; prints each row (:func:`fmt_row`) as it is measured.

    Args:
        inputs: (batch, (H, W)) of each input, e.g. ``[(8, (224, 224)),
            DET_INPUT]``.

    Returns:
        one dict per row: arch, batch, hw (H, W), size (H, the side of a
        square input; kept for readers of earlier JSON files), paradigm,
        threads, rate, rate_real, flops_ratio, static_ms (the faster static
        memory format), dynamic_ms, speedup, cpu_speedup, static_layout,
        static_layout_ms (:func:`~.common.timing_keys`), predicted_ratio
        (dynamic / static, V100, batch 128).
    """
    rows = []
    pred = LatencyPredictor('v100')
    for arch in archs:
        for batch, hw in inputs:
            x = torch.randn(batch, 3, *hw)
            for paradigm in paradigms:
                torch.manual_seed(0)
                net = LAUDRegNetY(arch, paradigm=paradigm,
                                  granularity=PARADIGMS[paradigm],
                                  dynamic_inference=True).eval()
                stem = folded_stem(net)
                geoms = net.block_geometries(hw)
                sgeom = net.stem_geometry(hw)
                p_static = pred.predict_static(geoms, 128, sgeom).total_ms
                for rate in rates:
                    real, ratio, tm = time_forced_rate(
                        net, stem, static_regnety_forward, x, rate,
                        rate_mode, warmup, repeats)
                    dens = [float(blk.last_stats['density'].float().mean())
                            for blk in net.blocks]
                    p_dyn = pred.predict_backbone(geoms, dens, 128,
                                                  sgeom).total_ms
                    row = dict(arch=arch, batch=batch, hw=list(hw),
                               size=hw[0], paradigm=paradigm,
                               threads=torch.get_num_threads(), rate=rate,
                               rate_real=real,
                               flops_ratio=ratio, **timing_keys(tm),
                               predicted_ratio=p_dyn / p_static)
                    rows.append(row)
                    print(fmt_row(row), flush=True)
    return rows


def fmt_row(r: Dict) -> str:
    """One markdown row of :data:`HEADER` for a row of :func:`run`."""
    return table_row(COLUMNS, r)


def benchmark_regnet(archs: Sequence[str] = ARCHS,
                     paradigms: Sequence[str] = tuple(PARADIGMS),
                     rates: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
                     batch: int = 8, size: int = 224, det: bool = False,
                     threads: Union[int, Sequence[int], None] = None,
                     warmup: int = 2, repeats: int = 7,
                     rate_mode: str = 'flops',
                     json_path: Optional[str] = None,
                     dynamic_nchw: bool = False) -> List[Dict]:
    """The LAUD-RegNetY benchmark of the command line: :func:`run` at each
    thread count of ``threads`` (an int or a list; None: 1 and every
    logical CPU) as one printed table (machine line with the load average)
    and, with ``json_path``, a JSON file of its rows; the inputs are
    ``batch`` x 3 x ``size`` x ``size`` and, with ``det``, also
    :data:`DET_INPUT` (1 x 3 x 800 x 1216). The dynamic backbone
    is fed its ``dynamic_memory_format`` (channels_last on the CPU), or
    NCHW with ``dynamic_nchw`` (:func:`~.common.dynamic_layout`).

    Raises:
        ValueError: an option out of range or an unknown arch (names the
            option and value).
    """
    check_options(rates, warmup=warmup, repeats=repeats, batch=batch,
                  size=size)
    bad = [a for a in archs if a not in ARCHS]
    if bad:
        raise ValueError(f'--archs={bad} must be among {list(ARCHS)}')
    inputs = [(batch, (size, size))] + ([DET_INPUT] if det else [])
    with dynamic_layout(dynamic_nchw):
        return timing_table(
            lambda t: run(archs, paradigms, rates, inputs, rate_mode,
                          warmup, repeats), COLUMNS, threads, json_path)
