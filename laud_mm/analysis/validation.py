"""Validation of the latency predictor against latency measured on this
machine (paper sec. 3.3 "Empirical validation" and Fig. 5).

:func:`measure_cases` times (PyTorch, fp32, BN folded) ResNet-50 bottleneck
blocks on the dynamic-inference path (``laud_mm.models.resnet.dynamic.
dynamic_bottleneck_forward``; gates imposed through ``masker.forced_gate``
with random patterns of an exact density,
:func:`~laud_mm.analysis.forced_gates.random_gate`) across paradigms and
granularities (spatial S in 1, 2, 4, 7; channel G in 1, 2, 4; layer),
activation rates 0.1 ... 1.0 and batch sizes, plus the static blocks
(``static_bottleneck_forward``) and whole backbones (stem + the blocks'
paths, without the backbone's FLOPs statistics); :func:`predict_cases`
predicts them (``implementation='eager'``, the same device spec) and
:func:`report` gives the mean absolute percentage error (MAPE) and Spearman
rank correlation, overall and per paradigm. With ``fit`` the spec's compute
rate, bandwidth and launch cost are first fitted (:func:`fit_on_cases`,
loss: the MAPE) on a random 30 % of the measured cases (the calibration
split) and the metrics are reported on the other 70 % (held out) as well.

Timing (:func:`laud_mm.latency.calibration.time_fn`): every case is timed
in ``repeats`` sweeps over all cases (each the fastest of >= 10 calls) and
keeps its fastest sweep; with one CPU thread the clock is the thread's CPU
time, so time slices that other processes take on the core are not
counted. Each block call starts as inside a backbone forward
(:func:`laud_mm.latency.calibration.cold_start`: its weights in DRAM, the
host code warm, its input in cache; the fastest of 10 - 30 calls) on a
CPU, unless ``warm_caches``. ``reuse`` re-predicts the cases of an earlier
``results.json`` (after a model change) without measuring.

:func:`validate_predictor` writes ``results.json``, ``table.md`` (the table
of ``docs/latency_predictor.md``) and ``pred_vs_measured.png`` (like the
paper's Fig. 5: scatter, and latency vs activation rate of one block per
paradigm). Command line: ``tools/analysis_tools/validate_predictor.py``.

Source: paper sec. 3.3 "Empirical validation" and Fig. 5.
"""
import copy
import json
import math
import os
import os.path as osp
import random
from functools import partial
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from laud_mm.latency.calibration import block_evictor, cold_start, time_fn

from .forced_gates import gate_shape, random_gate, realised_density

#: (stage, index) of the timed ResNet-50 blocks
BLOCKS_FULL = ((0, 1), (1, 0), (1, 1), (2, 1), (3, 1))
BLOCKS_QUICK = ((0, 1), (1, 0), (2, 1), (3, 1))


def build(paradigm: Optional[str], gran, device: torch.device):
    """LAUD-ResNet-50 of ``paradigm`` / granularity ``gran`` (per stage),
    dynamic inference, eval mode, on ``device``."""
    from laud_mm.models.resnet.backbone import LAUDResNet
    m = LAUDResNet(50, paradigm=paradigm, granularity=gran,
                   dynamic_inference=True, init_cfg=None)
    m.eval()
    m.to(device)
    return m


