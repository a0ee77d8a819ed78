"""Micro-benchmarks behind the dynamic-inference kernel choices of
:mod:`laud_mm.models.resnet.dynamic` and the CPU terms of the latency
predictor.

Each row times two ways of computing the same thing, side by side in one
run (median process CPU time of repeated calls after warm-up,
:func:`~laud_mm.analysis.timing.cpu_ms`), on the shapes of LAUD-ResNet-50 at
224 px, batch 8:

- ``patch_convs``: conv2 / conv3 of gathered spatial windows,
  :func:`~laud_mm.models.resnet.dynamic.spatial_patch_convs` (GEMMs for
  S = 1 and under ``SPATIAL_CONV3_GEMM_MAX_PATCHES`` patches) against
  oneDNN's ``F.conv2d`` on the same windows;
- ``kept_weights``: per-sample kept -> kept conv2 weights,
  :func:`~laud_mm.ops.gather_kept_weights` (the compiled kernel) against
  PyTorch's advanced indexing;
- ``weight_reorder``: a 3x3 convolution with dense weights (oneDNN re-lays
  them out on every call) against pre-packed weights (oneDNN's blocked
  layout, prepared once), the term ``HardwareSpec.weight_reorder_gbs``
  models;
- ``layout_weight``: a 3x3 convolution of a channels_last input with the
  NCHW folded weight (copied into channels_last on every call) against
  the channels_last copy the folded blocks keep
  (:class:`~laud_mm.models.layers.folding.LayoutWeight`; wall clock at
  the thread count, the CPU-time ratio in the note);
- ``window_conv1``: conv1 + window gather of a spatial block, dense conv1
  then :func:`~laud_mm.ops.gather_patches` against
  :func:`~laud_mm.models.resnet.dynamic.window_conv1` (conv1 on the
  gathered input windows), at the patch densities of r_i = 0.5 in the
  stride-2 blocks and of r_i = 0.25 in a stride-1 block (where the dynamic
  path keeps the dense conv1);
- ``scatter``: the fused scatter-add + ReLU of a spatial block's conv3
  patches into its shortcut, in place with ``identity_nonneg`` (as in an
  identity block inside the backbone),
  :func:`~laud_mm.ops.scatter_add_relu` (the compiled kernel) against
  :func:`~laud_mm.ops.scatter_add_relu_reference`, at the r_i = 0.5 patch
  densities of the stride-1 blocks of each stage; the note gives a dense
  ``add_`` + ``relu_`` of the whole map, the memory-speed floor;
- ``masker``: a spatial masker's keep - skip logit difference on the patch
  grid, the module's order (``F.adaptive_avg_pool2d`` of all C_in channels,
  then the 1x1 conv) against the dynamic path's
  (:func:`~laud_mm.models.layers.spatial_logit_record.spatial_gate`: the
  one-channel 1x1 conv and the pool in one pass over x,
  :func:`~laud_mm.ops.spatial_logit_pool`; equal by linearity; the note
  times the GEMV + pool it replaced), on the inputs of R50's stride-1
  spatial blocks;
- ``layer``: a layer-skipping identity block with 4 of its 8 samples kept,
  the kept samples on the per-sample GEMM kernel
  (:func:`~laud_mm.ops.sample_gemm`) against gathered into oneDNN's
  convolutions (the choice of :func:`laud_mm.ops.policy.layer_sample_gemm`),
  then on the fused spatial kernel, a patch per kept sample
  (``policy.LAYER_FUSED_CPU``), against the choice without it (wall-clock
  medians: the choices are about how the threads share the work; run it
  with ``--threads 2``);
- ``channel_branch``: the fused channel kernel on an identity block of
  each R50 stage at the mask density of r_i = 0.5 against the static block
  (wall-clock medians, the two alternating; run it at 1 and at 2
  threads);
- ``channel_split``: the fused channel kernel on R50's 7 x 7-output
  blocks at batch 1, with fewer samples than threads: each sample's
  columns split over the threads against its panels gathered up front
  and its pixels split (wall-clock medians; run it with ``--threads 2``);
- ``handoff``: a dense spatial block's epilogue when the next block is
  spatial: torch's ``add_`` and ``relu_``, then the next masker's logit
  pass (:func:`~laud_mm.ops.spatial_logit_pool`) against one pass for all
  three (:func:`~laud_mm.ops.add_relu_logit_pool_`), on R50's block outputs;
  then the whole LAUD-R50 spatial backbone at r = 1 (every patch on, 8 x
  224 px) with ``policy.SPATIAL_LOGIT_HANDOFF`` off and on, alternating
  (wall-clock medians; run it with ``--threads 2``);
- ``masker_gate``: a channel / layer masker's inference gate, the
  module's operators against one compiled call
  (:func:`~laud_mm.ops.masker_gate`), each call right after a 64 MB copy
  (as after a block's convolutions: cold caches, a sleeping thread pool;
  wall-clock medians; run it with ``--threads 2``), and ``torch.empty(3)``
  after such a copy against back to back;
- ``max_pool``: the stem's 3x3 / 2 max-pool, :func:`~laud_mm.ops.max_pool2d`
  (the compiled kernel) against ``F.max_pool2d`` on NCHW and against
  oneDNN's pool (conversions included), at 224 px and 800 x 1216;
- ``soft_split``: the T2T-ViT Tokens-to-Token module's image split (7 x 7
  windows, stride 4, of 8 images of 224 px) as its first layer gets it,
  ``nn.Unfold`` (ATen's ``im2col``) then the transposing copy into token
  rows, against
  :func:`~laud_mm.models.t2t_vit.soft_split.soft_split_tokens`; then the
  whole module of T2T-ViT-t-14 with its attention fused, mmpretrain's
  split against the token-major one
  (:meth:`~laud_mm.models.LAUDT2TViT.inference_kernels`) (wall-clock
  medians, the two alternating; note: whether the outputs are equal);
- ``static_1x1``: 1x1 convolutions of the static R50 at 800 x 1216 and
  at 224 px (batch 8), ``F.conv2d`` (oneDNN, what the static reference
  runs) against MKL GEMMs on the same NCHW data;
- ``pixels``: a 1x1 convolution of 2 images (per-image MKL GEMMs) on a
  7 x 7 vs a 56 x 56 map, in GMAC/s (the ``vector_width`` term);
- ``regions``: small operators at one thread against torch's thread count
  (wall clock): what a parallel region of the thread pool costs
  (``HardwareSpec.region_us``), which operators open one, and the fixed
  per-call cost of oneDNN's convolutions on 7 x 7 maps (run it with
  ``--threads 2``; the cost depends on ``OMP_WAIT_POLICY``);
- ``row_gather``: 4 of 8 samples' rows (whole C x H x W maps) gathered
  with ``index_select`` (a parallel region per row for rows longer than
  ATen's grain, one for all shorter ones) against ``torch.gather`` on the
  expanded index (one region; the LAUD-RegNetY layer path's gather of
  long rows with more than one thread), on the block inputs of
  RegNetY-400MF's four stages and its stage-4 identity blocks (wall-clock
  medians, the two alternating; note: whether the outputs are equal).

Every ``*_rows`` function returns tuples (kernel, shape, A, A ms, B, B ms,
note); :func:`benchmark_kernels` prints them as the markdown table of
``docs/benchmarks.md`` ("Kernel micro-benchmarks"). Command line:
``tools/analysis_tools/benchmark_kernels.py``.

Source: paper sec. 3.4 (scheduling of the dynamic operators).
"""
from typing import List, Optional, Sequence, Tuple

