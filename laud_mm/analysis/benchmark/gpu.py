"""GPU benchmark of LAUD-ResNet (``tools/gpu_check.sh``,
``tools/analysis_tools/benchmark_gpu.py``): the static cuDNN network against
the CUDA dynamic paths, and the latency predictor's device spec against the
measurements.

- Input: batch 128 x 3 x 224 x 224 (default), fp32 with TF32 off (the
  predictor models the FP32 units: docs/latency_predictor.md), or
  ``--dtype float16 / bfloat16`` (weights and input in that dtype).
- Static: the BN-folded dense backbone (``static_bottleneck_forward``,
  cuDNN), timed in NCHW and in channels_last; the faster of the two is the
  baseline of the speedups.
- Dynamic: every block's CUDA dynamic path
  (:mod:`laud_mm.models.resnet.dynamic_cuda`) with random gates forced at
  the FLOPs-based activation rate r (per-block r_i, as the CPU benchmark:
  docs/benchmarks.md); every masker still runs (a forced gate replaces
  its decision, not its cost).
- Timing: CUDA events around each forward, ``warmup`` untimed runs, the
  median of ``repeats``; static and dynamic alternate.
- Profile: one more forward of each configuration under ``torch.profiler``
  (:func:`kernel_profile`): the GPU activities it launches and the sum of
  their times, beside the wall clock (host-bound paths: busy << wall;
  launches per sample: activities that grow with the batch).
- Predictor: ``LatencyPredictor(hardware)`` (fused implementation, the
  paper's) at the realised per-block densities and the batch: MAPE and
  Spearman rho of predicted vs measured ms over every timed configuration
  (static included).

Goals (issue #21, H200): R101 layer r = 0.4 >= 2.2x, channel r = 0.5 >=
1.7x, spatial r = 0.5 >= 1.5x; predictor MAPE <= 10 %.

Source: paper sec. 4 (latency at batch 128 on server GPUs) and appendix A
(the predictor).
"""
import json
import os
import statistics
import time
from typing import Callable, Dict, List, Sequence, Tuple

import torch

#: (depth, paradigm, rate) -> minimum speedup over the static network
GOALS = {(101, 'layer', 0.4): 2.2, (101, 'channel', 0.5): 1.7,
         (101, 'spatial', 0.5): 1.5}
MAPE_GOAL = 10.0


class NoGPUError(RuntimeError):
    """The GPU check cannot run here (no CUDA device or no CUDA kernels)."""


def require_gpu() -> str:
    """The GPU's name, after checking that a CUDA device is visible and
    laud_mm's extension has its CUDA kernels.

    Raises:
        NoGPUError: naming what is missing.
    """
    from laud_mm import ops
    if not torch.cuda.is_available():
        raise NoGPUError(
            f'no CUDA GPU visible (torch {torch.__version__}, '
            f'torch.version.cuda={torch.version.cuda}): the GPU check needs '
            f'one NVIDIA GPU and a CUDA build of torch')
    if not ops.has_cuda_kernels():
        raise NoGPUError('laud_mm._ext has no CUDA kernels: rebuild with '
                         'FORCE_CUDA=1 python setup.py build_ext --inplace')
    return torch.cuda.get_device_name(0)


