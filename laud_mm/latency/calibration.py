"""Measure this machine (CPU, or a GPU) and build a :class:`HardwareSpec`
for the latency predictor (paper appendix A, docs/method.md sec. 4).

Micro-benchmarks (:func:`microbench`, PyTorch, fp32):

* launch cost: a tiny ``add`` and a tiny ``conv2d`` (mean of the two), us;
* parallel region (CPU, several threads): an ``add`` of a grain per
  thread at the thread count against one thread
  (:func:`parallel_region_us`), us;
* off-chip bandwidth: ``torch.add(a, b, out=c)`` on 64 MB tensors
  (3 tensors moved per call), GB/s;
* on-chip factor: the same between 256 KB and 1 MB tensors (cache
  resident), divided by the off-chip figure (at most
  :data:`L2_FACTOR_MAX`);
* compute rate: the fastest of a few large convolutions (3x3 and 1x1,
  compute bound), MAC/s, turned into ``fp32_per_pe = rate / (N_PE * f)``
  with N_PE the threads (CPU: ``threads``, so a spec models one thread
  count; the eager model splits a kernel's tiles over them) or SMs (GPU)
  and f the nominal clock.

:func:`fit_spec` then refines ``fp32_per_pe`` and ``bandwidth_gbs`` (within
10x of the micro-benchmarks; the launch cost stays measured) by least
squares on the log latency of the static ResNet-50 bottleneck blocks (batch
1 and 2, 224 px, the eager BN-folded path of
:mod:`laud_mm.models.resnet.dynamic`) against the predictor
(``implementation='eager'``). With one CPU thread the timings are the
thread's CPU time (:func:`time_fn`). On a CPU, :func:`dynamic_path_terms`
then measures the eager dynamic path's host cost per bookkeeping call and
the fused kernels' GEMM speed on three dynamic blocks of one geometry
(``host_call_us``, ``fused_gemm_speed``), and on any device
:func:`transformer_terms` the rates of a transformer layer's library
kernels, its token GEMMs and its fused attention (``gemm_speed``,
``attention_speed``), and the bandwidth its streaming kernels reach in
a whole encoder layer (``token_stream_gbs``); the predictor validation
(:mod:`laud_mm.analysis.validation`) times 274 other cases. Blocks are
timed as they run inside a backbone forward (:func:`cold_start`: weights
in DRAM, host code warm, input in cache), unless ``warm_caches``, and all
of them in the same rounds (:func:`time_cases`), so that the terms derived
from different blocks see the machine in the same states.

:func:`time_fn` is also the timer of that validation. Command line:
``tools/analysis_tools/calibrate_hardware.py``.

Source: paper appendix A (hardware properties of the model), docs/method.md
sec. 4.
"""
import copy
import math
import os
import os.path as osp
import statistics
import time
from functools import partial
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..models.layers.backbone import STATIC_LAYOUTS, layout_name
from ..models.layers.folding import LayoutWeight
from .hardware import HardwareSpec, save_hardware

#: the memory formats a CPU calibration can time its tensors in, those the
#: benchmarks time the static network in (the backbones'
#: ``dynamic_memory_format``: channels_last where the fused kernels run)
LAYOUTS = STATIC_LAYOUTS


def check_layout(layout: str) -> torch.memory_format:
    """The memory format of a ``--layout`` name (a key of :data:`LAYOUTS`;
    ``'auto'``: :func:`auto_layout`).

    Raises:
        ValueError: a name that is neither (names the option).
    """
    if layout == 'auto':
        layout = auto_layout()
    if layout not in LAYOUTS:
        raise ValueError(f'--layout={layout!r} must be one of '
                         f"{list(LAYOUTS) + ['auto']}")
    return LAYOUTS[layout]


def add_layout_argument(parser, default: Optional[str] = 'NCHW') -> None:
    """Add ``--layout`` (:data:`LAYOUTS` keys or ``'auto'``; ``default``,
    None: the tool resolves it, to NCHW) to an ``argparse`` parser: the
    option ``calibrate_hardware.py`` and ``validate_predictor.py`` share,
    since a spec and its validation must time the same path."""
    parser.add_argument(
        '--layout', default=default, choices=list(LAYOUTS) + ['auto'],
        help="memory format of every timed input (default NCHW): the "
        "dynamic path runs in "
        "its input's format; auto: the one the backbones' "
        "dynamic_memory_format gives here (channels_last on AVX-512 CPUs), "
        "what the benchmarks and BackboneSpeedHook time; calibrate and "
        "validate in the same one")


def auto_layout() -> str:
    """The key of :data:`LAYOUTS` in which a LAUD-ResNet's dynamic forward
    runs fastest on this CPU at torch's thread count
    (:func:`laud_mm.models.resnet.dynamic.dynamic_memory_format`:
    channels_last where the fused kernels run, AVX-512), what the
    benchmarks and ``laud_mm.BackboneSpeedHook`` feed it."""
    from laud_mm.models.resnet.dynamic import dynamic_memory_format
    return layout_name(dynamic_memory_format('channel',
                                             torch.zeros(1, 3, 32, 32)))


#: upper bound of the on-chip / off-chip bandwidth ratio of a calibrated
#: spec: the two bandwidths are slopes between two sizes, and a time slice
#: lost to another process between them can make the ratio absurd (2.7e5
#: on this 2-core machine at load 9); caches are within ~10x of DRAM
L2_FACTOR_MAX = 16.


def _sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    if device.type == 'cuda':
        torch.cuda.synchronize()


def select_clock(device: torch.device, clock: str):
    """The timer of :func:`time_fn`: ``'cpu'`` = CPU time of the calling
    thread (``time.thread_time``), ``'wall'`` = ``time.perf_counter``;
    ``'auto'`` = CPU time for single-threaded CPU runs, else wall.

    Returns:
        a no-argument function returning seconds.

    Raises:
        ValueError: an unknown ``clock``, or ``'cpu'`` on a GPU.
    """
    if clock not in ('auto', 'cpu', 'wall'):
        raise ValueError(f"clock={clock!r} is not one of 'auto', 'cpu', "
                         f"'wall'")
    if clock == 'auto':
        clock = 'cpu' if device.type == 'cpu' and \
            torch.get_num_threads() == 1 else 'wall'
    if clock == 'cpu' and device.type != 'cpu':
        raise ValueError("clock='cpu' times CPU work only (device is "
                         f"{device.type})")
    return time.thread_time if clock == 'cpu' else time.perf_counter