import statistics
import time

import torch
import torch.nn.functional as F

from laud_mm.models import LAUDBottleneck
from laud_mm.models.layers.folding import LayoutWeight
from laud_mm.models.layers.gates import KEEP, SKIP
from laud_mm.models.resnet.dynamic import (dynamic_bottleneck_forward,
                                           folded, spatial_patch_convs,
                                           static_bottleneck_forward,
                                           window_conv1)
from laud_mm.ops import (add_relu_logit_pool_,
                         channel_branch_add_relu_reference,
                         channel_kept_lists, channel_partition_work,
                         extension,
                         fast_spatial_branch,
                         gather_kept_weights, gather_kept_weights_reference,
                         max_pool2d, policy, spatial_logit_pool,
                         spatial_logit_pool_reference)
from laud_mm.ops.allocator import tune_cpu_allocator
from laud_mm.structures.flops import dynamic_flops, op_densities
from laud_mm.ops.patches import (_gather, _scatter, patch_map,
                                 scatter_add_relu_reference, window_size)

from .timing import bench_pair, cpu_ms, wall_ms

#: one row: (kernel, shape, A, A ms, B, B ms, note)
Row = Tuple[str, str, str, float, str, float, str]


def _block(width: int, stride: int, s: int):
    """A spatial LAUD bottleneck of ``width`` (eval, seed 0), C_in = 4 x
    width (stride 1) or 2 x width (stride 2), with its downsample."""
    torch.manual_seed(0)
    cin = width * 4 if stride == 1 else width * 2
    ds = None
    if stride != 1 or cin != width * 4:
        ds = torch.nn.Sequential(
            torch.nn.Conv2d(cin, width * 4, 1, stride, bias=False),
            torch.nn.BatchNorm2d(width * 4))
    return LAUDBottleneck(cin, width, stride=stride, downsample=ds,
                          paradigm='spatial', granularity=s).eval()


def patch_conv_rows() -> List[Row]:
    """``patch_convs``: :func:`spatial_patch_convs` against two
    ``F.conv2d`` on the same gathered windows (note: max difference)."""
    rows = []
    # (width, S, patches): stage-3 S = 1 at ~35 % of 8 x 7 x 7 pixels;
    # stage-2 S = 2 with few / many patches; stage-0 S = 4
    for width, s, p in ((512, 1, 137), (256, 2, 12), (512, 2, 14),
                        (256, 2, 152), (64, 4, 696)):
        fb = folded(_block(width, 1, s))
        win = torch.rand(p, width, s + 2, s + 2)

        def ref():
            h = F.conv2d(win, fb.w2, fb.b2).relu_()
            return F.conv2d(h, fb.w3, fb.b3)
        with torch.no_grad():
            err = (spatial_patch_convs(fb, win, s) - ref()).abs().max()
            a = cpu_ms(ref)
            b = cpu_ms(lambda: spatial_patch_convs(fb, win, s))
        rows.append(('patch_convs', f'S={s}, {p} patches of {width} ch',
                     'F.conv2d x2', a, 'spatial_patch_convs', b,
                     f'max diff {float(err):.1e}'))
    return rows


def kept_weight_rows() -> List[Row]:
    """``kept_weights``: the compiled kept -> kept weight gather against
    advanced indexing, 8 samples (note: 'equal' when bit-equal)."""
    rows = []
    for width, k in ((64, 40), (256, 160), (512, 312)):
        w = torch.randn(width + 1, width + 1, 3, 3)
        g = torch.Generator().manual_seed(width)
        chs = torch.stack([torch.randperm(width, generator=g)[:k].sort()[0]
                           for _ in range(8)])
        same = torch.equal(gather_kept_weights(w, chs),
                           gather_kept_weights_reference(w, chs))
        rows.append(('kept_weights', f'8 x {k} of {width} channels',
                     'w[chs_i, chs_j]',
                     cpu_ms(lambda: gather_kept_weights_reference(w, chs)),
                     'gather_kept_weights',
                     cpu_ms(lambda: gather_kept_weights(w, chs)),
                     'equal' if same else 'DIFFERENT'))
    return rows


def reorder_rows() -> List[Row]:
    """``weight_reorder``: a 3x3 convolution with dense against pre-packed
    oneDNN weights; no rows where torch lacks
    ``mkldnn._convolution_pointwise``."""
    rows = []
    if not hasattr(torch.ops.mkldnn, '_convolution_pointwise'):
        return rows
    for c, hw, n in ((512, 7, 1), (512, 7, 2), (512, 14, 1), (256, 14, 1),
                     (64, 56, 1)):
        x = torch.rand(n, c, hw, hw)
        w = torch.rand(c, c, 3, 3)
        wp = torch._C._nn.mkldnn_reorder_conv2d_weight(
            w.to_mkldnn(), [1, 1], [1, 1], [1, 1], 1, list(x.shape))

        def packed():
            return torch.ops.mkldnn._convolution_pointwise(
                x, wp, None, [1, 1], [1, 1], [1, 1], 1, 'none', [], '')
        rows.append(('weight_reorder',
                     f'{n} x {c} ch {hw}x{hw}, 3x3 ({w.numel() * 4 / 1e6:.1f}'
                     ' MB weights)', 'dense weights',
                     cpu_ms(lambda: F.conv2d(x, w, padding=1)),
                     'pre-packed', cpu_ms(packed), ''))
    return rows