def cuda_ms(fn: Callable[[], object], warmup: int, repeats: int,
            cuda: bool = True) -> float:
    """Median milliseconds of ``fn()`` between two CUDA events (wall clock
    with ``cuda=False``: the CPU smoke test of :func:`run`)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if not cuda:
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
            continue
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def kernel_profile(fn: Callable[[], object]) -> Tuple[int, float]:
    """(GPU activities, GPU busy ms) of one call of ``fn``: the CUDA
    activities ``torch.profiler`` records (kernels, copies, fills) and the
    sum of their durations in ms (overlapping ones count twice). The
    call's wall time minus its busy time is the GPU's idle time, i.e. time
    the path spends waiting on its host (Python dispatch, host reads); a
    count that grows with the batch is a launch per sample (docs/
    benchmarks.md, "CUDA")."""
    from torch.profiler import ProfilerActivity, profile
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    acts = [e for e in prof.events()
            if e.device_type == torch.autograd.DeviceType.CUDA]
    return len(acts), sum(e.time_range.elapsed_us() for e in acts) / 1e3


def _cuda_gates(net) -> None:
    """Forced gates to the GPU (no host-to-device copy per forward)."""
    for b in net.blocks:
        f = b.masker.forced_gate
        if isinstance(f, torch.Tensor):
            b.masker.forced_gate = f.cuda()


def run(depths: Sequence[int] = (50, 101),
        paradigms: Sequence[str] = ('layer', 'channel', 'spatial'),
        rates: Dict[int, Sequence[float]] = None, batch: int = 128,
        size: int = 224, dtype: str = 'float32', warmup: int = 3,
        repeats: int = 10, hardware: str = 'h200',
        log: Callable[[str], None] = print, device: str = 'cuda') -> Dict:
    """Time every (depth, paradigm, rate) and the static networks; returns
    the result dict written by :func:`write_report` (rows, validation,
    goals, machine). ``device='cpu'`` is a smoke test of the whole run
    (tests; wall-clock timing, no GPU needed).

    Raises:
        ValueError: ``batch``, ``size`` or ``repeats`` < 1, ``warmup`` < 0
            (names the option and value; before any work).
        NoGPUError: ``device='cuda'`` without a GPU or the CUDA kernels.
    """
    for key, v, lo in (('batch', batch, 1), ('size', size, 1),
                       ('repeats', repeats, 1), ('warmup', warmup, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f'--{key}={v!r} must be an integer >= {lo}')
    from laud_mm.analysis.benchmark.common import (backbone_flops_ratio,
                                                   dynamic_forward,
                                                   static_forward)
    from laud_mm.analysis.benchmark.resnet import build, folded_stem
    from laud_mm.analysis.forced_gates import force_random_gates
    from laud_mm.analysis.validation import metrics
    from laud_mm.latency import LatencyPredictor
    from laud_mm.models.resnet.dynamic import static_bottleneck_forward
    cuda = device == 'cuda'
    gpu = require_gpu() if cuda else f'{device} (smoke test)'
    rates = rates or {50: (0.25, 0.5, 1.0), 101: (0.25, 0.4, 0.5, 1.0)}
    dt = getattr(torch, dtype)
    if cuda:  # FP32 units, as the predictor models them
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    pred = LatencyPredictor(hardware)
    hw = (size, size)
    dev = torch.device(device)
    x = torch.randn(batch, 3, *hw, device=dev, dtype=dt)
    rows: List[Dict] = []
    statics: Dict[int, Dict] = {}
    t_start = time.time()
    for depth in depths:
        for paradigm in paradigms:
            net = build(depth, paradigm).to(dev, dt)
            stem = folded_stem(net)
            geoms = net.block_geometries(hw)
            sgeom = net.stem_geometry(hw)

            def static(t=x):
                return static_forward(net, stem, t,
                                      static_bottleneck_forward)
            with torch.no_grad():
                if depth not in statics:
                    xl = x.contiguous(memory_format=torch.channels_last)
                    nchw = cuda_ms(static, warmup, repeats, cuda)
                    cl = cuda_ms(lambda: static(xl), warmup, repeats, cuda)
                    p_st = pred.predict_static(geoms, batch, sgeom).total_ms
                    acts, busy = kernel_profile(static) if cuda else \
                        (None, None)
                    statics[depth] = dict(depth=depth, nchw_ms=nchw,
                                          channels_last_ms=cl,
                                          best_ms=min(nchw, cl),
                                          predicted_ms=p_st,
                                          gpu_activities=acts,
                                          gpu_busy_ms=busy)
                    log(f'R{depth} static: NCHW {nchw:.2f} ms, '
                        f'channels_last {cl:.2f} ms, predicted '
                        f'{p_st:.2f} ms')
                st = statics[depth]
                for rate in rates.get(depth, (0.25, 0.5, 1.0)):
                    real = force_random_gates(net, rate, batch, hw, seed=1)
                    if cuda:
                        _cuda_gates(net)
                    out = dynamic_forward(net, x)
                    if rate == 1.0:  # exactness spot check
                        ref = static()
                        err = float((out - ref).abs().max() /
                                    ref.abs().max().clamp_min(1))
                    else:
                        err = None
                    ratio = backbone_flops_ratio(net, hw)
                    dens = [float(b.last_stats['density'].float().mean())
                            for b in net.blocks]
                    dyn = cuda_ms(lambda: dynamic_forward(net, x),
                                  warmup, repeats, cuda)
                    st_now = cuda_ms(static, 1, max(3, repeats // 3), cuda)
                    acts, busy = kernel_profile(
                        lambda: dynamic_forward(net, x)) if cuda else \
                        (None, None)
                    p_dyn = pred.predict_backbone(geoms, dens, batch,
                                                  sgeom).total_ms
                    row = dict(depth=depth, paradigm=paradigm, rate=rate,
                               rate_real=real, flops_ratio=ratio,
                               static_ms=st['best_ms'],
                               static_nchw_ms_now=st_now, dynamic_ms=dyn,
                               speedup=st['best_ms'] / dyn,
                               ideal=1 / ratio, predicted_ms=p_dyn,
                               predicted_speedup=st['predicted_ms'] / p_dyn,
                               max_rel_err=err, gpu_activities=acts,
                               gpu_busy_ms=busy)
                    rows.append(row)
                    log(fmt_row(row))
            del net
            if cuda:
                torch.cuda.empty_cache()
    meas = [s['nchw_ms'] for s in statics.values()] + \
        [r['dynamic_ms'] for r in rows]
    preds = [s['predicted_ms'] for s in statics.values()] + \
        [r['predicted_ms'] for r in rows]
    mape, rho = metrics(meas, preds)
    goals = []
    for (depth, paradigm, rate), goal in GOALS.items():
        hit = [r for r in rows if (r['depth'], r['paradigm'], r['rate']) ==
               (depth, paradigm, rate)]
        got = hit[0]['speedup'] if hit else None
        goals.append(dict(what=f'R{depth} {paradigm} r = {rate}',
                          goal=f'>= {goal}x', got=got,
                          met=None if got is None else got >= goal))
    goals.append(dict(what=f'predictor MAPE ({hardware})',
                      goal=f'<= {MAPE_GOAL} %', got=mape,
                      met=mape <= MAPE_GOAL))
    return dict(gpu=gpu, torch=torch.__version__, cuda=torch.version.cuda,
                batch=batch, size=size, dtype=dtype, tf32=False,
                warmup=warmup, repeats=repeats, hardware=hardware,
                statics=list(statics.values()), rows=rows,
                validation=dict(mape=mape, spearman=rho, cases=len(meas)),
                goals=goals, seconds=time.time() - t_start)


def _cell(v, fmt: str) -> str:
    return '' if v is None else format(v, fmt)


def fmt_row(r: Dict) -> str:
    """One row of the dynamic table (:func:`markdown`)."""
    return (f"| R{r['depth']} | {r['paradigm']} | {r['rate']} | "
            f"{r['rate_real']:.3f} | {r['static_ms']:.2f} | "
            f"{r['dynamic_ms']:.2f} | {r['speedup']:.2f}x | "
            f"{r['ideal']:.2f}x | {r['predicted_ms']:.2f} | "
            f"{r['predicted_speedup']:.2f}x | "
            f"{_cell(r['max_rel_err'], '.1e')} | "
            f"{_cell(r.get('gpu_activities'), 'd')} | "
            f"{_cell(r.get('gpu_busy_ms'), '.2f')} |")


def markdown(res: Dict) -> str:
    """The report as a markdown table (docs/benchmarks.md)."""
    lines = [f"GPU: {res['gpu']}, torch {res['torch']} (CUDA "
             f"{res['cuda']}), batch {res['batch']} x 3 x {res['size']} x "
             f"{res['size']}, {res['dtype']} (TF32 off), CUDA events, "
             f"{res['warmup']} warm-up runs, median of {res['repeats']}; "
             f"static = the faster of NCHW and channels_last; predictor "
             f"`{res['hardware']}`; GPU activities / busy ms: one profiled "
             f"forward (kernels, copies; the sum of their times).", '',
             '| static | NCHW ms | channels_last ms | predicted ms | '
             'GPU activities | GPU busy ms |',
             '|---|---|---|---|---|---|']
    for s in res['statics']:
        lines.append(f"| R{s['depth']} | {s['nchw_ms']:.2f} | "
                     f"{s['channels_last_ms']:.2f} | "
                     f"{s['predicted_ms']:.2f} | "
                     f"{_cell(s.get('gpu_activities'), 'd')} | "
                     f"{_cell(s.get('gpu_busy_ms'), '.2f')} |")
    lines += ['', '| backbone | paradigm | r | realised r_i | static ms | '
              'dynamic ms | speedup | ideal (FLOPs) | predicted ms | '
              'predicted speedup | max rel. err (r = 1) | GPU activities | '
              'GPU busy ms |',
              '|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    lines += [fmt_row(r) for r in res['rows']]
    v = res['validation']
    lines += ['', f"Predictor `{res['hardware']}` vs measured ms over "
              f"{v['cases']} configurations: MAPE {v['mape']:.1f} %, "
              f"Spearman {v['spearman']:.3f}.", '',
              '| goal | target | measured | met |', '|---|---|---|---|']
    for g in res['goals']:
        got = '-' if g['got'] is None else (
            f"{g['got']:.1f} %" if 'MAPE' in g['what'] else
            f"{g['got']:.2f}x")
        met = '-' if g['met'] is None else ('yes' if g['met'] else 'no')
        lines.append(f"| {g['what']} | {g['goal']} | {got} | {met} |")
    return '\n'.join(lines) + '\n'


def write_report(res: Dict, out_dir: str) -> Dict[str, str]:
    """``gpu_benchmark.json`` and ``gpu_benchmark.md`` in ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    paths = dict(json=os.path.join(out_dir, 'gpu_benchmark.json'),
                 markdown=os.path.join(out_dir, 'gpu_benchmark.md'))
    with open(paths['json'], 'w') as f:
        json.dump(res, f, indent=2)
    with open(paths['markdown'], 'w') as f:
        f.write(markdown(res))
    return paths