#: most timed calls of :func:`time_fn` with a ``before`` callable
MAX_CALLS_BEFORE = 30


def cache_evictor(device: torch.device, llc_mb: Optional[float] = None
                  ) -> Callable[[], object]:
    """A callable that evicts the CPU caches: it reads (sums) a buffer of
    twice the last-level cache, ``llc_mb`` MB (default
    :func:`cpu_llc_mb`), at least 64 MB. Reads, not writes: no dirty lines
    are left to be written back during the call timed next.

    Why: inside a backbone forward each block's weights were last read a
    whole forward earlier (ResNet-50: ~100 MB of weights against a 32 MB
    L3), so a block runs with its weights in DRAM, while a block timed in a
    loop finds them in cache (docs/latency_predictor.md, "Cold weights";
    :func:`cold_start`).

    Returns:
        a no-argument callable (returns the buffer's sum, a 0-d tensor).

    Raises:
        ValueError: ``device`` is not a CPU (the GPU timings are not
            validated with evicted caches), or ``llc_mb`` negative.
    """
    if device.type != 'cpu':
        raise ValueError(f'cache_evictor evicts CPU caches; got device '
                         f'{device}')
    if llc_mb is not None and llc_mb < 0:
        raise ValueError(f'llc_mb must be >= 0, got {llc_mb}')
    size = cpu_llc_mb() if llc_mb is None else llc_mb
    n = int(max(64., 2. * size) * 1e6) // 4
    buf = torch.ones(n, device=device)
    return lambda: buf.sum()


def block_evictor(device: torch.device, warm_caches: bool = False
                  ) -> Optional[Callable[[], object]]:
    """The eviction of :func:`cold_start` where blocks are timed as inside
    a forward: :func:`cache_evictor` on a CPU unless ``warm_caches``;
    None (calls timed back to back) otherwise, a GPU included (its
    evicted-cache timings are not validated)."""
    if warm_caches or device.type != 'cpu':
        return None
    return cache_evictor(device)


def cold_start(evict: Callable[[], object],
               twin: Optional[Callable[[], object]],
               *inputs: torch.Tensor) -> None:
    """The state a block starts in inside a backbone forward: its weights
    in DRAM (last read a forward earlier), the host side warm and its
    input in cache (the previous block has just run and written it).
    ``evict()`` (:func:`cache_evictor`), then ``twin()`` (a copy of the
    block with its own weights: it runs the same host code and library
    calls, as the previous block of a forward does, without bringing
    this block's weights back), then a read of ``inputs``.

    Args:
        evict: the cache eviction (:func:`cache_evictor`).
        twin: the twin block's call, or None.
        inputs: tensors of any shape, each read once (``sum``).
    """
    evict()
    if twin is not None:
        twin()
    for x in inputs:
        x.sum()


def time_fn(fn, device: torch.device, min_time: float = 0.2,
            warmup: int = 2, max_iter: int = 2000, rounds: int = 7,
            clock: str = 'auto', min_calls: int = 10,
            before: Optional[Callable[[], object]] = None) -> float:
    """Seconds per call of ``fn()`` on ``device``, robust to other
    processes sharing the cores: calls slower than 1 ms are timed one by
    one (at least ``min_calls`` calls, ``min_time`` in all) and the fastest
    is kept;
    faster calls are timed in ``rounds`` batches and the fastest batch mean
    is kept.

    ``clock`` (see :func:`select_clock`): with one thread on the CPU the
    default times the thread's CPU time, so that time slices given to other
    processes on the same core are not counted (on a core shared 50/50,
    wall-clock medians were 2x the CPU time and wall-clock minima varied by
    up to 30 % between repeats, CPU-time minima by 3-6 %); the cache
    pollution by the other processes is still counted, which the minimum
    over the calls reduces.

    ``before`` (untimed) runs before every timed call, which is then timed
    alone: ``min_calls`` calls or ``min_time`` of them in all, whichever
    is more, but at most :data:`MAX_CALLS_BEFORE` (``before`` may cost
    more than the call: :func:`cache_evictor` reads twice the last-level
    cache).

    Returns:
        seconds (the fastest call, or the fastest batch's mean)."""
    timer = select_clock(device, clock)
    for _ in range(warmup):
        fn()
    _sync(device)

    def call() -> float:
        if before is not None:
            before()
            _sync(device)
        t = timer()
        fn()
        _sync(device)
        return timer() - t
    one = max(call(), 1e-7)
    if before is not None:
        calls = min(MAX_CALLS_BEFORE, max(min_calls, int(min_time / one)))
        return min([one] + [call() for _ in range(calls - 1)])
    if one >= 1e-3:
        best = one
        for _ in range(int(max(min_calls, min(200, min_time / one)))):
            best = min(best, call())
        return best
    reps = int(max(1, min(max_iter, min_time / rounds / one)))
    samples = []
    for _ in range(rounds):
        t = timer()
        for _ in range(reps):
            fn()
        _sync(device)
        samples.append((timer() - t) / reps)
    return min(samples)


#: rounds of :func:`time_cases` over the calibration's blocks
CALIB_ROUNDS = 5
#: timed calls of each block per round (the fastest kept)
CALIB_CALLS = 3
#: seconds of calls per case over all rounds where no ``before`` runs
#: (warm caches, a GPU): :func:`time_fn`'s batches of back-to-back calls
CALIB_MIN_TIME = 0.3


def time_cases(cases: Sequence[Tuple[Callable, Optional[Callable]]],
               device: torch.device, rounds: int = CALIB_ROUNDS,
               calls: int = CALIB_CALLS, clock: str = 'auto'
               ) -> List[float]:
    """Seconds per call of each case, on a machine whose speed drifts:
    ``rounds`` rounds over all the cases; in each round a case is timed
    by :func:`time_fn`, ``calls`` calls each after its ``before`` (without
    a ``before``: back to back, :data:`CALIB_MIN_TIME` / ``rounds``
    seconds of them, at least ``calls``), the fastest kept (other processes
    only add time), and the median over the rounds is kept. Every case
    thus samples the same stretch of time, so that terms derived from
    different cases (the fit's static blocks, the dynamic path's terms,
    which :func:`calibrate_hardware` divides into each other) see the
    machine in the same states, and a fast or slow stretch moves one
    round of a case, not the whole case (docs/latency_predictor.md,
    "Calibration on a shared machine").

    Args:
        cases: ``(fn, before)`` pairs as :func:`time_fn` takes them
            (``before`` None: calls back to back).
        device: where they run.
        rounds: rounds over all cases (>= 1).
        calls: timed calls per case and round (>= 1).
        clock: timer (:func:`select_clock`).

    Returns:
        seconds per call, one per case, in order.

    Raises:
        ValueError: ``rounds`` or ``calls`` < 1.
    """
    if rounds < 1 or calls < 1:
        raise ValueError(f'rounds={rounds!r} and calls={calls!r} must be >= 1')
    per: List[List[float]] = [[] for _ in cases]
    for r in range(rounds):
        for i, (fn, before) in enumerate(cases):
            per[i].append(time_fn(
                fn, device, min_calls=calls, warmup=2 if r == 0 else 0,
                min_time=0. if before is not None else
                CALIB_MIN_TIME / rounds, clock=clock, before=before))
    return [statistics.median(v) for v in per]