def layout_weight_rows(shapes: Sequence[Tuple[int, ...]] = (
        (512, 7, 1), (512, 7, 8), (256, 14, 1), (256, 14, 8),
        (128, 28, 8), (64, 56, 8), (208, 14, 8, 26), (440, 7, 8, 55),
        (320, 14, 8, 20), (784, 7, 8, 49))) -> List[Row]:
    """``layout_weight``: a 3x3 convolution of a channels_last input with
    its folded weight in NCHW (PyTorch copies it into channels_last on
    every call) against the channels_last copy
    :class:`~laud_mm.models.layers.folding.LayoutWeight` keeps, on the
    conv2 shapes of LAUD-ResNet-50 (stage 4 and stage 3 at batch 1 and 8,
    stages 1 - 2 at batch 8) and the grouped conv2 of LAUD-RegNetY-400MF
    and 800MF's stages 3 - 4 at batch 8 (group width 8 and 16).
    Wall-clock medians of the two alternating
    (:func:`~laud_mm.analysis.timing.bench_pair`), at torch's thread
    count; the note gives the CPU-time ratio and whether the outputs are
    equal bit for bit.

    Args:
        shapes: (channels, map side, batch) or (channels, map side, batch,
            conv groups) of each row (one group where not given).

    Raises:
        ValueError: a shape of another length, or groups that do not
            divide the channels (names the shape).
    """
    rows = []
    for shape in shapes:
        if len(shape) not in (3, 4) or (len(shape) == 4 and (
                shape[3] < 1 or shape[0] % shape[3])):
            raise ValueError(f'layout_weight: shape={shape!r} must be '
                             f'(channels, side, batch[, groups]) with the '
                             f'groups dividing the channels')
        c, hw, n, groups = (*shape, 1)[:4]
        g = torch.Generator().manual_seed(c + n)
        x = torch.rand(n, c, hw, hw, generator=g).contiguous(
            memory_format=torch.channels_last)
        w = torch.rand(c, c // groups, 3, 3, generator=g) - 0.5
        cl = LayoutWeight(w).like(x)
        t = bench_pair(lambda v: F.conv2d(v, w, padding=1, groups=groups),
                       lambda v: F.conv2d(v, cl, padding=1, groups=groups),
                       x, 3, 15)
        same = torch.equal(F.conv2d(x, w, padding=1, groups=groups),
                           F.conv2d(x, cl, padding=1, groups=groups))
        kind = '3x3' if groups == 1 else f'3x3, {groups} groups'
        rows.append(('layout_weight',
                     f'{n} x {c} ch {hw}x{hw}, {kind} '
                     f'({w.numel() * 4 / 1e6:.2f} MB weights), '
                     'channels_last input', 'NCHW weight (wall)',
                     t.static_ms, 'channels_last weight (wall)',
                     t.dynamic_ms,
                     f'CPU time {t.cpu_speedup:.2f}x; '
                     + ('equal' if same else 'DIFFERENT')))
    return rows


def window_conv1_rows() -> List[Row]:
    """``window_conv1``: dense conv1 + window gather against
    :func:`window_conv1` (note: max difference)."""
    rows = []
    # (width, stride, S, input (C_in, H), density): the first blocks of
    # stages 2-4 at r_i = 0.5 and a stage-1 identity block at r_i = 0.25
    for width, stride, s, (cin, hw), d in (
            (128, 2, 4, (256, 56), 0.29), (256, 2, 2, (512, 28), 0.27),
            (512, 2, 1, (1024, 14), 0.24), (64, 1, 4, (256, 56), 0.21)):
        fb = folded(_block(width, stride, s))
        x = torch.rand(8, cin, hw, hw)
        grid = -(-(hw // stride) // s)
        g = torch.Generator().manual_seed(width)
        idx = (torch.rand(8, grid, grid, generator=g) < d).nonzero()

        def dense():
            return _gather(F.conv2d(x, fb.w1, fb.b1), idx, s, stride, 1,
                           width, True)
        err = (window_conv1(fb, x, idx, s) - dense()).abs().max()
        cover = idx.shape[0] * window_size(s, stride) ** 2 / (8 * hw * hw)
        rows.append(('window_conv1', f'stride {stride}, S={s}, {cin} ch '
                     f'{hw}x{hw}, {idx.shape[0]} patches (cover {cover:.2f})',
                     'dense conv1 + gather', cpu_ms(dense), 'window_conv1',
                     cpu_ms(lambda: window_conv1(fb, x, idx, s)),
                     f'max diff {float(err):.1e}'))
    return rows


def scatter_rows() -> List[Row]:
    """``scatter``: the compiled in-place scatter-add + ReLU against its
    PyTorch reference (note: 'equal' when bit-equal, and the dense
    add + ReLU floor in ms)."""
    rows = []
    # (C_out, H, S, density): a stride-1 block of each stage at r_i = 0.5
    for c, hw, s, d in ((256, 56, 4, 0.44), (512, 28, 4, 0.45),
                        (1024, 14, 2, 0.41), (2048, 7, 1, 0.37)):
        g = torch.Generator().manual_seed(c)
        idx = (torch.rand(8, hw // s, hw // s, generator=g) < d).nonzero()
        ident = torch.randn(8, c, hw, hw, generator=g).relu_()
        y = torch.randn(idx.shape[0], c, s, s, generator=g)
        dense = torch.randn(8, c, hw, hw, generator=g)
        pmap = patch_map(idx, 8, (hw // s, hw // s))
        out = ident.clone()
        same = torch.equal(
            _scatter(ident.clone(), y, idx, (s, s), True, None, True),
            scatter_add_relu_reference(ident, y, idx, s))
        floor = cpu_ms(lambda: out.add_(dense).relu_())
        rows.append(('scatter', f'S={s}, {c} ch {hw}x{hw}, {idx.shape[0]} '
                     'patches, in place', 'scatter_add_relu_reference',
                     cpu_ms(lambda: scatter_add_relu_reference(
                         out, y, idx, s, inplace=True)),
                     'scatter_add_relu',
                     cpu_ms(lambda: _scatter(out, y, idx, (s, s), True,
                                             pmap, True)),
                     f'{"equal" if same else "DIFFERENT"}; dense add + ReLU '
                     f'{floor:.3f} ms'))
    return rows


def masker_rows() -> List[Row]:
    """``masker``: the spatial masker module's keep - skip logits against
    the dynamic path's one pass over x
    (:func:`~laud_mm.ops.spatial_logit_pool`, the compiled kernel when
    built; note: the one-channel GEMV + pool it replaced
    (:func:`~laud_mm.ops.spatial_logit_pool_reference`) and the max
    difference)."""
    rows = []
    for width, s, hw in ((64, 4, 56), (128, 4, 28), (256, 2, 14),
                         (512, 1, 7)):
        blk = _block(width, 1, s)
        fb = folded(blk)
        x = torch.randn(8, width * 4, hw, hw)
        grid = blk.masker.grid((hw, hw))

        def module():
            lg = blk.masker.logits(x, (hw, hw))
            return lg[..., KEEP] - lg[..., SKIP]

        def one_pass():
            return spatial_logit_pool(x, fb.logit_w, fb.logit_b, grid)

        def gemv():
            return spatial_logit_pool_reference(x, fb.logit_w, fb.logit_b,
                                                grid)
        diff = float((module() - one_pass()).abs().max())
        rows.append(('masker', f'{width * 4} ch {hw}x{hw}, grid {grid[0]}x'
                     f'{grid[1]}', 'pool C_in, 1x1 conv', cpu_ms(module),
                     'one pass (spatial_logit_pool)', cpu_ms(one_pass),
                     f'GEMV + pool {cpu_ms(gemv):.3f} ms; max diff '
                     f'{diff:.1e}'))
    return rows


def layer_rows() -> List[Row]:
    """``layer``: a layer identity block (C_in = 4 x width, 4 of 8 samples
    kept), per shape: the per-sample GEMM kernel against gathered into
    oneDNN (``policy.layer_sample_gemm``'s answer forced either way, the
    fused kernel off), then, where the dynamic path can take it (AVX-512,
    :func:`laud_mm.ops.policy.fused_cpu_threads`), the fused spatial
    kernel (``policy.LAYER_FUSED_CPU``) against the way the policy takes
    without it. Median wall-clock ms of 9 calls after 2; note: max
    difference to the first path of the row and the path the policy takes
    at the current thread count ('fused', 'kernel' or 'gathered')."""
    rows = []
    for width, hw in ((256, 14), (512, 7)):
        torch.manual_seed(0)
        blk = LAUDBottleneck(width * 4, width, paradigm='layer').eval()
        blk.masker.forced_gate = torch.tensor([1., 0, 1, 0, 0, 1, 1, 0])
        x = torch.rand(8, width * 4, hw, hw)
        geom = blk.geometry((hw, hw))
        choose, fused = policy.layer_sample_gemm, policy.LAYER_FUSED_CPU
        threads = torch.get_num_threads()
        unfused = 'kernel' if choose(hw * hw, threads) else 'gathered'

        def run(path: str):
            # the dynamic path asks the policy at call time: force it
            policy.LAYER_FUSED_CPU = path == 'fused'
            policy.layer_sample_gemm = lambda px, t: path == 'kernel'
            try:
                return dynamic_bottleneck_forward(blk, x, geom)[0]
            finally:
                policy.layer_sample_gemm = choose
                policy.LAYER_FUSED_CPU = fused

        def ms(path: str) -> float:
            for _ in range(2):
                run(path)
            return statistics.median(wall_ms(lambda: run(path))
                                     for _ in range(9))
        # the fused kernel's row only where the dynamic path can take it
        fast = fast_spatial_branch(x, width, width * 4) and \
            policy.fused_cpu_threads()
        chosen = 'fused' if fused and fast else unfused
        case = f'{width * 4} ch {hw}x{hw}, 4 of 8 kept'
        names = dict(fused='fused spatial kernel (wall)',
                     kernel='sample_gemm kernel (wall)',
                     gathered='gathered, oneDNN (wall)')
        pairs = [('kernel', 'gathered')] + ([('fused', unfused)] if fast
                                            else [])
        for a, b in pairs:
            diff = float((run(a) - run(b)).abs().max())
            rows.append(('layer', case, names[a], ms(a), names[b], ms(b),
                         f'max diff {diff:.1e}; policy: {chosen}'))
    return rows


def channel_branch_rows(batch: int = 8, rate: float = 0.62) -> List[Row]:
    """``channel_branch``: an identity channel block of each R50 stage (G =
    2, each group kept with probability ``rate``, seed 0; the default is
    the mask density d of r_i = 0.5 in these blocks: r_i = (2 C w d +
    9 w^2 d^2) / (2 C w + 9 w^2) with C = 4 w, the paper's FLOPs-based rate
    of sec. 3.5 without the masker, docs/method.md sec. 2, counted by
    :mod:`laud_mm.structures.flops`) at
    ``batch`` x 224 px, the static block
    (BN folded, :func:`~laud_mm.models.resnet.dynamic.
    static_bottleneck_forward`: oneDNN's convolutions, the add and ReLU)
    against the fused channel kernel
    (:func:`~laud_mm.ops.channel_branch_add_relu`, accumulating into the
    same shortcut every call, as on the input the backbone owns):
    wall-clock medians, the two alternating (:func:`~laud_mm.analysis.
    timing.bench_pair`); note: the median of the pairs' wall-clock ratios
    (a slow spell of the machine cancels in it; the table's A / B is the
    ratio of the medians), the block's FLOPs ratio r_i (its inverse, the
    ideal speed-up), both sides' multiply-accumulates per second, the
    CPU-time ratio and the kernel's largest difference from the PyTorch
    reference (:func:`~laud_mm.ops.channel_branch_add_relu_reference`)
    on a fresh shortcut. The shape gives the mean kept count a sample.
    Source: paper sec. 3.2 (channel skipping) and sec. 3.4 (the kernel's
    scheduling).

    Returns:
        one row per stage: (kernel, shape, 'static block', wall ms,
        'fused channel kernel', wall ms, note).

    Raises:
        ValueError: ``batch`` < 1 or ``rate`` outside (0, 1] (names the
            argument and value).
        RuntimeError: without the compiled extension.
    """
    if batch < 1:
        raise ValueError(f'channel_branch: batch={batch} must be >= 1')
    if not 0 < rate <= 1:
        raise ValueError(f'channel_branch: rate={rate} must be in (0, 1]')
    ext = extension()
    if ext is None:
        raise RuntimeError('channel_branch: laud_mm._ext is not built')
    rows = []
    for stage, width, hw in ((1, 64, 56), (2, 128, 28), (3, 256, 14),
                             (4, 512, 7)):
        torch.manual_seed(0)
        c_in = 4 * width
        blk = LAUDBottleneck(c_in, width, paradigm='channel',
                             granularity=2).eval()
        gate = (torch.rand(batch, width // 2) < rate).float()
        chs, counts, _ = channel_kept_lists(gate, 2, policy.CHANNEL_PAD)
        x = torch.rand(batch, c_in, hw, hw)
        packed = folded(blk).channel_packed()
        ref = channel_branch_add_relu_reference(x.clone(), x, chs, counts,
                                                *packed)
        out = x.clone()
        ext.channel_branch_add_relu(out, x, chs, counts, *packed, 1, 1, 1)
        diff = float((out - ref).abs().max())

        def dyn(t, out=out, chs=chs, counts=counts, packed=packed):
            ext.channel_branch_add_relu(out, t, chs, counts, *packed, 1, 1,
                                        1)
        k = counts.double()
        # the branch's convolutions (the kernel runs no masker), the
        # project's count (laud_mm.structures.flops): conv2 at d^2
        geom = blk.geometry((hw, hw))
        ops = {op: f for op, f in blk.op_flops((hw, hw)).items()
               if op != 'masker'}
        dense_macs = batch * sum(ops.values())
        macs = float(dynamic_flops(ops, op_densities(geom, k / width)).sum())
        tm = bench_pair(lambda t, blk=blk: static_bottleneck_forward(blk, t),
                        dyn, x, 2, 9)
        rows.append((
            'channel_branch',
            f'stage {stage}, {batch} x {c_in} x {hw}x{hw}, '
            f'{float(k.mean()):.1f} of {width} kept', 'static block',
            tm.static_ms, 'fused channel kernel', tm.dynamic_ms,
            f'paired wall {tm.speedup:.2f}x; r_i {macs / dense_macs:.2f} '
            f'(ideal {dense_macs / macs:.2f}x); '
            f'{dense_macs / tm.static_ms / 1e6:.0f} / '
            f'{macs / tm.dynamic_ms / 1e6:.0f} GMAC/s; CPU time '
            f'{tm.cpu_speedup:.2f}x; max diff {diff:.1e}'))
    return rows


def channel_split_rows(batch: int = 1, rate: float = 0.6) -> List[Row]:
    """``channel_split``: the fused channel kernel
    (:func:`~laud_mm.ops.channel_branch_add_relu`) on R50's 7 x 7-output
    channel blocks (the stride-2 block 3.0 and an identity block of stage
    4, G = 2, each group kept with probability ``rate``, seed 0) at
    ``batch``: with fewer samples than threads the kernel splits each
    sample's columns over the threads (every phase row-blocked) against
    its panels gathered up front and the pixels split
    (``force_unblocked``: its path at such batches before the column
    split). Median wall-clock ms of 21 calls after 3, each accumulating
    into the same shortcut; note: whether the outputs are bit-equal (run
    it with ``--threads 2``; at one thread, or with a sample per thread,
    both run the pixel split).

    Raises:
        RuntimeError: without the compiled extension.
    """
    ext = extension()
    if ext is None:
        raise RuntimeError('channel_split: laud_mm._ext is not built')
    rows = []
    for c_in, hw, stride in ((1024, 14, 2), (2048, 7, 1)):
        torch.manual_seed(0)
        ds = torch.nn.Sequential(
            torch.nn.Conv2d(c_in, 2048, 1, stride, bias=False),
            torch.nn.BatchNorm2d(2048)) if c_in != 2048 else None
        blk = LAUDBottleneck(c_in, 512, stride=stride, downsample=ds,
                             paradigm='channel', granularity=2).eval()
        fb = folded(blk)
        gate = (torch.rand(batch, 256) < rate).float()
        chs, counts, _ = channel_kept_lists(gate, 2, policy.CHANNEL_PAD)
        x = torch.rand(batch, c_in, hw, hw)
        out = torch.rand(batch, 2048, 7, 7)
        packed = fb.channel_packed()

        def run(unblocked: bool, o=None):
            o = out.clone() if o is None else o
            ext.channel_branch_add_relu(o, x, chs, counts, *packed, stride,
                                        1, 1, force_unblocked=unblocked)
            return o

        def ms(unblocked: bool) -> float:
            buf = out.clone()
            for _ in range(3):
                run(unblocked, buf)
            return statistics.median(wall_ms(lambda: run(unblocked, buf))
                                     for _ in range(21))
        columns = float(channel_partition_work(
            chs, counts, c_in, (hw, hw), 512, 2048, stride, 1, 1,
            torch.get_num_threads())[2].sum()) > 0
        equal = torch.equal(run(False), run(True))
        rows.append((
            'channel_split',
            f'{c_in} ch {hw}x{hw} -> 7x7, batch {batch}, '
            f'{int(counts.float().mean())} of 512 kept',
            'columns split (wall)' if columns else 'pixels split (wall)',
            ms(False), 'panels up front, pixels split (wall)', ms(True),
            f'bit-equal: {equal}'))
    return rows


def handoff_rows(batch: int = 8, size: int = 224) -> List[Row]:
    """``handoff``: the dense spatial epilogue with the next masker's
    logits, torch's two passes plus the logit pass against
    :func:`~laud_mm.ops.add_relu_logit_pool_` (median CPU ms; note:
    whether the outputs and logits are bit-equal), on R50's block outputs
    at 224 px, batch 8, the next block's patch grid; then the R50 spatial
    backbone at r = 1 with ``policy.SPATIAL_LOGIT_HANDOFF`` off / on
    (median wall-clock ms of 9 alternating pairs after 2; note: the static
    backbone's median and both speedups over it) on ``batch`` images of
    ``size`` px."""
    from .benchmark.common import dynamic_forward, static_forward
    from .benchmark.resnet import build, folded_stem
    rows = []
    for c, hw, grid in ((256, 56, 14), (512, 28, 7), (1024, 14, 7),
                        (2048, 7, 7)):
        g = torch.Generator().manual_seed(c)
        y0 = torch.randn(8, c, hw, hw, generator=g)
        ident = torch.randn(8, c, hw, hw, generator=g).relu_()
        w = torch.randn(c, generator=g) / c ** 0.5
        y1, y2 = y0.clone(), y0.clone()

        def torch_passes():
            y1.add_(ident).relu_()
            return spatial_logit_pool(y1, w, 0.1, (grid, grid))

        def one_pass():
            return add_relu_logit_pool_(y2, ident, w, 0.1, (grid, grid))
        same = torch.equal(torch_passes(), one_pass()) and torch.equal(y1, y2)
        rows.append(('handoff', f'8 x {c} x {hw}x{hw}, grid {grid}x{grid}',
                     'add_, relu_, spatial_logit_pool', cpu_ms(torch_passes),
                     'add_relu_logit_pool_', cpu_ms(one_pass),
                     'bit-equal' if same else 'DIFFERENT'))
    net = build(50, 'spatial')
    for b in net.blocks:
        b.masker.forced_gate = 1
    stem = folded_stem(net)
    x = torch.randn(batch, 3, size, size,
                    generator=torch.Generator().manual_seed(0))
    switch = policy.SPATIAL_LOGIT_HANDOFF

    def dynamic(on: bool):
        policy.SPATIAL_LOGIT_HANDOFF = on
        try:
            return dynamic_forward(net, x)
        finally:
            policy.SPATIAL_LOGIT_HANDOFF = switch
    fns = dict(static=lambda: static_forward(net, stem, x,
                                             static_bottleneck_forward),
               off=lambda: dynamic(False), on=lambda: dynamic(True))
    ts = {k: [] for k in fns}
    for rep in range(11):
        for k, f in fns.items():
            t = wall_ms(f)
            if rep >= 2:
                ts[k].append(t)
    med = {k: statistics.median(v) for k, v in ts.items()}
    rows.append(('handoff', f'R50 spatial {batch} x {size}, r = 1',
                 'off (wall)',
                 med['off'], 'on (wall)', med['on'],
                 f"static {med['static']:.1f} ms: off "
                 f"{med['static'] / med['off']:.3f}x, on "
                 f"{med['static'] / med['on']:.3f}x"))
    return rows


def _after_eviction_ms(fn, evict, repeats: int = 101) -> float:
    """Median wall-clock ms of ``fn()`` called right after ``evict()``
    (``repeats`` times after 5 warm-up pairs), or back to back when
    ``evict`` is None."""
    ts = []
    for rep in range(repeats + 5):
        if evict is not None:
            evict()
        t = wall_ms(fn)
        if rep >= 5:
            ts.append(t)
    return statistics.median(ts)


def masker_gate_rows() -> List[Row]:
    """``masker_gate``: the inference gate of a channel (G = 2) and a layer
    masker of LAUD-R50 on a batch of 8 block inputs at 224 px, their
    channel means recorded as inside the backbone: the module's operators
    (the PyTorch backend: torch's linear layers, ReLU, the decision)
    against one compiled call (:func:`~laud_mm.ops.masker_gate`); median
    wall-clock ms, each call right after a 64 MB copy, which evicts the
    caches and lets the thread pool fall asleep as a block's convolutions
    do (note: the same back to back, and whether the gates are equal).
    A last row times ``torch.empty(3)`` the same two ways: the cost of any
    operator after a large kernel.

    Returns:
        the rows (kernel, shape, A, A ms, B, B ms, note). Source: paper
        sec. 3.2 (maskers), sec. 3.4 (the masker is part of a dynamic
        block's latency).
    """
    from .benchmark.resnet import build
    from laud_mm.models.layers.channel_mean import record_channel_mean
    from laud_mm.ops import use_backend
    src = torch.randn(16 * 2 ** 20)
    dst = torch.empty_like(src)

    def evict():
        dst.copy_(src)
    rows = []
    for paradigm in ('channel', 'layer'):
        net = build(50, paradigm)
        for stage, c, hw in (('layer1', 256, 56), ('layer2', 512, 28),
                             ('layer3', 1024, 14), ('layer4', 2048, 7)):
            m = getattr(net, stage)[1].masker
            x = torch.rand(8, c, hw, hw,
                           generator=torch.Generator().manual_seed(c))
            record_channel_mean(x, x.mean((2, 3)))
            with use_backend('pytorch'):
                ref = m(x)
                a = _after_eviction_ms(lambda: m(x), evict)
                a_warm = _after_eviction_ms(lambda: m(x), None)
            same = torch.equal(m(x), ref)
            b = _after_eviction_ms(lambda: m(x), evict)
            b_warm = _after_eviction_ms(lambda: m(x), None)
            rows.append(('masker_gate', f'{paradigm}, 8 x {c} x {hw}x{hw}',
                         'module operators (wall)', a,
                         'ops.masker_gate (wall)', b,
                         f'back to back {a_warm:.3f} / {b_warm:.3f} ms; '
                         f'gates {"equal" if same else "DIFFERENT"}'))
    rows.append(('masker_gate', 'torch.empty(3)', 'after a 64 MB copy',
                 _after_eviction_ms(lambda: torch.empty(3), evict),
                 'back to back', _after_eviction_ms(lambda: torch.empty(3),
                                                    None), ''))
    return rows


def max_pool_rows(shapes: Sequence[Tuple[int, ...]] = (
        (8, 64, 112, 112), (1, 64, 400, 608))) -> List[Row]:
    """``max_pool``: :func:`laud_mm.ops.max_pool2d` (the compiled kernel
    where built) against ``F.max_pool2d`` and against oneDNN's pool
    (conversions to and from its format included), 3x3 / 2 with padding 1,
    on ``shapes`` (N, C, H, W): by default the R50 stem's output at 224 px
    (batch 8) and for one 800 x 1216 image (note: 'equal' when
    ``torch.equal`` to ``F.max_pool2d``)."""
    rows = []
    for shape in shapes:
        x = torch.randn(*shape).relu_()
        ref = F.max_pool2d(x, 3, 2, 1)
        same = torch.equal(max_pool2d(x, 3, 2, 1), ref)
        desc = ' x '.join(map(str, shape)) + ', 3x3 / 2'
        ours = cpu_ms(lambda: max_pool2d(x, 3, 2, 1))
        rows.append(('max_pool', desc, 'F.max_pool2d',
                     cpu_ms(lambda: F.max_pool2d(x, 3, 2, 1)),
                     'ops.max_pool2d', ours,
                     'equal' if same else 'DIFFERENT'))
        if torch.backends.mkldnn.is_available():
            rows.append(('max_pool', desc, 'oneDNN pool',
                         cpu_ms(lambda: torch.mkldnn_max_pool2d(
                             x.to_mkldnn(), [3, 3], [2, 2],
                             [1, 1]).to_dense()),
                         'ops.max_pool2d', ours, ''))
    return rows


def soft_split_rows(batch: int = 8, size: int = 224) -> List[Row]:
    """``soft_split``: the T2T module's image split (7 x 7 / 4, padding 2)
    of ``batch`` images of ``size`` px into token rows, ``F.unfold`` then
    the transposing copy against
    :func:`~laud_mm.models.t2t_vit.soft_split.soft_split_tokens`; then
    T2T-ViT-t-14's whole Tokens-to-Token module, its attention fused
    (:func:`~laud_mm.models.t2t_vit.attention.fused_attention`), with
    mmpretrain's split against within
    :meth:`~laud_mm.models.LAUDT2TViT.inference_kernels` (the token-major
    split as well). Wall-clock medians of 9 alternating pairs after 2
    (:func:`~laud_mm.analysis.timing.bench_pair`); note: 'equal' when
    ``torch.equal``."""
    from laud_mm.models import LAUDT2TViT
    from laud_mm.models.t2t_vit.attention import fused_attention
    from laud_mm.models.t2t_vit.soft_split import soft_split_tokens
    x = torch.randn(batch, 3, size, size,
                    generator=torch.Generator().manual_seed(0))

    def unfold():
        return F.unfold(x, 7, stride=4, padding=2).transpose(1, 2) \
            .contiguous()

    def tokens():
        return soft_split_tokens(x, 7, 4, 2)
    same = torch.equal(unfold(), tokens())
    tm = bench_pair(lambda _: unfold(), lambda _: tokens(), x, 2, 9)
    rows = [('soft_split', f'{batch} x 3 x {size}x{size}, 7x7 / 4',
             'F.unfold + transpose copy', tm.static_ms, 'soft_split_tokens',
             tm.dynamic_ms, 'equal' if same else 'DIFFERENT')]
    torch.manual_seed(0)
    net = LAUDT2TViT(paradigm='spatial', dynamic_inference=True).eval()

    def module_unfold():
        with fused_attention(net.attention_modules()):
            return net.tokens_to_token(x)[0]

    def module_tokens():
        with net.inference_kernels():
            return net.tokens_to_token(x)[0]
    same = torch.equal(module_unfold(), module_tokens())
    tm = bench_pair(lambda _: module_unfold(), lambda _: module_tokens(), x,
                    2, 9)
    rows.append(('soft_split', f'T2T-ViT-t-14 T2T module, {batch} x {size}',
                 'nn.Unfold split', tm.static_ms, 'token-major split',
                 tm.dynamic_ms, 'equal' if same else 'DIFFERENT'))
    return rows


def gemm_conv1x1(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
                  stride: int) -> torch.Tensor:
    """``F.conv2d(x, w, b, stride)`` for a 1x1 kernel as MKL GEMMs on NCHW
    data: the strided input pixels (a copy for stride > 1), then ``addmm``
    (batch 1) / ``baddbmm`` with the bias; what the ``static_1x1`` rows
    time against ``F.conv2d``.

    Args:
        x: (N, C_in, H, W) float input.
        w: (C_out, C_in, 1, 1) weight; b: (C_out,) bias.
        stride: the convolution's stride (both axes), pixels.

    Returns:
        (N, C_out, ceil(H / stride), ceil(W / stride)), equal to
        ``F.conv2d`` up to float rounding.

    Raises:
        RuntimeError: from torch, for a weight that is not (C_out, C_in,
            1, 1) with x's C_in.

    Source: the static reference of every speed-up (paper sec. 4 compares
    against the static network; docs/benchmarks.md, "The static
    reference").
    """
    if stride > 1:
        x = x[:, :, ::stride, ::stride].contiguous()
    n, c, h, w_ = x.shape
    wm = w.view(w.shape[0], c)
    if n == 1:
        y = torch.addmm(b[:, None], wm, x.view(c, h * w_))
    else:
        y = torch.baddbmm(b[None, :, None], wm.expand(n, -1, -1),
                          x.view(n, c, h * w_))
    return y.view(n, -1, h, w_)


def static_conv1x1_rows() -> List[Row]:
    """``static_1x1``: 1x1 convolutions of the static R50 (BN folded, the
    reference of every speed-up here) on ``F.conv2d`` (oneDNN, NCHW)
    against MKL GEMMs on the same data (:func:`gemm_conv1x1`): how much
    faster a static network hand-tuned this way could run: wall-clock
    medians, the two alternating (:func:`~laud_mm.analysis.timing.
    bench_pair`; note: the CPU-time ratio and the max difference).

    Returns:
        one row per convolution: (kernel, shape, 'F.conv2d', wall ms,
        'GEMM', wall ms, note).
    """
    rows = []
    g = torch.Generator().manual_seed(0)
    for n, c_in, c_out, hw, stride, what in (
            (1, 256, 64, (200, 304), 1, 'stage 1 conv1'),
            (1, 64, 256, (200, 304), 1, 'stage 1 conv3'),
            (1, 256, 512, (200, 304), 2, 'stage 2 downsample'),
            (1, 1024, 256, (50, 76), 1, 'stage 3 conv1'),
            (8, 256, 64, (56, 56), 1, 'stage 1 conv1'),
            (8, 1024, 256, (14, 14), 1, 'stage 3 conv1')):
        x = torch.randn(n, c_in, *hw, generator=g).relu_()
        w = torch.randn(c_out, c_in, 1, 1, generator=g) / c_in ** 0.5
        b = torch.randn(c_out, generator=g)
        diff = (F.conv2d(x, w, b, stride) -
                gemm_conv1x1(x, w, b, stride)).abs().max().item()
        tm = bench_pair(lambda t: F.conv2d(t, w, b, stride),
                        lambda t: gemm_conv1x1(t, w, b, stride), x, 2, 9)
        rows.append(('static_1x1',
                     f'{what}, {n} x {c_in} x {hw[0]}x{hw[1]} -> {c_out}'
                     + (f' / {stride}' if stride > 1 else ''),
                     'F.conv2d', tm.static_ms, 'GEMM', tm.dynamic_ms,
                     f'wall; CPU time {tm.cpu_speedup:.2f}x; max diff '
                     f'{diff:.1e}'))
    return rows


def pixel_rows() -> List[Row]:
    """``pixels``: a 1x1 convolution of 2 images on a 7 x 7 and a 56 x 56
    map (no B; note: GMAC/s)."""
    rows = []
    for cin, cout, hw in ((2048, 512, 7), (256, 64, 56)):
        x = torch.rand(2, cin, hw, hw)
        w = torch.rand(cout, cin, 1, 1)
        t = cpu_ms(lambda: F.conv2d(x, w))
        rows.append(('pixels', f'1x1 {cin}->{cout}, 2 x {hw}x{hw}',
                     'F.conv2d', t, '', float('nan'),
                     f'{2 * cin * cout * hw * hw / t / 1e6:.1f} GMAC/s'))
    return rows


def _per_call_ms(fn, calls: int, rounds: int = 5) -> float:
    """Wall-clock ms per call of ``fn()``: the fastest of ``rounds`` loops
    of ``calls`` calls, after ``calls // 10 + 3`` warm-up calls (for
    operators of microseconds, which one timed call cannot resolve)."""
    for _ in range(calls // 10 + 3):
        fn()
    best = float('inf')
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t) / calls)
    return best * 1e3


def region_rows() -> List[Row]:
    """``regions``: each operator timed at one thread (A) and at torch's
    thread count N (B), wall clock (:func:`_per_call_ms`); the note gives
    both in microseconds. Rows: gate-sized operators (an 8-element compare,
    sum and ``item``), ReLU just under and just over ATen's grain
    (:data:`~laud_mm.latency.operators.PARALLEL_GRAIN`), an add of a grain
    per thread (what ``calibrate_hardware.py`` times for ``region_us``), a
    small 1x1 convolution, a linear layer of 1 and of 8 rows, and oneDNN's
    3x3 512 -> 512 (1 - 8 images) and 1x1 2048 -> 512 (4, 8 images)
    convolutions on 7 x 7 maps, whose note at 8 images gives the fixed
    per-call part, 2 t(4) - t(8), at N threads.

    Returns:
        the rows (kernel, shape, A, A ms, B, B ms, note); torch's thread
        count is restored. Source: docs/latency_predictor.md, "Parallel
        regions" (the launch term of paper appendix A on a CPU).
    """
    from laud_mm.latency.operators import PARALLEL_GRAIN
    threads = torch.get_num_threads()
    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen)
    g8 = (rand(8) > 0).float()
    cases = []
    cases.append(('gate ops', '8 floats', 'gt',
                  lambda: g8 > 0.5, 20000))
    cases.append(('gate ops', '8 floats', 'sum + item',
                  lambda: int(g8.sum()), 20000))
    for n in (PARALLEL_GRAIN, PARALLEL_GRAIN + 1):
        a, o = rand(n), torch.empty(n)
        cases.append(('relu', f'{n} floats', 'clamp_min(out=)',
                      lambda a=a, o=o: torch.clamp_min(a, 0, out=o), 5000))
    a = rand(max(threads, 2) * PARALLEL_GRAIN)
    o = torch.empty_like(a)
    cases.append(('add', f'{a.numel()} floats', 'add(out=)',
                  lambda: torch.add(a, a, out=o), 5000))
    x, w = rand(1, 64, 8, 8), rand(64, 64, 1, 1)
    cases.append(('conv', '1x1 64 -> 64, 1 x 8x8', 'F.conv2d',
                  lambda: F.conv2d(x, w), 3000))
    for rows in (1, 8):
        xl, wl, bl = rand(rows, 2048), rand(128, 2048), rand(128)
        cases.append(('linear', f'{rows} x 2048 -> 128', 'F.linear',
                      lambda xl=xl, wl=wl, bl=bl: F.linear(xl, wl, bl),
                      3000))
    w3, b3 = rand(512, 512, 3, 3), rand(512)
    for n in (1, 2, 4, 8):
        x3 = rand(n, 512, 7, 7)
        cases.append(('conv 7x7', f'3x3 512 -> 512, {n} x 7x7', 'F.conv2d',
                      lambda x3=x3: F.conv2d(x3, w3, b3, 1, 1), 30))
    w1 = rand(512, 2048, 1, 1)
    for n in (4, 8):
        x1 = rand(n, 2048, 7, 7)
        cases.append(('conv 7x7', f'1x1 2048 -> 512, {n} x 7x7', 'F.conv2d',
                      lambda x1=x1: F.conv2d(x1, w1), 30))
    rows_out, at_n = [], {}
    try:
        for kernel, shape, what, fn, calls in cases:
            torch.set_num_threads(1)
            t1 = _per_call_ms(fn, calls)
            torch.set_num_threads(threads)
            tn = _per_call_ms(fn, calls)
            at_n[shape] = tn
            note = f'{t1 * 1e3:.1f} / {tn * 1e3:.1f} us'
            for big, small in (('3x3 512 -> 512, 8 x 7x7',
                                '3x3 512 -> 512, 4 x 7x7'),
                               ('1x1 2048 -> 512, 8 x 7x7',
                                '1x1 2048 -> 512, 4 x 7x7')):
                if shape == big:
                    note = (f'fixed per call at {threads} threads: '
                            f'{2 * at_n[small] - tn:.3f} ms')
            rows_out.append((kernel, shape, f'{what}, 1 thread', t1,
                             f'{threads} threads', tn, note))
    finally:
        torch.set_num_threads(threads)
    return rows_out


def row_gather_rows(batch: int = 8, kept: Sequence[int] = (0, 2, 5, 7),
                    shapes: Sequence[Tuple[int, int]] = (
                        (32, 112), (48, 56), (104, 28), (208, 14),
                        (440, 7))
                    ) -> List[Row]:
    """``row_gather``: the kept samples' rows of a batch of block inputs
    (``batch`` x C x side x side floats, channels_last, viewed as
    ``batch`` rows of C x side x side values:
    ``laud_mm.models.regnet.dynamic._sample_rows``), gathered by
    ``index_select`` (A) against one ``torch.gather`` on the expanded
    index, built in each call (B: what
    ``laud_mm.models.regnet.dynamic._gather_rows`` runs for rows longer
    than ATen's grain with more than one thread), at torch's thread
    count: wall-clock medians of the two alternating
    (:func:`~laud_mm.analysis.timing.bench_pair`); note: the CPU-time
    ratio and whether the outputs are equal. The default shapes are the
    first block inputs of RegNetY-400MF's four stages at 224 px and the
    input of its stage-4 identity blocks (21 560 values a row, under the
    grain: one region for ``index_select`` too).

    Args:
        batch: samples.
        kept: the samples gathered, each in [0, ``batch``).
        shapes: (channels, side) of each row.

    Raises:
        ValueError: a kept sample outside [0, ``batch``) (names it).

    Source: paper sec. 3.4 (layer skipping runs the block on the kept
    samples' rows).
    """
    from laud_mm.models.regnet.dynamic import _sample_rows
    if any(not 0 <= k < batch for k in kept):
        raise ValueError(f'row_gather: kept={list(kept)} must lie in '
                         f'[0, batch={batch})')
    idx = torch.tensor(list(kept), dtype=torch.long)
    rows = []
    for c, side in shapes:
        g = torch.Generator().manual_seed(c)
        x = _sample_rows(torch.rand(batch, c, side, side, generator=g)
                         .contiguous(memory_format=torch.channels_last),
                         torch.channels_last)

        def gather(v):
            return torch.gather(v, 0, idx[:, None].expand(len(kept),
                                                          v.shape[1]))
        t = bench_pair(lambda v: v.index_select(0, idx), gather, x, 5, 41)
        same = torch.equal(x.index_select(0, idx), gather(x))
        rows.append(('row_gather',
                     f'{len(kept)} of {batch} rows of {c} x {side}x{side} '
                     f'({x.shape[1] * 4 / 1e6:.2f} MB a row)',
                     'index_select (wall)', t.static_ms,
                     'gather, expanded index (wall)', t.dynamic_ms,
                     f'CPU time {t.cpu_speedup:.2f}x; '
                     + ('equal' if same else 'DIFFERENT')))
    return rows


#: row groups by name (``--only`` of the command line), in table order
KERNEL_GROUPS = dict(patch_convs=patch_conv_rows,
                     kept_weights=kept_weight_rows,
                     window_conv1=window_conv1_rows, scatter=scatter_rows,
                     weight_reorder=reorder_rows,
                     layout_weight=layout_weight_rows, masker=masker_rows,
                     handoff=handoff_rows, layer=layer_rows,
                     channel_branch=channel_branch_rows,
                     channel_split=channel_split_rows,
                     masker_gate=masker_gate_rows,
                     max_pool=max_pool_rows, soft_split=soft_split_rows,
                     static_1x1=static_conv1x1_rows,
                     pixels=pixel_rows, regions=region_rows,
                     row_gather=row_gather_rows)


def format_row(row: Row) -> str:
    """One markdown row: A / B as a ratio; rows without a B (``nan`` ms)
    leave the B time and the ratio empty."""
    k, shape, a, ta, b, tb, note = row
    ratio = f'{ta / tb:.2f}x' if tb == tb else ''
    tb_s = f'{tb:.3f}' if tb == tb else ''
    return (f'| {k} | {shape} | {a} | {ta:.3f} | {b} | {tb_s} | '
            f'{ratio} | {note} |')


def benchmark_kernels(only: Optional[Sequence[str]] = None,
                      threads: Optional[int] = None) -> List[Row]:
    """Run the row groups (all, or those named in ``only``) under
    ``torch.no_grad`` with the tuned CPU allocator; prints the machine line
    and the markdown table row by row.

    Args:
        only: names of :data:`KERNEL_GROUPS` to run (default: all).
        threads: torch threads (default: unchanged).

    Returns:
        every row printed.

    Raises:
        ValueError: an unknown group in ``only`` or ``threads`` < 1 (names
            the option and value).
    """
    bad = sorted(set(only or ()) - set(KERNEL_GROUPS))
    if bad:
        raise ValueError(f'--only={bad} must be among {sorted(KERNEL_GROUPS)}')
    if threads is not None and threads < 1:
        raise ValueError(f'--threads={threads} must be >= 1')
    if threads:
        torch.set_num_threads(threads)
    tune_cpu_allocator()
    print(f'# torch {torch.__version__}, {torch.get_num_threads()} threads')
    print('| kernel | shape | A | A ms | B | B ms | A / B | note |')
    print('|---|---|---|---|---|---|---|---|')
    out = []
    with torch.no_grad():
        for name, rows in KERNEL_GROUPS.items():
            if only and name not in only:
                continue
            for row in rows():
                out.append(row)
                print(format_row(row), flush=True)
    return out
