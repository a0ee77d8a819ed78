"""Measured CPU latency of LAUD-T2T-ViT dynamic inference against the static
T2T-ViT, side by side in one run, with the latency predictor's ratio.

For each paradigm (token skipping = spatial, head skipping = channel, layer
skipping) the gates of every encoder layer are forced to random patterns at
activation rate r (:func:`~laud_mm.analysis.forced_gates.
force_random_token_gates`), and the whole backbone is timed as a user runs
it:

- static: :meth:`~laud_mm.models.LAUDT2TViT.static_forward`, the backbone's
  own forward with every encoder layer static (mmpretrain's
  ``T2TTransformerLayer.forward``) and every attention fused
  (:meth:`~laud_mm.models.LAUDT2TViT.inference_kernels`);
- dynamic: ``backbone(x)`` with ``dynamic_inference=True`` (its input
  check, the Tokens-to-Token module, every layer's eval path: gather /
  scatter of kept tokens, kept heads only, kept samples only; the
  per-layer statistics are counted when read, after the timing:
  :class:`laud_mm.models.layers.BlockStats`).

Timing: :func:`~laud_mm.analysis.timing.bench_pair` (static and dynamic runs
alternate after warm-up; wall-clock medians, speedups as medians of the
per-pair ratios of wall-clock and of process CPU times, robust on a shared
machine). The Tokens-to-Token module, dense and the same in both, is also
timed alone (median, after a warm-up call) for its share of the whole.
The 'pred.' columns are the latency predictor's whole backbone at the
realised gate rates (:func:`predictor`: the V100 at batch 128, fused
kernels, by default; a spec of this CPU at the benchmark's batch with
``hardware``, whose milliseconds :func:`prediction_errors` compares with
the measured ones); 'encoder FLOPs' is the encoder's FLOPs ratio.
Command line: ``tools/analysis_tools/benchmark_t2t_vit.py``.

Source: paper sec. 3.2 and "Experiments on vision Transformers" (token
skipping by indexing, head and layer skipping).
"""
import contextlib
import statistics
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from laud_mm.latency import LatencyPredictor, get_hardware
from laud_mm.models import LAUDT2TViT
from laud_mm.models.t2t_vit import T2T_VIT_ARCHS, t2t_vit_arch_kwargs

from ..forced_gates import force_random_token_gates
from ..timing import bench_pair, wall_ms
from .common import (Column, check_exact, check_options, header,
                     leading_columns, table_row, timing_columns,
                     timing_table)

#: the paradigms of a T2T-ViT (token, head and layer skipping)
PARADIGMS = ('layer', 'channel', 'spatial')
#: a 2-layer, 64-dim model on 64 px (smoke test, ``tiny=True``)
TINY = dict(img_size=64, embed_dims=64, num_layers=2,
            t2t_cfg=dict(token_dims=16),
            layer_cfgs=dict(num_heads=4, feedforward_channels=128))

#: the columns of the table (rows of :func:`run`)
COLUMNS = leading_columns(lambda r: r['arch']) + [
    Column('encoder FLOPs', lambda r: f"{r['flops_rate']:.2f}"),
    Column('T2T module ms', lambda r: f"{r['stem_ms']:.0f}"),
    *timing_columns(ms='.0f'),
    Column('pred. dyn/static', lambda r: _fmt(r['predicted_ratio'], '.2f')),
    Column('pred. static / dynamic ms', lambda r: (
        f"{_fmt(r['predicted_static_ms'], '.0f')} / "
        f"{_fmt(r['predicted_dynamic_ms'], '.0f')}"))]
HEADER = header(COLUMNS)


def _fmt(v: Optional[float], spec: str) -> str:
    return '-' if v is None else format(v, spec)


def predictor(hardware: Optional[str], batch: int
              ) -> Tuple[LatencyPredictor, int]:
    """The predictor of the table's 'pred.' columns and the batch it
    predicts: the V100 at batch 128, the paper's setting (fused kernels),
    when ``hardware`` is None; else the CPU spec ``hardware`` (a spec file
    of ``calibrate_hardware.py`` on this CPU, which writes
    ``max_tile_batch`` 1) at the benchmark's ``batch`` as this project's
    path runs it (``implementation='eager'``), so that its milliseconds
    compare with the measured ones.

    Raises:
        ValueError: an unknown device name, a bad spec file
            (:func:`~laud_mm.latency.get_hardware`), or a spec not
            calibrated on a CPU (``max_tile_batch`` other than 1: a GPU's,
            or the paper's and the placeholder ``'cpu'`` specs), naming
            ``--hardware``.
    """
    if hardware is None:
        return LatencyPredictor('v100'), 128
    hw = get_hardware(hardware)
    if hw.max_tile_batch != 1:
        raise ValueError(
            f'--hardware={hardware!r} is not a spec calibrated on a CPU '
            f'(max_tile_batch={hw.max_tile_batch}; calibrate_hardware.py '
            f'writes max_tile_batch: 1 there): its milliseconds do not '
            f'compare with the ones measured here')
    return LatencyPredictor(hw, implementation='eager'), batch