def measure_cases(device: torch.device, quick: bool = False,
                  min_time: float = 0.05, repeats: int = 3,
                  clock: str = 'auto', seed: int = 0, backbone: bool = True,
                  warm_caches: bool = False,
                  layout: str = 'NCHW') -> List[Dict]:
    """Build every case (model, input, forced gates), then time them in
    ``repeats`` sweeps over all cases and keep each case's fastest sweep
    (sweeps minutes apart: a burst of load from other processes inflates
    one sweep, not all). On a CPU, unless ``warm_caches``, every timed
    call of a block starts as inside a backbone forward, where each
    block's weights were last read a forward earlier
    (:func:`~laud_mm.latency.calibration.cold_start`): the caches
    evicted, then a twin of the block (a copy with its own weights, the
    same gate) run on a copy of the input, then the input read: the
    block's weights come from DRAM, the host code is warm and the input in
    cache. The whole backbones are timed back to
    back (a forward is its own such sequence).

    Args:
        device: where to run.
        quick: fewer blocks, rates and batches.
        min_time: seconds per timing batch (x 4 for whole backbones).
        repeats: sweeps.
        clock: timer (:func:`laud_mm.latency.calibration.select_clock`).
        seed: seed of the gate patterns.
        backbone: add the whole-backbone cases.
        warm_caches: time the blocks' calls back to back instead (a
            block's weights stay in cache from one call to the next).
        layout: the memory format of every input, blocks' and backbones'
            (a key of :data:`laud_mm.latency.calibration.LAYOUTS`): the
            dynamic path runs in its input's format, so this chooses the
            path that is validated.

    Returns:
        one dict per case: kind ('block' / 'backbone'), block, j (block
        index), paradigm ('static' or the paradigm), granularity, batch,
        density (realised; a list per block for backbones), measured_ms
        (fastest sweep), sweeps_ms.
    """
    from laud_mm.models.resnet.dynamic import (dynamic_bottleneck_forward,
                                               static_bottleneck_forward)
    from laud_mm.latency.calibration import check_layout
    fmt = check_layout(layout)
    gen = torch.Generator().manual_seed(seed)
    blocks = BLOCKS_QUICK if quick else BLOCKS_FULL
    rates = (0.1, 0.4, 0.7, 1.0) if quick else \
        (0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 1.0)
    batches = (1, 2) if quick else (1, 2, 4)
    configs = [('spatial', S) for S in (1, 2, 4, 7)] + \
        [('channel', G) for G in (1, 2, 4)] + [('layer', None)]
    in_hw = (224, 224)
    # (case dict, gates: [(masker, gate)], fn, min_time, twin's call or
    # None, input)
    jobs = []
    evict = block_evictor(device, warm_caches)

    def twin_of(block):  # a copy with its own weights, to time cold
        return None if evict is None else copy.deepcopy(block)

    def block_index(geoms, s, i):
        return [k for k, g in enumerate(geoms) if g.stage == s and
                g.index == i][0]

    static = build(None, None, device)
    sgeoms = static.block_geometries(in_hw)
    for (s, i) in blocks:
        j = block_index(sgeoms, s, i)
        twin = twin_of(static.blocks[j])
        for b in batches:
            x = torch.randn(b, sgeoms[j].in_channels, *sgeoms[j].in_hw,
                            device=device).contiguous(memory_format=fmt)
            jobs.append((dict(kind='block', block=f's{s}.b{i}', j=j,
                              paradigm='static', granularity=None, batch=b,
                              density=None), [],
                         partial(static_bottleneck_forward, static.blocks[j],
                                 x), min_time,
                         None if twin is None else partial(
                             static_bottleneck_forward, twin, x.clone()),
                         x))
    for par, gran in configs:
        model = build(par, None if gran is None else (gran,) * 4, device)
        geoms = model.block_geometries(in_hw)
        for (s, i) in blocks:
            j = block_index(geoms, s, i)
            geom, blk = geoms[j], model.blocks[j]
            if par == 'spatial' and gran > max(geom.out_hw):
                continue
            twin = twin_of(blk)
            for b in batches:
                x = torch.randn(b, geom.in_channels, *geom.in_hw,
                                device=device).contiguous(memory_format=fmt)
                x2 = None if twin is None else x.clone()
                for r in rates:
                    # (batch-1 layer gates round to 0 or 1: the realised
                    # density is what the predictor gets)
                    gate = random_gate(gate_shape(blk, geom, b), r, gen)
                    jobs.append((dict(kind='block', block=f's{s}.b{i}', j=j,
                                      paradigm=par, granularity=gran,
                                      batch=b, density=realised_density(
                                          blk, geom, gate)),
                                 [(blk.masker, gate.to(device))] + (
                                     [(twin.masker, gate.to(device))]
                                     if twin is not None else []),
                                 partial(dynamic_bottleneck_forward, blk, x,
                                         geom), min_time,
                                 None if twin is None else partial(
                                     dynamic_bottleneck_forward, twin, x2,
                                     geom), x))
    if backbone:
        for par, gran in [(None, None), ('spatial', (4, 4, 2, 1)),
                          ('channel', (2, 2, 2, 2)), ('layer', None)]:
            model = build(par, gran, device)
            x = torch.randn(1, 3, *in_hw, device=device).contiguous(
                memory_format=fmt)
            geoms = model.block_geometries(in_hw)
            for r in ((1.0,) if par is None else (0.3, 0.6, 1.0)):
                dens, gates = [], []
                for blk, geom in zip(model.blocks, geoms):
                    if par is None:
                        continue
                    shp = gate_shape(blk, geom, 1)
                    if par == 'layer':  # batch 1: on / off per block
                        gate = (torch.rand(1, generator=gen) < r).float()
                    else:
                        gate = random_gate(shp, r, gen)
                    gates.append((blk.masker, gate.to(device)))
                    dens.append(realised_density(blk, geom, gate))
                jobs.append((dict(kind='backbone', block='resnet50',
                                  paradigm=par or 'static',
                                  granularity=None if gran is None else
                                  '-'.join(map(str, gran)), batch=1,
                                  density=None if par is None else dens),
                             gates, partial(backbone_forward, model, x,
                                            geoms, par is not None),
                             min_time * 4, None, x))
    sweeps = [[] for _ in jobs]
    for rep in range(repeats):
        for k, (case, gates, fn, min_time, twin, x) in enumerate(jobs):
            for masker, gate in gates:
                masker.forced_gate = gate
            before = None if twin is None else \
                partial(cold_start, evict, twin, x)
            with torch.no_grad():
                t = time_fn(fn, device, min_time=min_time, clock=clock,
                            before=before)
            sweeps[k].append(t * 1e3)
        print(f'  sweep {rep + 1}/{repeats}: {len(jobs)} cases',
              flush=True)
    cases = []
    for (case, gates, _, _, _, _), ts in zip(jobs, sweeps):
        for masker, _ in gates:
            masker.forced_gate = None
        cases.append(dict(case, measured_ms=min(ts), sweeps_ms=ts))
    return cases