def cpu_clock_mhz() -> float:
    """Nominal clock from /proc/cpuinfo (MHz), 2000 if unknown."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.lower().startswith('cpu mhz'):
                    return float(line.split(':')[1])
    except OSError:
        pass
    return 2000.


def cpu_llc_mb() -> float:
    """Size of the CPU's last-level (highest) unified cache in MB (1e6
    bytes) from sysfs; 0 if unknown."""
    import glob
    best = (0, 0.)
    for d in glob.glob('/sys/devices/system/cpu/cpu0/cache/index*'):
        try:
            with open(osp.join(d, 'type')) as f:
                if f.read().strip() not in ('Unified', 'Data'):
                    continue
            with open(osp.join(d, 'level')) as f:
                level = int(f.read())
            with open(osp.join(d, 'size')) as f:
                size = f.read().strip()
        except (OSError, ValueError):
            continue
        mult = {'K': 1024, 'M': 1024 ** 2, 'G': 1024 ** 3}.get(size[-1:], 1)
        num = size[:-1] if size[-1:] in 'KMG' else size
        best = max(best, (level, float(num) * mult / 1e6))
    return best[1]


def cpu_vector_width() -> int:
    """FP32 SIMD lanes PyTorch's CPU kernels use (16 AVX-512, 8 AVX2, 4
    otherwise), from ``torch.backends.cpu.get_cpu_capability()``."""
    cap = torch.backends.cpu.get_cpu_capability().upper()
    return 16 if 'AVX512' in cap else 8 if 'AVX2' in cap else 4


def microbench(device: torch.device, layout: str = 'NCHW') -> dict:
    """Micro-benchmarks of ``device`` (see the module docstring); the
    convolutions' inputs in ``layout`` (a key of :data:`LAYOUTS`), their
    weights in the same format, as the folded blocks keep them
    (:class:`~laud_mm.models.layers.folding.LayoutWeight`).

    Returns:
        dict: launch_us (mean of add and conv), launch_add_us,
        launch_conv_us, bandwidth_gbs (off-chip), cache_gbs (on-chip),
        macs (best convolution rate, MAC/s), conv_rates (each
        convolution's, MAC/s), weight_reorder_gbs (CPU: oneDNN's per-call
        weight re-layout, GB/s; 0 on a GPU), region_us
        (:func:`parallel_region_us`).
    """
    dev = device
    a1 = torch.ones(1, device=dev)
    x1 = torch.ones(1, 1, 1, 1, device=dev)
    launch_add = time_fn(lambda: torch.add(a1, a1), dev)
    launch_conv = time_fn(lambda: F.conv2d(x1, x1), dev)
    launch = 0.5 * (launch_add + launch_conv)

    def t_add(n):
        a = torch.rand(n, device=dev)
        b = torch.rand(n, device=dev)
        c = torch.empty(n, device=dev)
        return time_fn(lambda: torch.add(a, b, out=c), dev)
    # bandwidth from the slope between two sizes (launch cancels out)
    n1, n2 = 4 * 1024 * 1024, 16 * 1024 * 1024
    big = 12 * (n2 - n1) / max(t_add(n2) - t_add(n1), 1e-9)
    s1, s2 = 64 * 1024, 256 * 1024
    small = 12 * (s2 - s1) / max(t_add(s2) - t_add(s1), 1e-9)
    rates = []
    for (n, cin, cout, hw, k) in ((1, 256, 256, 28, 3), (1, 512, 512, 14, 3),
                                  (4, 256, 1024, 14, 1)):
        x = torch.rand(n, cin, hw, hw, device=dev).contiguous(
            memory_format=check_layout(layout))
        # the weight in x's format, as the folded blocks keep it
        w = LayoutWeight(torch.rand(cout, cin, k, k, device=dev)).like(x)
        t = time_fn(lambda: F.conv2d(x, w, padding=k // 2), dev)
        rates.append(n * cin * cout * hw * hw * k * k / t)
    reorder = 0.
    if dev.type == 'cpu':
        # a direct convolution whose work is mostly its weights: 512 -> 512
        # 3x3 on one 3 x 3 image (padding 1: oneDNN's direct kernel), which
        # re-lays out the 9.4 MB of weights on each call (read + write);
        # its 21 MMAC at the best convolution rate are subtracted
        x = torch.rand(1, 512, 3, 3).contiguous(
            memory_format=check_layout(layout))
        w = LayoutWeight(torch.rand(512, 512, 3, 3)).like(x)
        t = time_fn(lambda: F.conv2d(x, w, padding=1), dev) - launch_conv \
            - 512 * 512 * 9 * 9 / max(rates)
        reorder = 2 * w.numel() * 4 / max(t, 1e-9) / 1e9
    return dict(launch_us=launch * 1e6, launch_add_us=launch_add * 1e6,
                launch_conv_us=launch_conv * 1e6, bandwidth_gbs=big / 1e9,
                cache_gbs=small / 1e9, macs=max(rates), conv_rates=rates,
                weight_reorder_gbs=reorder, region_us=parallel_region_us(dev))


def parallel_region_us(device: torch.device) -> float:
    """Cost of one parallel region at torch's thread count N
    (``HardwareSpec.region_us``): an ``add`` of N x
    :data:`~laud_mm.latency.operators.PARALLEL_GRAIN` elements (a grain per
    thread) timed at N threads and at one, both by the wall clock; the
    first less the second's share per thread.

    Args:
        device: the device.

    Returns:
        microseconds (>= 0); 0 with one thread or on a device other than
        the CPU.

    Raises:
        Nothing of its own (timing errors of :func:`time_fn` propagate).

    Source: docs/latency_predictor.md, "Parallel regions" (the term the
    paper's GPU model has no need of: its launch covers the SMs).
    """
    from .operators import PARALLEL_GRAIN
    threads = torch.get_num_threads()
    if device.type != 'cpu' or threads == 1:
        return 0.
    a = torch.rand(threads * PARALLEL_GRAIN)
    c = torch.empty_like(a)
    t_n = time_fn(lambda: torch.add(a, a, out=c), device, clock='wall')
    torch.set_num_threads(1)
    try:
        t_1 = time_fn(lambda: torch.add(a, a, out=c), device, clock='wall')
    finally:
        torch.set_num_threads(threads)
    return max(0., t_n - t_1 / threads) * 1e6


def static_block_fn(g, batch: int, device: torch.device,
                    layout: str = 'NCHW'):
    """The eager BN-folded static bottleneck of
    ``laud_mm.models.resnet.dynamic.static_bottleneck_forward`` with random
    weights for a ResNet :class:`BlockGeometry` ``g`` and a batch of
    ``batch``, its input in ``layout`` (a key of :data:`LAYOUTS`); returns
    a no-argument callable (its input tensor, (batch, C_in, H, W), as its
    attribute ``input``)."""
    x = torch.rand(batch, g.in_channels, *g.in_hw, device=device).contiguous(
        memory_format=check_layout(layout))
    w1 = torch.rand(g.width, g.in_channels, 1, 1, device=device) * 0.01
    # conv2's weight in its input's format, as FoldedBottleneck.conv2
    w2 = LayoutWeight(torch.rand(g.width, g.width, 3, 3, device=device)
                      * 0.01)
    w3 = torch.rand(g.out_channels, g.width, 1, 1, device=device) * 0.01
    b1 = torch.zeros(g.width, device=device)
    b3 = torch.zeros(g.out_channels, device=device)
    wd = torch.rand(g.out_channels, g.in_channels, 1, 1, device=device) \
        if g.has_downsample else None

    def fn():
        h = F.conv2d(x, w1, b1).relu_()
        h = F.conv2d(h, w2.like(h), b1, g.stride, 1).relu_()
        y = F.conv2d(h, w3, b3)
        s = F.conv2d(x, wd, b3, g.stride) if wd is not None else x
        return y.add_(s).relu_()
    fn.input = x
    return fn


#: the block of LAUD-ResNet-50 (224 px) that :func:`dynamic_path_terms`
#: times: stage 2 (14 x 14, 1024 -> 256 -> 1024), block 1
DYNAMIC_CALIB_BLOCK = (2, 1)


def _dynamic_block(paradigm: str, granularity: int, device: torch.device,
                   layout: str = 'NCHW'):
    """(block, geometry, input) of :data:`DYNAMIC_CALIB_BLOCK` of a random
    LAUD-ResNet-50 of ``paradigm`` (dynamic inference, eval), batch 1, the
    input in ``layout``."""
    from laud_mm.models.resnet.backbone import LAUDResNet
    model = LAUDResNet(50, paradigm=paradigm, granularity=(granularity,) * 4,
                       dynamic_inference=True, init_cfg=None).eval()
    model.to(device)
    geoms = model.block_geometries((224, 224))
    j = [k for k, g in enumerate(geoms)
         if (g.stage, g.index) == DYNAMIC_CALIB_BLOCK][0]
    g = geoms[j]
    x = torch.rand(1, g.in_channels, *g.in_hw, device=device).contiguous(
        memory_format=check_layout(layout))
    return model.blocks[j], g, x


def _half_gate(n_gates: int, shape, device: torch.device) -> torch.Tensor:
    """A gate of ``shape`` with the first ``n_gates // 2`` of a fixed
    random order on (1s and 0s)."""
    order = torch.randperm(n_gates, generator=torch.Generator().manual_seed(0))
    gate = torch.zeros(n_gates)
    gate[order[:n_gates // 2]] = 1.
    return gate.view(shape).to(device)


def dynamic_path_cases(spec: HardwareSpec, device: torch.device,
                       warm_caches: bool = False,
                       layout: str = 'NCHW') -> List[Dict]:
    """The blocks that :func:`dynamic_path_terms` times, built and ready:
    :data:`DYNAMIC_CALIB_BLOCK` of LAUD-ResNet-50 at batch 1 with its gate
    imposed (``masker.forced_gate``, on the case's own model): ``'empty'``
    (spatial, S = 2, every patch off) and, where the fused CPU kernels run
    (``laud_mm.ops.policy`` switches, this thread count, 16-lane vectors in
    ``spec``), ``'spatial'`` (S = 2) and ``'channel'`` (G = 2) with half
    their gates on.

    Args:
        spec: the spec (its ``vector_width`` decides the fused cases).
        device: where they run; not a CPU: no cases.
        warm_caches: calls back to back (``before`` None); default: each
            call after :func:`cold_start` with a twin of the block.
        layout: the blocks' input format (a key of :data:`LAYOUTS`).

    Returns:
        dicts with ``name``, ``fn`` and ``before`` (no-argument callables,
        as :func:`time_fn` takes them), ``g`` (the block's
        :class:`BlockGeometry`) and ``d`` (its mask density: spatial, the
        pixel fraction of the expanded mask; channel, the kept groups).
    """
    from laud_mm.models.layers.masks import expand_spatial_gate
    from laud_mm.models.resnet.dynamic import dynamic_bottleneck_forward
    from laud_mm.ops import policy
    if device.type != 'cpu':
        return []
    evict = block_evictor(device, warm_caches)

    def case(name, paradigm, gran, shape_of, half):
        blk, g, x = _dynamic_block(paradigm, gran, device, layout)
        shape = shape_of(g)
        gate = _half_gate(math.prod(shape), shape, device) if half else \
            torch.zeros(*shape, device=device)
        blk.masker.forced_gate = gate
        d = float(expand_spatial_gate(gate, g.granularity, g.out_hw).float()
                  .mean()) if paradigm == 'spatial' else float(gate.mean())
        # both calls as inference runs them: without autograd
        before = None if evict is None else partial(
            cold_start, evict, torch.no_grad()(partial(
                dynamic_bottleneck_forward, copy.deepcopy(blk), x.clone(),
                g)), x)
        return dict(name=name, g=g, d=d, before=before, fn=torch.no_grad()(
            partial(dynamic_bottleneck_forward, blk, x, g)))

    def grid(g):
        return (1, *g.patch_grid)
    cases = [case('empty', 'spatial', 2, grid, False)]
    if policy.SPATIAL_FUSED_CPU and policy.CHANNEL_FUSED_CPU and \
            policy.fused_cpu_threads() and spec.vector_width >= 16:
        cases += [case('spatial', 'spatial', 2, grid, True),
                  case('channel', 'channel', 2,
                       lambda g: (1, g.num_groups), True)]
    return cases


def dynamic_path_terms(spec: HardwareSpec, device: torch.device,
                       clock: str = 'auto', verbose: bool = True,
                       warm_caches: bool = False,
                       cases: Optional[List[Dict]] = None,
                       times: Optional[Sequence[float]] = None,
                       layout: str = 'NCHW') -> HardwareSpec:
    """Measure the two terms of the eager dynamic path that micro-benchmarks
    of single library kernels miss, on the blocks of
    :func:`dynamic_path_cases`:

    * ``host_call_us``: the block with every gate off (spatial, S = 2)
      computes nothing but its masker and shortcut; its time less the
      model's kernels, divided by the bookkeeping calls the model counts
      for it, is the host cost of one call (us);
    * ``fused_gemm_speed``: the spatial (S = 2) and channel (G = 2) blocks
      with half their gates on run the fused CPU kernels; the model's
      compute time of their GEMMs divided by what the measured times leave
      for them (the rest as modelled) is the kernels' speed relative to
      the modelled rate (both blocks pooled).

    Either term keeps its value in ``spec`` when it cannot be measured
    here (a GPU; no fused kernels at this thread count or ISA; a
    measurement that leaves no time for the modelled part, printed).

    Args:
        spec: the spec whose other terms model the kernels.
        device: where to time.
        clock: timer (:func:`select_clock`).
        verbose: print the measurements.
        warm_caches: time calls back to back; default: each call after
            the caches are evicted and a twin block has run, its input
            read (:func:`cold_start`).
        cases, times: the cases of :func:`dynamic_path_cases` and their
            seconds per call, timed by the caller
            (:func:`calibrate_hardware` times them in the rounds of the
            static blocks); None: built and timed here
            (:func:`time_cases`), their inputs in ``layout``.

    Returns:
        ``spec`` with the measured terms.

    Raises:
        ValueError: ``times`` without ``cases`` or of another length;
            ``cases`` without ``'empty'``, or with one of ``'spatial'`` /
            ``'channel'`` but not the other (names them).
    """
    from laud_mm.ops import policy

    from .predictor import LatencyPredictor
    if device.type != 'cpu':
        return spec
    if cases is None:
        if times is not None:
            raise ValueError('dynamic_path_terms: times given without cases')
        cases = dynamic_path_cases(spec, device, warm_caches, layout)
        times = time_cases([(c['fn'], c['before']) for c in cases], device,
                           clock=clock)
    if times is None or len(times) != len(cases):
        raise ValueError(f'dynamic_path_terms: {len(cases)} cases but '
                         f'times={times!r}')
    measured = {c['name']: (c['g'], c['d'], t * 1e3)
                for c, t in zip(cases, times)}
    fused_names = {'spatial', 'channel'} & set(measured)
    if 'empty' not in measured or len(fused_names) == 1:
        raise ValueError(f'dynamic_path_terms: cases {sorted(measured)} '
                         f"need 'empty', and 'spatial' with 'channel'")

    def ops_of(sp, g, d):
        pred = LatencyPredictor(sp, implementation='eager',
                                spatial_dense_threshold=policy.
                                SPATIAL_DENSE_THRESHOLD, forced_gates=True,
                                owned_block_inputs=False)
        return pred.predict_backbone([g], [d], 1).block_ops[0]

    # host calls: every patch off
    g, d, t = measured['empty']
    # the model at 1 and 2 us per host call: the difference counts the
    # calls, the rest is the kernels (parallel regions included)
    one = sum(o.ms for o in ops_of(spec.replace(host_call_us=1.), g, d))
    two = sum(o.ms for o in ops_of(spec.replace(host_call_us=2.), g, d))
    calls = (two - one) * 1e3
    rest = one - calls * 1e-3
    if calls > 0 and t > rest:
        spec = spec.replace(host_call_us=(t - rest) / calls * 1e3)
        if verbose:
            print(f'  empty spatial block: {t:.3f} ms, kernels {rest:.3f} '
                  f'ms, {calls:.0f} host calls: {spec.host_call_us:.1f} '
                  f'us per call')
    elif verbose:
        print(f'  empty spatial block: {t:.3f} ms, not above its modelled '
              f'kernels ({rest:.3f} ms): host_call_us kept at '
              f'{spec.host_call_us}')
    if 'spatial' not in measured:
        if verbose:
            print('  no fused CPU kernels at this thread count / ISA: '
                  f'fused_gemm_speed kept at {spec.fused_gemm_speed}')
        return spec
    gemm = left = 0.
    for paradigm in ('spatial', 'channel'):
        g, d, t = measured[paradigm]
        ops = ops_of(spec.replace(fused_gemm_speed=1.), g, d)
        c = sum(o.compute_ms for o in ops
                if o.name in ('conv1', 'conv2', 'conv3'))
        gemm += c
        left += t - (sum(o.ms for o in ops) - c)
        if verbose:
            print(f'  {paradigm} block at density {d:.3f}: {t:.3f} ms, '
                  f'modelled GEMM compute {c:.3f} ms')
    return rate_term(spec, 'fused_gemm_speed', gemm, left,
                     gemm > 0 and left > 0.1 * gemm, 'fused GEMMs', verbose)


def rate_term(spec: HardwareSpec, key: str, modelled_ms: float,
              left_ms: float, measurable: bool, what: str,
              verbose: bool = True) -> HardwareSpec:
    """A kernel class's speed term: its modelled compute time (at the
    term's value 1) over the time the measurement leaves for that compute.

    Args:
        spec: the spec to update.
        key: the :class:`HardwareSpec` field (``fused_gemm_speed``,
            ``gemm_speed``, ``attention_speed``).
        modelled_ms: modelled compute time at ``key`` = 1, ms.
        left_ms: measured time less the modelled non-compute terms, ms.
        measurable: whether the measurement determines the term (else the
            spec's value is kept and the reason printed).
        what: the kernel class, for the printed line.
        verbose: print the result.

    Returns:
        ``spec`` with ``key`` = ``modelled_ms / left_ms`` where
        ``measurable``, else ``spec``.

    Source: paper appendix A (the compute term of a kernel).
    """
    if measurable:
        spec = spec.replace(**{key: modelled_ms / left_ms})
        if verbose:
            print(f'  {what}: {getattr(spec, key):.2f}x the modelled rate')
    elif verbose:
        print(f'  {what}: the measurement leaves {left_ms:.3f} ms for '
              f'{modelled_ms:.3f} ms of modelled compute: {key} kept at '
              f'{getattr(spec, key)}')
    return spec


#: (batch, tokens, in, out) of the Linear that :func:`transformer_terms`
#: times for ``gemm_speed``: fc1 of a T2T-ViT-t-14 encoder layer on 8 images
#: of 224 px
GEMM_CALIB_LINEAR = (8, 197, 384, 1152)
#: (batch, heads, tokens, head dims) of the fused attentions it times for
#: ``attention_speed``: a T2T-ViT-t-14 encoder layer's and the second
#: Tokens-to-Token layer's (28 x 28 tokens), 8 images of 224 px
ATTENTION_CALIB_SHAPES = ((8, 6, 197, 64), (8, 1, 784, 64))
#: (batch, tokens, embed dims, heads, MLP channels) of the encoder layer it
#: times for ``token_stream_gbs``: T2T-ViT-t-14's, 8 images of 224 px
STREAM_CALIB_LAYER = (8, 197, 384, 6, 1152)


def encoder_layer_case(device: torch.device, gen: torch.Generator
                       ) -> Callable[[], torch.Tensor]:
    """A pre-norm transformer encoder layer of :data:`STREAM_CALIB_LAYER`
    as inference runs it, in PyTorch operators (the order and operators
    of mmpretrain's layer with the attention fused): LayerNorm, the qkv
    Linear (no bias), ``scaled_dot_product_attention``, the projection,
    the residual add, LayerNorm, fc1, GELU, fc2, the residual add; a call
    without autograd returns the layer output (N, L, D)."""
    n, t, d, heads, ffn = STREAM_CALIB_LAYER
    dh = d // heads

    def w(*shape):
        return (torch.randn(*shape, generator=gen) / shape[-1] ** 0.5
                ).to(device)
    x = torch.randn(n, t, d, generator=gen).to(device)
    g1, g2 = torch.ones(d, device=device), torch.ones(d, device=device)
    b = torch.zeros(d, device=device)
    wqkv, wp, w1, w2 = w(3 * d, d), w(d, d), w(ffn, d), w(d, ffn)
    b1 = torch.zeros(ffn, device=device)

    def call():
        with torch.no_grad():
            h = F.layer_norm(x, (d,), g1, b)
            q, k, v = F.linear(h, wqkv).view(n, t, 3, heads, dh).permute(
                2, 0, 3, 1, 4)
            a = F.scaled_dot_product_attention(q, k, v)
            y = x + F.linear(a.transpose(1, 2).reshape(n, t, d), wp, b)
            h = F.layer_norm(y, (d,), g2, b)
            return y + F.linear(F.gelu(F.linear(h, w1, b1)), w2, b)
    return call


def transformer_cases(device: torch.device
                      ) -> List[Tuple[str, Callable[[], torch.Tensor]]]:
    """The calls :func:`transformer_terms` times, without autograd, on
    ``device``: ``('gemm', F.linear of GEMM_CALIB_LINEAR)`` (one library
    sgemm over the batch's token rows), then ``('attention', F.
    scaled_dot_product_attention)`` of each of
    :data:`ATTENTION_CALIB_SHAPES` (q = k = v), then ``('layer',
    encoder_layer_case)``."""
    gen = torch.Generator().manual_seed(0)
    n, t, cin, cout = GEMM_CALIB_LINEAR
    x = torch.randn(n, t, cin, generator=gen).to(device)
    w = (torch.randn(cout, cin, generator=gen) / cin ** 0.5).to(device)
    b = torch.zeros(cout, device=device)

    def no_grad(fn, *args):
        def call():
            with torch.no_grad():
                return fn(*args)
        return call
    cases = [('gemm', no_grad(F.linear, x, w, b))]
    for shape in ATTENTION_CALIB_SHAPES:
        q = torch.randn(*shape, generator=gen).to(device)
        cases.append(('attention', no_grad(F.scaled_dot_product_attention,
                                           q, q, q)))
    cases.append(('layer', encoder_layer_case(device, gen)))
    return cases


def transformer_terms(spec: HardwareSpec, device: torch.device,
                      clock: str = 'auto', verbose: bool = True,
                      times: Optional[Sequence[float]] = None
                      ) -> HardwareSpec:
    """Measure the rates of the library kernels of a transformer layer
    against the rate the spec's other terms model, on the calls of
    :func:`transformer_cases`:

    * ``gemm_speed``: the Linear of :data:`GEMM_CALIB_LINEAR`; its
      modelled compute time (the tile model at ``gemm_speed`` 1) divided
      by its measured time less the launch (such a GEMM overlaps its
      memory traffic with its compute: ``ConvOp.blas_gemm``);
    * ``attention_speed``: the fused attentions of
      :data:`ATTENTION_CALIB_SHAPES`; their summed modelled compute
      (:func:`~laud_mm.latency.blocks.t2t_vit.fused_attention_op` at
      ``attention_speed`` 1) divided by their summed measured time less
      the modelled memory and launch terms;
    * ``token_stream_gbs``: the encoder layer of
      :data:`STREAM_CALIB_LAYER` (:func:`encoder_layer_case`): the bytes
      of its streaming kernels (the two LayerNorms, the two adds, GELU:
      :data:`~laud_mm.latency.blocks.t2t_vit.LAYER_STREAM_OPS`) over what
      its measured time leaves after its other kernels, modelled with the
      two terms above, and the streaming kernels' launches and regions.
      The layer runs as in a forward, each kernel reading what the one
      before it wrote, so the rate covers what isolated calls miss of a
      forward (the other kernels' in-network time included: the term is
      what makes the modelled layer match the measured one). A rate at or
      above the on-chip bandwidth (``l2_bandwidth``) is not taken: it
      would price the kernels below the streaming model.

    A term keeps its value in ``spec`` (printed) where the measured time
    leaves no room for the modelled compute (a call no slower than its
    modelled memory and launch says nothing of the compute rate). The
    calls run back to back (warm caches), also where the blocks are timed
    from cold caches: they are compute bound, their operands (1.8 MB of
    weights, a few MB of keys) a small part of their time.

    Args:
        spec: the spec whose other terms model the kernels.
        device: where to time.
        clock: timer (:func:`select_clock`).
        verbose: print the measurements.
        times: seconds per call of each case of :func:`transformer_cases`,
            timed by the caller (:func:`calibrate_hardware` times them in
            the rounds of the static blocks); None: timed here
            (:func:`time_cases`).

    Returns:
        ``spec`` with the measured terms.

    Raises:
        ValueError: ``times`` of another length than the cases.

    Source: paper appendix A (the compute term of a kernel);
    docs/latency_predictor.md, "Transformer layers".
    """
    from .blocks.t2t_vit import (LAYER_STREAM_OPS, fused_attention_op,
                                 linear_tokens_latency, transformer_ops)
    n_cases = 2 + len(ATTENTION_CALIB_SHAPES)
    if times is None:
        times = time_cases([(fn, None) for _, fn in
                            transformer_cases(device)], device, clock=clock)
    if len(times) != n_cases:
        raise ValueError(f'transformer_terms: {n_cases} cases but '
                         f'times={list(times)!r}')
    ms = [t * 1e3 for t in times]
    n, t, cin, cout = GEMM_CALIB_LINEAR
    op = linear_tokens_latency(spec.replace(gemm_speed=1.), 'gemm', n, t,
                               cin, cout)
    left = ms[0] - op.launch_ms
    if verbose:
        print(f'  token Linear {n}x{t}x{cin} -> {cout}: {ms[0]:.3f} ms, '
              f'modelled compute {op.compute_ms:.3f} ms (memory '
              f'{op.memory_ms:.3f} ms, overlapped)')
    # a call no slower than its memory time says nothing of the compute
    spec = rate_term(spec, 'gemm_speed', op.compute_ms, left,
                     left > op.memory_ms, 'library GEMMs', verbose)
    compute = left = 0.
    for (b, h, t, dh), m in zip(ATTENTION_CALIB_SHAPES, ms[1:-1]):
        op = fused_attention_op(spec.replace(attention_speed=1.), b * h, t,
                                dh)[0]
        compute += op.compute_ms
        left += m - op.memory_ms - op.launch_ms
        if verbose:
            print(f'  attention {b}x{h}x{t}x{dh}: {m:.3f} ms, modelled '
                  f'compute {op.compute_ms:.3f} ms')
    spec = rate_term(spec, 'attention_speed', compute, left, left > 0,
                     'fused attention', verbose)
    n, t, d, heads, ffn = STREAM_CALIB_LAYER
    ops = transformer_ops(spec, n, t, d, d, heads, d // heads, ffn,
                          eager=True, fused_attention=True)
    stream = [o for o in ops if o.name in LAYER_STREAM_OPS]
    left = ms[-1] - sum(o.ms for o in ops
                        if o.name not in LAYER_STREAM_OPS) - \
        sum(o.launch_ms for o in stream)
    moved = sum(o.offchip_bytes for o in stream)
    if verbose:
        print(f'  encoder layer {n}x{t}x{d}: {ms[-1]:.3f} ms, of which '
              f'{left:.3f} ms left for its streaming kernels\' '
              f'{moved / 1e6:.1f} MB')
    # a rate at or above the on-chip bandwidth would price them below the
    # streaming model: the layer then says nothing of them (a noisy
    # measurement, or host time that the other kernels' model lacks)
    gbs = moved / left / 1e6 if left > 0 else math.inf
    if gbs < spec.l2_bandwidth / 1e9:
        spec = spec.replace(token_stream_gbs=gbs)
        if verbose:
            print(f'  token streaming kernels: '
                  f'{spec.token_stream_gbs:.2f} GB/s')
    elif verbose:
        print(f'  token streaming kernels: the layer leaves {left:.3f} ms '
              f'for them, not below the on-chip bandwidth '
              f'({spec.l2_bandwidth / 1e9:.1f} GB/s): token_stream_gbs kept '
              f'at {spec.token_stream_gbs}')
    return spec


def fit_spec(spec: HardwareSpec, samples, verbose: bool = True
             ) -> HardwareSpec:
    """Least-squares fit (log latency) of fp32_per_pe and bandwidth_gbs
    (each within 10x of the micro-benchmark value) to measured static
    blocks. ``l2_factor`` and ``launch_us`` stay measured: a static block
    runs 7 - 8 kernels of milliseconds, so its latency does not determine
    the launch cost (fitted, it drifted to the 10x bound).

    Args:
        spec: starting :class:`HardwareSpec`.
        samples: list of (BlockGeometry, batch, measured_ms).

    Returns:
        the fitted :class:`HardwareSpec`.
    """
    import numpy as np
    from scipy.optimize import minimize

    from .predictor import LatencyPredictor
    keys = ('fp32_per_pe', 'bandwidth_gbs')
    meas = np.log([m for _, _, m in samples])
    x_start = np.log([max(getattr(spec, k), 1e-3) for k in keys])

    def make(x):
        x = np.clip(x, x_start - math.log(10), x_start + math.log(10))
        v = dict(zip(keys, np.exp(x)))
        return spec.replace(**{k: float(v[k]) for k in keys})

    def loss(x):
        p = LatencyPredictor(make(x), implementation='eager')
        pred = np.log([p.predict_static([g], b).total_ms
                       for g, b, _ in samples])
        return float(np.mean((pred - meas) ** 2))
    res = minimize(loss, x_start, method='Nelder-Mead',
                   options=dict(maxiter=300, xatol=1e-3, fatol=1e-6))
    out = make(res.x)
    if verbose:
        print(f'fit: rms log error {math.sqrt(loss(x_start)):.3f} -> '
              f'{math.sqrt(res.fun):.3f} ({res.nfev} evaluations)')
    return out


def calibrate_hardware(device: str = 'cpu', threads: Optional[int] = None,
                       name: Optional[str] = None, out: Optional[str] = None,
                       fit: bool = False, clock: str = 'auto',
                       warm_caches: bool = False,
                       layout: str = 'NCHW') -> HardwareSpec:
    """Measure ``device`` (:func:`microbench`), optionally fit the spec on
    static ResNet-50 blocks (:func:`fit_spec`), measure the eager dynamic
    path's terms on a CPU (:func:`dynamic_path_terms`) and the transformer
    kernels' rates (:func:`transformer_terms`), write the spec and
    print what was measured.

    Args:
        device: 'cpu' or 'cuda' (GPU 0).
        threads: CPU threads (default: torch's current number).
        name: spec name (default ``cpu<threads>_calib`` / ``<gpu
            name>_calib``).
        out: output .yaml / .json (default
            ``work_dirs/hardware/<name>.yaml``).
        fit: refine on measured static ResNet-50 blocks.
        clock: timer of the static blocks (:func:`select_clock`).
        warm_caches: time the blocks (``fit``, :func:`dynamic_path_terms`)
            back to back; default on a CPU: each call from cold caches
            with its input read after a twin block (:func:`cold_start`),
            as inside a backbone forward (a GPU: back to back).
        layout: the memory format of every timed input (a key of
            :data:`LAYOUTS`, or ``'auto'``: :func:`auto_layout`): the
            format the modelled network will run in (``'channels_last'``
            for the backbones' ``dynamic_memory_format`` on AVX-512
            CPUs).

    Returns:
        the written :class:`HardwareSpec`.

    Raises:
        ValueError: an unknown ``device``, ``clock`` or ``layout``,
            ``threads`` < 1, an ``out`` that is not .yaml / .yml / .json
            (before any timing).
        RuntimeError: ``device='cuda'`` without a CUDA device.
    """
    from laud_mm.models import resnet_geometries
    if device not in ('cpu', 'cuda'):
        raise ValueError(f"--device={device!r} must be 'cpu' or 'cuda'")
    if threads is not None and threads < 1:
        raise ValueError(f'--threads={threads} must be >= 1')
    if out is not None and osp.splitext(out)[1].lower() not in (
            '.yaml', '.yml', '.json'):
        raise ValueError(f'--out={out!r} must end in .yaml, .yml or .json')
    check_layout(layout)
    if layout == 'auto':
        layout = auto_layout()
    dev = torch.device(device)
    if dev.type == 'cuda':
        if not torch.cuda.is_available():
            raise RuntimeError('--device cuda: no CUDA device available')
        props = torch.cuda.get_device_properties(0)
        n_pe = props.multi_processor_count
        clock_mhz = float(getattr(props, 'clock_rate', 0) or 0) / 1e3 or 1500.
        name = name or props.name.lower().replace(' ', '_') + '_calib'
        max_tile, tr = 16384, 32
    else:
        if threads:
            torch.set_num_threads(threads)
        n_pe = torch.get_num_threads()
        clock_mhz = cpu_clock_mhz()
        name = name or f'cpu{n_pe}_calib'
        max_tile, tr = 4096, 64
    # PyTorch's CPU kernels run image by image: tiles never span samples
    tile_batch = 1 if dev.type == 'cpu' else 0
    m = microbench(dev, layout)
    print(f'device {dev} ({n_pe} PE, {clock_mhz:.0f} MHz, inputs in '
          f'{layout}): launch '
          f'{m["launch_us"]:.1f} us (add {m["launch_add_us"]:.1f}, conv '
          f'{m["launch_conv_us"]:.1f}), bandwidth {m["bandwidth_gbs"]:.1f} '
          f'GB/s, cache {m["cache_gbs"]:.1f} GB/s, compute '
          f'{m["macs"] / 1e9:.1f} GMAC/s (convs: '
          + ', '.join(f'{r / 1e9:.1f}' for r in m['conv_rates']) + ')'
          + (f', weight reorder {m["weight_reorder_gbs"]:.1f} GB/s'
             if m['weight_reorder_gbs'] else '')
          + (f', parallel region {m["region_us"]:.1f} us'
             if m['region_us'] else ''))
    spec = HardwareSpec(
        name=name, num_pe=n_pe,
        fp32_per_pe=m['macs'] / (n_pe * clock_mhz * 1e6), clock_mhz=clock_mhz,
        bandwidth_gbs=m['bandwidth_gbs'],
        l2_factor=min(L2_FACTOR_MAX,
                      max(1.0, m['cache_gbs'] / m['bandwidth_gbs'])),
        launch_us=m['launch_us'], transaction_bytes=tr,
        max_tile_outputs=max_tile, default_batch=1,
        max_tile_batch=tile_batch,
        weight_reorder_gbs=m['weight_reorder_gbs'],
        vector_width=cpu_vector_width() if dev.type == 'cpu' else 0,
        llc_mb=cpu_llc_mb() if dev.type == 'cpu' else 0.,
        region_us=m['region_us'])
    # dynamic_path_terms and transformer_terms build and time their own
    dyn = dyn_times = tf_times = None
    if fit:
        # the static blocks and the dynamic path's blocks timed in the same
        # rounds (time_cases): the fused GEMM speed divides the latter by
        # what the former's fit models
        geoms, _ = resnet_geometries(50, (224, 224))
        uniq = {}
        for g in geoms:
            uniq.setdefault((g.stage, g.has_downsample), g)
        evict = block_evictor(dev, warm_caches)
        static = []
        for g in uniq.values():
            for b in (1, 2):
                fn = static_block_fn(g, b, dev, layout)
                static.append((g, b, fn, None if evict is None else partial(
                    cold_start, evict, static_block_fn(g, b, dev, layout),
                    fn.input)))
        dyn = dynamic_path_cases(spec, dev, warm_caches, layout)
        tf = transformer_cases(dev)
        times = time_cases([(fn, before) for _, _, fn, before in static] +
                           [(c['fn'], c['before']) for c in dyn] +
                           [(fn, None) for _, fn in tf], dev, clock=clock)
        tf_times = times[len(times) - len(tf):]
        times = times[:len(times) - len(tf)]
        samples = []
        for (g, b, _, _), t in zip(static, times):
            samples.append((g, b, t * 1e3))
            print(f'  static block s{g.stage}.b{g.index} batch {b}: '
                  f'{t * 1e3:.3f} ms')
        spec = fit_spec(spec, samples)
        dyn_times = times[len(static):]
    spec = dynamic_path_terms(spec, dev, clock=clock, warm_caches=warm_caches,
                              cases=dyn, times=dyn_times, layout=layout)
    spec = transformer_terms(spec, dev, clock=clock, times=tf_times)
    out = out or osp.join('work_dirs', 'hardware', f'{spec.name}.yaml')
    os.makedirs(osp.dirname(out) or '.', exist_ok=True)
    save_hardware(spec, out)
    print('spec: ' + ', '.join(f'{k}={v:.4g}' if isinstance(v, float) else
                               f'{k}={v}' for k, v in spec.to_dict().items()))
    print(f'written: {out}')
    return spec