@contextlib.contextmanager
def _raw_output(net: LAUDT2TViT):
    """Within the context the backbone returns every token (mmpretrain's
    ``out_type='raw'``: (N, L, C)), not only what ``out_type`` selects."""
    prev = net.out_type
    net.out_type = 'raw'
    try:
        yield
    finally:
        net.out_type = prev


def stem_tokens(net: LAUDT2TViT, x: torch.Tensor) -> torch.Tensor:
    """The encoder input (N, tokens, C): T2T module (in the backbone's
    :meth:`~laud_mm.models.LAUDT2TViT.inference_kernels`, as its
    forward runs it), class token, position embedding (mmpretrain's
    ``T2T_ViT.forward`` up to the encoder)."""
    from mmpretrain.models.utils import resize_pos_embed
    with net.inference_kernels():
        t, hw = net.tokens_to_token(x)
    if net.cls_token is not None:
        t = torch.cat((net.cls_token.expand(x.shape[0], -1, -1), t), dim=1)
    return t + resize_pos_embed(net.pos_embed, net.patch_resolution, hw,
                                mode=net.interpolate_mode,
                                num_extra_tokens=net.num_extra_tokens)


def encoder_flops_rate(net: LAUDT2TViT) -> float:
    """Encoder FLOPs ratio (dynamic / dense, maskers included) of the last
    forward."""
    f = sum(float(b.last_stats['flops'].mean()) for b in net.blocks)
    return f / sum(b.last_stats['dense'] for b in net.blocks)


def run(arch: str, paradigms: Sequence[str], rates: Sequence[float],
        batch: int, size: int, warmup: int, repeats: int, tiny: bool = False,
        hardware: Optional[str] = None) -> List[Dict]:
    """Time every (paradigm, rate) of ``arch`` (or :data:`TINY`) on
    ``batch`` images at torch's current thread count, the whole backbone
    static (``static_forward``) against dynamic (``backbone(x)``); prints
    each row (:func:`fmt_row`) as it is measured.

    Returns:
        one dict per row: arch, batch, size, paradigm, threads, rate,
        gate_mean, flops_rate (encoder), stem_ms (the T2T module alone),
        static_ms, dynamic_ms (whole backbone, wall-clock medians),
        speedup, cpu_speedup, and the whole backbone's predicted_ratio
        (dynamic / static), predicted_static_ms and predicted_dynamic_ms
        (:func:`predictor` of ``hardware``; None at a thread count other
        than the spec's ``num_pe``, the thread count a spec of this
        machine models).

    Raises:
        RuntimeError: at r = 1 the dynamic output differs from the static
            one by more than 1e-4 of its largest magnitude.
    """
    rows = []
    pred, p_batch = predictor(hardware, batch)
    threads = torch.get_num_threads()
    # a spec of this machine models one thread count (N_PE = threads)
    modelled = hardware is None or pred.hw.num_pe == threads
    kw = dict(TINY) if tiny else dict(t2t_vit_arch_kwargs(arch),
                                      img_size=size)
    size = kw['img_size']
    x = torch.randn(batch, 3, size, size)
    name = 'tiny' if tiny else arch
    for paradigm in paradigms:
        torch.manual_seed(0)
        net = LAUDT2TViT(paradigm=paradigm, dynamic_inference=True, **kw)
        net.eval()
        with torch.no_grad():
            tokens = stem_tokens(net, x).shape[1]  # also the warm-up
            stem_ms = statistics.median(
                wall_ms(lambda: stem_tokens(net, x)) for _ in range(repeats))
        geoms = net.block_geometries((size, size))
        sgeom = net.stem_geometry((size, size))
        p_static = pred.predict_static(geoms, p_batch, stem=sgeom).total_ms
        for rate in rates:
            dens = force_random_token_gates(net, rate, batch, tokens, seed=1)
            if rate == 1.0:  # exactness spot check: every output token
                with torch.no_grad(), _raw_output(net):
                    check_exact(net.static_forward(x)[-1], net(x)[-1], 1e-4)
            tm = bench_pair(net.static_forward, net, x, warmup, repeats)
            st, dy = tm.static_ms, tm.dynamic_ms
            with torch.no_grad():
                net(x)
            p_dyn = pred.predict_backbone(geoms, dens, p_batch,
                                          stem=sgeom).total_ms
            row = dict(arch=name, batch=batch, size=size,
                       paradigm=paradigm, threads=threads,
                       rate=rate,
                       gate_mean=sum(dens) / len(dens),
                       flops_rate=encoder_flops_rate(net), stem_ms=stem_ms,
                       static_ms=st, dynamic_ms=dy, speedup=tm.speedup,
                       cpu_speedup=tm.cpu_speedup,
                       predicted_ratio=p_dyn / p_static if modelled
                       else None,
                       predicted_static_ms=p_static if modelled else None,
                       predicted_dynamic_ms=p_dyn if modelled else None)
            rows.append(row)
            print(fmt_row(row), flush=True)
    return rows