def backbone_forward(model, x: torch.Tensor, geoms, dynamic: bool
                     ) -> torch.Tensor:
    """Stem, then every block's BN-folded path (dynamic or static): the
    kernels the predictor models, without the backbone's FLOPs / gate
    statistics bookkeeping."""
    from laud_mm.models.layers.dynamic import owned_block_inputs
    from laud_mm.models.resnet.dynamic import (dynamic_bottleneck_forward,
                                               static_bottleneck_forward)
    h = model.maxpool(model.relu(model.norm1(model.conv1(x))))
    with owned_block_inputs(model.blocks if dynamic else []):
        for blk, g in zip(model.blocks, geoms):
            if dynamic:
                h = dynamic_bottleneck_forward(blk, h, g)[0]
            else:
                h = static_bottleneck_forward(blk, h)
    return h


def predict_cases(cases: Sequence[Dict], spec) -> List[float]:
    """Predicted ms of each case of :func:`measure_cases` for the device
    ``spec`` (eager implementation, the dynamic path's dense-fallback
    threshold, forced gates; single blocks without owned inputs, as they
    are timed)."""
    from laud_mm.latency import LatencyPredictor
    from laud_mm.models import resnet_geometries
    from laud_mm.ops.policy import SPATIAL_DENSE_THRESHOLD
    pred = LatencyPredictor(spec, implementation='eager',
                            spatial_dense_threshold=SPATIAL_DENSE_THRESHOLD,
                            forced_gates=True)
    # blocks are timed alone (their input is never written into)
    alone = LatencyPredictor(spec, implementation='eager',
                             spatial_dense_threshold=SPATIAL_DENSE_THRESHOLD,
                             forced_gates=True, owned_block_inputs=False)
    out = []
    for c in cases:
        par = None if c['paradigm'] == 'static' else c['paradigm']
        if c['kind'] == 'block':
            gran = c['granularity']
            geoms, _ = resnet_geometries(
                50, (224, 224), par,
                None if gran is None else (gran,) * 4)
            g = geoms[c['j']]
            if par is None:
                ms = pred.predict_static([g], c['batch']).total_ms
            else:
                ms = alone.predict_backbone([g], [c['density']],
                                            c['batch']).total_ms
        else:
            gran = None if c['granularity'] is None else \
                tuple(int(v) for v in c['granularity'].split('-'))
            geoms, stem = resnet_geometries(50, (224, 224), par, gran)
            if par is None:
                ms = pred.predict_static(geoms, 1, stem).total_ms
            else:
                ms = pred.predict_backbone(geoms, c['density'], 1,
                                           stem).total_ms
        out.append(ms)
    return out


def metrics(meas: Sequence[float], pred: Sequence[float]
            ) -> Tuple[float, float]:
    """(MAPE %, Spearman rho) of two equal-length lists."""
    from scipy.stats import spearmanr
    mape = 100. * sum(abs(p - m) / m for m, p in zip(meas, pred)) / len(meas)
    rho = float(spearmanr(meas, pred).correlation) if len(meas) > 2 \
        else float('nan')
    return mape, rho


def fit_on_cases(spec, cases: Sequence[Dict], idx: Sequence[int]):
    """Fit fp32_per_pe, bandwidth_gbs and, for a CPU spec (one with a
    weight reorder), weight_reorder_gbs, host_call_us and
    fused_gemm_speed, each within 10x of ``spec``'s value (a
    ``host_call_us`` of 0 starts from ``launch_us``), on the cases
    ``idx``. ``gemm_speed`` and ``attention_speed`` (relative to
    ``fp32_per_pe``) are rescaled so that the transformer kernels'
    absolute rates stay as calibrated (ResNet cases say nothing of
    them). ``launch_us`` and ``region_us`` stay measured, as in
    :func:`laud_mm.latency.calibration.fit_spec`: the host calls around
    the kernels are the fitted ``host_call_us``. The loss is the reported
    metric, the mean absolute percentage error, minimised by Powell's
    method, bounded to that box, with restarts
    (docs/latency_predictor_history.md, "Fourth round").

    Returns:
        the fitted :class:`~laud_mm.latency.HardwareSpec`.
    """
    import numpy as np
    from scipy.optimize import minimize
    keys = ('fp32_per_pe', 'bandwidth_gbs')
    start = dict(spec.to_dict())
    if spec.weight_reorder_gbs > 0:  # CPU specs (latency.calibration)
        keys += ('weight_reorder_gbs', 'host_call_us', 'fused_gemm_speed')
        start['host_call_us'] = spec.host_call_us or spec.launch_us
    sub = [cases[i] for i in idx]
    meas = np.array([c['measured_ms'] for c in sub])
    # the fused GEMMs' rate, fp32_per_pe x fused_gemm_speed, is searched
    # as one coordinate: searched apart, the compute rate could not move
    # without the fused kernels' speed (a valley the search stalled in)
    if 'fused_gemm_speed' in keys:
        start['fused_gemm_speed'] *= start['fp32_per_pe']
    x_start = np.log([max(start[k], 1e-3) for k in keys])

    def make(x):  # within 10x of the starting (measured) spec
        x = np.clip(x, x_start - math.log(10), x_start + math.log(10))
        v = dict(zip(keys, np.exp(x)))
        if 'fused_gemm_speed' in v:
            v['fused_gemm_speed'] /= v['fp32_per_pe']
        # the transformer kernels' calibrated rates are not fitted on
        # ResNet blocks: their absolute rate (x fp32_per_pe) is kept
        scale = spec.fp32_per_pe / v['fp32_per_pe']
        v['gemm_speed'] = spec.gemm_speed * scale
        v['attention_speed'] = spec.attention_speed * scale
        return spec.replace(**{k: float(x) for k, x in v.items()})

    def loss(x):
        p = np.array(predict_cases(sub, make(x)))
        return float(np.mean(np.abs(p / meas - 1.)))
    x = x_start
    lo, hi = x_start - math.log(10), x_start + math.log(10)
    for _ in range(3):  # restarts reset the search directions
        # bounded: past the box's edge a coordinate has no effect on the
        # loss (make clips it), and the search stalled there
        res = minimize(loss, x, method='Powell', bounds=list(zip(lo, hi)),
                       options=dict(maxiter=20, xtol=1e-3, ftol=1e-6))
        if np.allclose(res.x, x, atol=1e-3):
            break
        x = res.x
    return make(x)


#: density bands of :func:`bias_table`: (label, low, high), low <= d < high
DENSITY_BANDS = (('0', 0., 1e-9), ('(0, 0.25)', 1e-9, 0.25),
                 ('[0.25, 1)', 0.25, 1.), ('1', 1., 2.))