def fmt_row(r: Dict) -> str:
    """One markdown row of :data:`HEADER` for a row of :func:`run`."""
    return table_row(COLUMNS, r)


def benchmark_t2t_vit(arch: Optional[str] = None,
                      paradigms: Sequence[str] = PARADIGMS,
                      rates: Sequence[float] = (0.25, 0.5, 1.0),
                      batch: int = 8, size: Optional[int] = None,
                      threads: Union[int, Sequence[int], None] = None,
                      warmup: int = 1, repeats: int = 5, tiny: bool = False,
                      json_path: Optional[str] = None,
                      hardware: Optional[str] = None) -> List[Dict]:
    """The LAUD-T2T-ViT benchmark of the command line (``tiny``: the
    :data:`TINY` model instead of ``arch`` at ``size``, default
    't2t-vit-t-14' at 224 px): :func:`run` at each thread count of
    ``threads`` (an int or a list; None: 1 and every logical CPU) as one
    printed table and, with ``json_path``, a JSON file of its rows. The
    'pred.' columns are those of :func:`predictor` (``hardware``: a spec
    file of ``calibrate_hardware.py`` on this CPU; None: the V100 at
    batch 128).

    Raises:
        ValueError: an option out of range, an unknown arch, ``arch`` /
            ``size`` with ``tiny``, or a ``hardware`` that is not a CPU
            spec (:func:`predictor`; names the option and value).
    """
    if tiny and (arch is not None or size is not None):
        raise ValueError(f'--arch={arch!r} / --size={size!r} cannot be used '
                         f'with --tiny (a 2-layer, 64-dim model on 64 px)')
    arch = 't2t-vit-t-14' if arch is None else arch
    size = 224 if size is None else size
    check_options(rates, warmup=warmup, repeats=repeats, batch=batch,
                  size=size)
    if not tiny and arch not in T2T_VIT_ARCHS:
        raise ValueError(f'--arch={arch!r} is not one of '
                         f'{sorted(T2T_VIT_ARCHS)}')
    pred, p_batch = predictor(hardware, batch)  # refuses a bad --hardware
    print(f'# predicted: {pred.hw.name}, batch {p_batch}, '
          f'{pred.implementation} kernels')
    rows = timing_table(
        lambda t: run(arch, paradigms, rates, batch, size, warmup, repeats,
                      tiny, hardware), COLUMNS, threads, json_path,
        backend=False)
    if hardware is not None:
        summary = prediction_errors(rows)
        print(summary or f'# no row at the thread count the spec models '
              f'(num_pe={pred.hw.num_pe}): nothing predicted')
    return rows


def prediction_errors(rows: Sequence[Dict]) -> Optional[str]:
    """The predictor against the measurement over the rows that carry a
    prediction in the benchmark's own milliseconds (``hardware`` given):
    the mean absolute percentage error (MAPE) of the whole backbone's
    static and dynamic ms (each static baseline counted once per row, as
    it was timed once per row) and the mean absolute error of the
    predicted speedup (measured ``speedup`` against static / dynamic
    predicted).

    Args:
        rows: rows of :func:`run` (or of its JSON file); those without a
            ``predicted_static_ms`` (None or absent) are skipped.

    Returns:
        one printed line, or None when no row has a prediction.

    Source: paper sec. 3.3 "Empirical validation" (MAPE of the latency
    predictor).
    """
    rows = [r for r in rows if r.get('predicted_static_ms') is not None]
    if not rows:
        return None

    def ape(p, m):
        return 100. * abs(p - m) / m
    st = [ape(r['predicted_static_ms'], r['static_ms']) for r in rows]
    dy = [ape(r['predicted_dynamic_ms'], r['dynamic_ms']) for r in rows]
    sp = [abs(r['predicted_static_ms'] / r['predicted_dynamic_ms'] -
              r['speedup']) for r in rows]
    n = len(rows)
    return (f'# predicted vs measured ms, {n} rows: MAPE '
            f'{(sum(st) + sum(dy)) / (2 * n):.1f} % (static '
            f'{sum(st) / n:.1f} %, dynamic {sum(dy) / n:.1f} %); speedup '
            f'off by {sum(sp) / n:.2f}x on average')