def bias_table(cases: Sequence[Dict], preds: Sequence[float]) -> str:
    """Markdown table of the blocks' mean signed error, predicted /
    measured - 1 in %, per (paradigm, S/G) and density band
    (:data:`DENSITY_BANDS`, the case's realised density): a systematic
    model error shows as a bias of one sign in a band, timing noise as a
    spread of both signs (static blocks: one band, '-').

    Args:
        cases: :func:`measure_cases` dicts ('kind', 'paradigm',
            'granularity', 'density', 'measured_ms' in ms).
        preds: predicted ms, one per case.

    Raises:
        ValueError: a block case's density outside [0, 1].
    """
    acc = {}
    for c, p in zip(cases, preds):
        if c['kind'] != 'block':
            continue
        d = c['density']
        band = '-' if d is None else next(
            (lab for lab, lo, hi in DENSITY_BANDS if lo <= d < hi), None)
        if band is None:
            raise ValueError(f'bias_table: case density={d!r} is outside '
                             f'[0, 1]')
        key = (c['paradigm'], c['granularity'] or '-')
        acc.setdefault(key, {}).setdefault(band, []).append(
            p / c['measured_ms'] - 1.)
    labels = ['-'] + [b[0] for b in DENSITY_BANDS]
    lines = ['Blocks: mean signed error % (predicted / measured - 1; n) '
             'per density band', '',
             '| paradigm | S/G | ' + ' | '.join(
                 f'd = {b}' if b != '-' else 'static' for b in labels) + ' |',
             '|---|---|' + '---|' * len(labels)]
    for (par, gran), bands in sorted(acc.items(), key=str):
        cells = [f'{100 * sum(v) / len(v):+.1f} ({len(v)})'
                 if (v := bands.get(b)) else '' for b in labels]
        lines.append(f'| {par} | {gran} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def report(cases: Sequence[Dict], preds: Sequence[float],
           idx_sets: Dict[str, List[int]], out_dir: str, spec) -> str:
    """Markdown table of MAPE and Spearman rho per (kind, paradigm,
    granularity), per paradigm of the held-out split, per index set
    (``idx_sets``: name -> case indices), the blocks' signed error per
    density band (:func:`bias_table`) and the timing noise of the sweeps;
    written to ``<out_dir>/table.md`` and returned."""
    groups = {}
    for c, p in zip(cases, preds):
        key = (c['kind'], c['paradigm'], c['granularity'])
        groups.setdefault(key, []).append((c['measured_ms'], p))
    lines = [f'Device spec: `{spec.name}`; {len(cases)} cases.', '',
             '| cases | paradigm | S/G | n | MAPE % | Spearman |',
             '|---|---|---|---|---|---|']
    for (kind, par, gran), v in sorted(groups.items(), key=str):
        m, rho = metrics([a for a, _ in v], [b for _, b in v])
        lines.append(f'| {kind} | {par} | {gran or "-"} | {len(v)} | '
                     f'{m:.1f} | {rho:.3f} |')
    held = idx_sets.get('held out 70%')
    for par in sorted({cases[i]['paradigm'] for i in held or ()}):
        idx = [i for i in held if cases[i]['paradigm'] == par]
        m, rho = metrics([cases[i]['measured_ms'] for i in idx],
                         [preds[i] for i in idx])
        lines.append(f'| held out 70% | {par} | all | {len(idx)} | {m:.1f} '
                     f'| {rho:.3f} |')
    for name, idx in idx_sets.items():
        m, rho = metrics([cases[i]['measured_ms'] for i in idx],
                         [preds[i] for i in idx])
        lines.append(f'| **{name}** | all | - | {len(idx)} | **{m:.1f}** | '
                     f'**{rho:.3f}** |')
    lines += ['', bias_table(cases, preds)]
    spread = sorted(max(c['sweeps_ms']) / min(c['sweeps_ms']) - 1.
                    for c in cases if len(c.get('sweeps_ms', ())) > 1)
    if spread:
        lines += ['', f'Timing noise: {len(cases[0]["sweeps_ms"])} sweeps; '
                  f'slowest / fastest sweep of a case - 1: median '
                  f'{100 * spread[len(spread) // 2]:.1f} %, 90th percentile '
                  f'{100 * spread[int(0.9 * (len(spread) - 1))]:.1f} %.']
    table = '\n'.join(lines)
    with open(osp.join(out_dir, 'table.md'), 'w') as f:
        f.write(table + '\n')
    return table


def plot(cases: Sequence[Dict], preds: Sequence[float], out_dir: str
         ) -> str:
    """Predicted against measured ms (log-log, by paradigm), and latency
    against activation rate of block s2.b1 at batch 2 per paradigm (paper
    Fig. 5); written to ``<out_dir>/pred_vs_measured.png``, path
    returned."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    colors = {'static': 'k', 'spatial': 'tab:blue', 'channel': 'tab:orange',
              'layer': 'tab:green'}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    ax = axes[0]
    for par, col in colors.items():
        xs = [c['measured_ms'] for c, p in zip(cases, preds)
              if c['paradigm'] == par]
        ys = [p for c, p in zip(cases, preds) if c['paradigm'] == par]
        ax.scatter(xs, ys, s=10, c=col, label=par, alpha=0.7)
    lo = min(min(c['measured_ms'] for c in cases), min(preds)) * 0.8
    hi = max(max(c['measured_ms'] for c in cases), max(preds)) * 1.2
    ax.plot([lo, hi], [lo, hi], 'k--', lw=0.8)
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.set_xlabel('measured ms')
    ax.set_ylabel('predicted ms')
    ax.legend()
    ax.set_title('predicted vs measured')
    ax = axes[1]
    # paper Fig. 5: one block, latency vs activation rate, batch 1
    blk = 's2.b1'
    for par, gran, col in (('spatial', 2, 'tab:blue'),
                           ('channel', 2, 'tab:orange'),
                           ('layer', None, 'tab:green')):
        sel = sorted([(c['density'], c['measured_ms'], p) for c, p in
                      zip(cases, preds) if c['kind'] == 'block' and
                      c['block'] == blk and c['paradigm'] == par and
                      c['granularity'] == gran and c['batch'] == 2],
                     key=lambda t: t[0])
        if not sel:
            continue
        ax.plot([t[0] for t in sel], [t[2] for t in sel], '-', c=col,
                label=f'{par} {gran or ""} predicted')
        ax.scatter([t[0] for t in sel], [t[1] for t in sel], c=col, s=14)
    st = [c['measured_ms'] for c in cases if c['block'] == blk and
          c['paradigm'] == 'static' and c['batch'] == 2]
    if st:
        ax.axhline(st[0], color='k', lw=0.8, label='static measured')
    ax.set_xlabel('activation rate (mask density)')
    ax.set_ylabel('ms (batch 2)')
    ax.set_title(f'ResNet-50 block {blk}: lines predicted, dots measured')
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = osp.join(out_dir, 'pred_vs_measured.png')
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def validate_predictor(hardware: str = 'cpu', device: str = 'cpu',
                       threads: int = 2, quick: bool = False,
                       fit: bool = False, no_backbone: bool = False,
                       min_time: Optional[float] = None,
                       repeats: Optional[int] = None,
                       clock: Optional[str] = None,
                       reuse: Optional[str] = None,
                       seed: int = 0,
                       out_dir: str = 'work_dirs/validate_predictor',
                       warm_caches: bool = False,
                       layout: Optional[str] = None) -> Tuple[float, float]:
    """Measure (or reuse) the cases, optionally fit the spec, predict, and
    write ``results.json``, ``table.md`` (printed), ``pred_vs_measured.png``
    and, with ``fit``, ``fitted_spec.yaml`` into ``out_dir``.

    Args:
        hardware: device spec name or .yaml / .json (calibrated).
        device: 'cpu' or 'cuda'.
        threads: torch threads.
        quick: fewer blocks / rates / batches (~3 min on 2 cores).
        fit: fit the spec on 30 % of the cases first.
        no_backbone: skip the whole-backbone cases.
        min_time: seconds per timing batch (default 0.05).
        repeats: sweeps over all cases; each case keeps its fastest
            (default 3).
        clock: timer (:func:`laud_mm.latency.calibration.select_clock`,
            default 'auto').
        reuse: an earlier ``results.json`` whose measured cases are
            re-predicted instead of measured (the measuring options
            ``quick``, ``no_backbone``, ``min_time``, ``repeats``,
            ``clock``, ``warm_caches`` do not apply; the layout is the
            file's).
        seed: seed of the gates and of the calibration split.
        out_dir: output directory.
        warm_caches: time the blocks' calls back to back, their weights
            in cache (:func:`measure_cases`; default: as inside a
            forward).
        layout: the inputs' memory format (default 'NCHW';
            :func:`measure_cases`; 'auto':
            :func:`laud_mm.latency.calibration.auto_layout`): the dynamic
            path validated ('channels_last': the one the backbones'
            ``dynamic_memory_format`` gives on AVX-512 CPUs; calibrate the
            spec in the same format, ``calibrate_hardware.py --layout``),
            recorded in ``results.json`` (with ``reuse``: the reused
            file's, which ``layout``, when given, must equal).

    Returns:
        (MAPE %, Spearman rho) over all cases.

    Raises:
        ValueError: ``threads`` or ``repeats`` < 1, ``min_time`` <= 0, an
            unknown ``layout``, a CPU spec whose ``num_pe`` is not
            ``threads``, a measuring option with ``reuse``, or a ``layout``
            other than the reused file's (names the option and value).
    """
    if reuse:
        given = [f'--{k}' for k, v in (
            ('quick', quick or None), ('no-backbone', no_backbone or None),
            ('min-time', min_time), ('repeats', repeats), ('clock', clock),
            ('warm-caches', warm_caches or None)) if v is not None]
        if given:
            raise ValueError(f'{"/".join(given)} do not apply with --reuse='
                             f'{reuse!r}: its cases are re-predicted, not '
                             f'measured')
    min_time = 0.05 if min_time is None else min_time
    repeats = 3 if repeats is None else repeats
    clock = 'auto' if clock is None else clock
    for name, v in (('threads', threads), ('repeats', repeats)):
        if v < 1:
            raise ValueError(f'--{name}={v} must be >= 1')
    if min_time <= 0:
        raise ValueError(f'--min-time={min_time} must be > 0')
    from laud_mm.latency.calibration import auto_layout, check_layout
    if layout is not None:
        check_layout(layout)
    torch.set_num_threads(threads)
    if layout == 'auto':
        layout = auto_layout()
    reused = None
    if reuse:
        with open(reuse) as f:
            reused = json.load(f)
        if layout is not None and reused.get('layout') != layout:
            raise ValueError(f'--layout={layout!r}: the cases of --reuse='
                             f'{reuse!r} were measured in '
                             f'{reused.get("layout")!r}')
        layout = reused.get('layout')
    elif layout is None:
        layout = 'NCHW'
    from laud_mm.latency import get_hardware
    spec = get_hardware(hardware)
    dev = torch.device(device)
    if dev.type == 'cpu' and spec.num_pe != threads:
        # a CPU spec's N_PE is the thread count it was calibrated at
        raise ValueError(f'--hardware {hardware!r} models num_pe='
                         f'{spec.num_pe} threads but --threads={threads}: '
                         f'calibrate a spec with calibrate_hardware.py '
                         f'--threads {threads}')
    os.makedirs(out_dir, exist_ok=True)
    if reused is not None:
        cases = [{k: v for k, v in c.items() if k != 'predicted_ms'}
                 for c in reused['cases']]
        print(f'{len(cases)} measured cases from {reuse} (inputs in '
              f'{layout})')
    else:
        print(f'inputs in {layout}')
        cases = measure_cases(dev, quick=quick, min_time=min_time,
                              repeats=repeats, clock=clock, seed=seed,
                              backbone=not no_backbone,
                              warm_caches=warm_caches, layout=layout)
    idx_all = list(range(len(cases)))
    idx_sets = {'all cases': idx_all}
    if fit:
        rnd = random.Random(seed)
        calib = sorted(rnd.sample(idx_all, max(3, int(0.3 * len(cases)))))
        held = [i for i in idx_all if i not in set(calib)]
        spec = fit_on_cases(spec, cases, calib)
        idx_sets = {'calibration 30%': calib, 'held out 70%': held,
                    'all cases': idx_all}
        from laud_mm.latency import save_hardware
        save_hardware(spec, osp.join(out_dir, 'fitted_spec.yaml'))
    preds = predict_cases(cases, spec)
    for c, p in zip(cases, preds):
        c['predicted_ms'] = p
    with open(osp.join(out_dir, 'results.json'), 'w') as f:
        json.dump(dict(spec=spec.to_dict(), cases=cases, layout=layout),
                  f, indent=1)
    print(report(cases, preds, idx_sets, out_dir, spec))
    print('plot:', plot(cases, preds, out_dir))
    return metrics([c['measured_ms'] for c in cases], preds)
