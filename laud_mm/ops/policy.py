"""When the dynamic-inference paths take which kernel: the thresholds and
switches shared by the families' dynamic paths and the latency predictor's
eager model (which must make the same choices to price them).

The values are measured on CPU (``docs/benchmarks.md`` gives the commands
and tables); every path they select computes the same function, so they
only move time. The ``*_FUSED_CPU`` switches are read at call time: set them
to False (``laud_mm.ops.policy.SPATIAL_FUSED_CPU = False``) to force the
gather / batched-GEMM paths, as the benchmarks' breakdowns and the tests do.

Source: paper sec. 3.4 (scheduling of the dynamic operators is chosen by
measured or predicted latency, not by FLOPs).
"""
import torch

from .dispatch import parallel_kernels
from .patches import window_size

#: ATen's intra-op grain (``at::internal::GRAIN_SIZE``, elements).
#: ``index_select`` along dim 0 copies rows longer than this each in a
#: parallel region of its own and shorter rows in one region for all; a
#: layer path gathers rows longer than this with one ``torch.gather``
#: when torch runs more than one thread
#: (``laud_mm.models.regnet.dynamic._gather_rows``). The latency model's
#: ``PARALLEL_GRAIN`` (elementwise kernels over more elements split over
#: the threads).
ATEN_GRAIN_SIZE = 32768

# ----------------------------------------------------------------- backbone
#: inside a backbone forward (``owned_block_inputs``) the first block's call
#: plans every block's host-side choices (folds validated, kernels chosen,
#: hand-off targets) in one loop before the convolutions
#: (:mod:`laud_mm.models.layers.forward_plan`); False: each block makes its
#: own at its call, between the previous block's kernels and its own
#: (``tools/analysis_tools/benchmark_latency.py --compare-unplanned`` times
#: both ways). Read when the context is entered.
FORWARD_PLAN = True

# ------------------------------------------------------------------ spatial
#: ResNet spatial blocks on the gather / scatter path: from this fraction of
#: active patches on, conv2 / conv3 run densely and the output is masked
#: (faster on CPU than gather -> conv -> scatter; both exact).
SPATIAL_DENSE_THRESHOLD = 0.8
#: the same for the fused CPU kernel (:data:`SPATIAL_FUSED_CPU`): with
#: every patch active oneDNN's dense convolutions beat the kernel's tiles
#: at 2 threads (R50 8 x 224 px r = 1: 0.88x wall, 0.95x CPU time, a quick
#: run of tools/analysis_tools/benchmark_latency.py under load), and there
#: the dense block is the static one
SPATIAL_FUSED_DENSE_THRESHOLD = 1.0
#: RegNetY spatial blocks: the same threshold (their grouped conv2 and SE
#: make the gathered path pay off up to higher densities)
REGNETY_SPATIAL_DENSE_THRESHOLD = 0.95
#: RegNetY spatial blocks on a channels_last input: below this fraction of
#: active patches conv3 runs on the active pixels' rows only (one GEMM,
#: added into the shortcut's rows); from it on, densely and masked
REGNETY_SPATIAL_NHWC_CONV3_THRESHOLD = 0.5
#: fewer gathered patches than this: conv3 runs as one GEMM over all patches
#: instead of a 1x1 convolution (oneDNN runs a 1x1 convolution of a batch
#: under 16 as per-image GEMMs only S * S wide)
SPATIAL_CONV3_GEMM_MAX_PATCHES = 16
#: stride-2 spatial blocks: when the active patches' conv2 input windows
#: cover less than this fraction of the input map (counted with overlaps),
#: conv1 runs on the gathered input windows instead of the whole map
#: (``tools/analysis_tools/benchmark_kernels.py --only window_conv1``)
SPATIAL_WINDOW_CONV1_MAX_FRACTION = 0.6
#: on CPUs with AVX-512, spatial blocks run the fused kernel
#: :func:`laud_mm.ops.spatial_branch_add_relu` (conv1 on the dilated mask,
#: conv2 and conv3 on the active pixels read in place, conv3 added into the
#: shortcut) instead of gather -> convolutions -> scatter, at any batch size
#: (its pixels are split over torch's threads, :func:`fused_cpu_threads`)
SPATIAL_FUSED_CPU = True
#: inside a backbone, a spatial block that computes densely (every patch
#: on) computes the next spatial block's masker logits in its epilogue
#: (:func:`laud_mm.ops.add_relu_logit_pool_`: add, ReLU and logits in one
#: pass over its output) and the next block skips its own read of its
#: input for them (``tools/analysis_tools/benchmark_kernels.py --only
#: handoff --threads 2`` times both ways)
SPATIAL_LOGIT_HANDOFF = True

# -------------------------------------------------------------------- layer
#: layer blocks off the fused kernel (:data:`LAYER_FUSED_CPU`) whose input
#: map has fewer pixels than this (7 x 7 at 224 px) run their kept samples
#: through oneDNN's convolutions on a gathered copy
#: (index_select -> conv1-conv2-conv3 -> add into the shortcut rows) when
#: torch has more than one thread: the per-sample GEMM kernel
#: (:func:`laud_mm.ops.sample_gemm`, no row copies) splits only n x H x W
#: columns over the threads there (4 of 8 samples kept, 2 threads: a
#: 2048 x 7 x 7 block 1.03 - 1.08x faster gathered, a 1024 x 14 x 14 one
#: 0.85 - 0.91x; one thread: the kernel faster on both;
#: ``tools/analysis_tools/benchmark_kernels.py --only layer --threads 2``)
LAYER_GATHER_MAX_PIXELS = 196
#: on CPUs where the fused spatial kernel is the fast path
#: (:func:`laud_mm.ops.fast_spatial_branch`: AVX-512, widths multiples of
#: 16), a layer block's kept samples run through it, each kept sample one
#: active patch that covers its whole map: conv1 - conv2 - conv3 and the
#: add into the shortcut rows in one call, the pixels of all kept samples
#: split over the threads (balanced at any kept count), no row copies and
#: no oneDNN call on a batch smaller than the static network's (the
#: per-sample GEMMs and the gathered path above are the other CPUs')
LAYER_FUSED_CPU = True


def layer_sample_gemm(in_pixels: int, threads: int) -> bool:
    """Whether a layer block off the fused kernel
    (:data:`LAYER_FUSED_CPU`) runs its kept samples on the per-sample GEMM
    kernel (no row copies) rather than gathered into oneDNN's
    convolutions (:data:`LAYER_GATHER_MAX_PIXELS`). Shared by the dynamic
    path and the latency predictor's eager model.

    Args:
        in_pixels: H x W of the block input.
        threads: intra-op threads (torch's, or the hardware spec's PEs).

    Returns:
        True for the per-sample GEMM kernel.
    """
    return threads <= 1 or in_pixels >= LAYER_GATHER_MAX_PIXELS


# ------------------------------------------------------------------ channel
#: kept-channel counts are padded up to a multiple of this (zero weights),
#: so that a batch is one batched GEMM / grouped conv and the backends see
#: few distinct shapes (oneDNN creates a primitive per shape)
CHANNEL_PAD = 8
#: on maps under this many pixels (7 x 7 at 224 px) above
#: :data:`CHANNEL_DENSE_RATE` kept groups the per-sample weights cost more
#: than they save: such blocks compute masked-dense with folded BN
CHANNEL_SMALL_MAP_PIXELS = 100
CHANNEL_DENSE_RATE = 0.7
#: on CPUs with AVX-512, channel blocks run the fused kernel
#: :func:`laud_mm.ops.channel_branch_add_relu` instead of the batched GEMMs,
#: at any batch size (:func:`fused_cpu_threads`)
CHANNEL_FUSED_CPU = True
#: with at least a sample per thread (fewer: the column split below), the
#: fused kernel runs conv1 row-blocked on input maps of at most this many
#: pixels, conv2 / conv3 on output maps of at most
#: :data:`CHANNEL_BLOCKED_MAX_OUT_PIXELS` (14 x 14 at 224 px): those
#: phases' weight panels are gathered block by block in L2, never written
#: for the whole batch (the kernel's kBlockedMaxPixels1 / 2 in
#: ``csrc/cpu/channel_conv_cpu.cpp``, which the latency model follows;
#: docs/benchmark_history.md, thirteenth round; docs/benchmarks.md,
#: "Row-blocked conv2 on 14 x 14 outputs")
CHANNEL_BLOCKED_MAX_IN_PIXELS = 196
CHANNEL_BLOCKED_MAX_OUT_PIXELS = 196
#: with fewer samples than threads, on input maps of at most
#: :data:`CHANNEL_BLOCKED_MAX_IN_PIXELS` and output maps of at most
#: :data:`CHANNEL_COLUMN_MAX_OUT_PIXELS` (7 x 7 at 224 px), the fused
#: kernel splits each sample's kept columns over the threads (every phase
#: row-blocked, three phases) instead of its pixels, when the batch has at
#: least :data:`CHANNEL_COLUMN_UNITS` units of 16 kept columns per thread
#: (the kernel's kColumnMaxPixels and kColUnits, which the latency model
#: follows; docs/benchmark_history.md, twentieth round)
CHANNEL_COLUMN_MAX_OUT_PIXELS = 49
CHANNEL_COLUMN_UNITS = 4

# ----------------------------------------------------------- memory format
#: where a LAUD-ResNet's blocks run the fused CPU kernels (channel blocks
#: :data:`CHANNEL_FUSED_CPU`, spatial blocks :data:`SPATIAL_FUSED_CPU`,
#: layer blocks :data:`LAYER_FUSED_CPU`: AVX-512), its
#: ``dynamic_memory_format`` is channels_last: fed channels_last input, the
#: kernels read x and write the output in place in NHWC, their tiles' own
#: layout (no transposition of conv1's input, no transposed epilogue), the
#: maskers' logit and pooling kernels read it in place, and the stem, the
#: downsample shortcuts and the blocks that compute densely run oneDNN's
#: channels_last convolutions, the faster format of the static network on
#: large maps with several threads (docs/benchmarks.md, "The dynamic path
#: in channels_last"). The backbone's forward runs in its input's format
#: either way (the benchmarks and ``laud_mm.BackboneSpeedHook`` convert
#: the input to this one)
CHANNELS_LAST_CPU = True


def fused_cpu_threads() -> bool:
    """Whether the fused CPU kernels may run at torch's current thread
    count: they split every batch (batch 1 included) over the intra-op
    threads when the extension runs on torch's pool
    (:func:`laud_mm.ops.parallel_kernels`); an extension built without it
    runs them on one thread, which only pays with one thread.

    Returns:
        True with one thread or parallel kernels.
    """
    return torch.get_num_threads() == 1 or parallel_kernels()


def uses_window_conv1(s: int, stride: int, dilation: int, n_act: float,
                      in_pixels: float) -> bool:
    """Whether a spatial block runs conv1 on the gathered input windows
    (``laud_mm.models.resnet.dynamic.window_conv1``): a stride-2 block whose
    ``n_act`` active K x K conv2 input windows (:func:`window_size`) cover,
    counted with overlaps, under :data:`SPATIAL_WINDOW_CONV1_MAX_FRACTION`
    of its ``in_pixels`` = N x H x W input pixels. Shared by the dynamic path
    and the latency predictor's eager model (with the expected ``n_act``).

    Args:
        s: granularity S (output pixels per patch side).
        stride, dilation: conv2's.
        n_act: active patches of the batch (may be fractional: expected).
        in_pixels: N x H_in x W_in.

    Returns:
        True for the window path.
    """
    if stride == 1:
        return False
    k = window_size(s, stride, dilation)
    return n_act * k * k < SPATIAL_WINDOW_CONV1_MAX_FRACTION * in_pixels


# -------------------------------------------------------------------- CUDA
#: the CUDA variant of the dynamic paths (``laud_mm.models.<family>.
#: dynamic_cuda``: device-side index lists, one deferred host read per block,
#: batched per-sample GEMMs, the CUDA gather / scatter kernels) runs for
#: CUDA tensors; set this to True to run it on CPU tensors too (the tests
#: check its logic without a GPU: the CPU kernels and PyTorch references
#: stand in for the CUDA ones)
DEVICE_PATH_ON_CPU = False
#: ResNet / RegNetY spatial blocks on CUDA: from this fraction of active
#: patches on, conv2 / conv3 run densely (cuDNN) and the output is masked;
#: below, gather -> conv2 / conv3 on the patches -> scatter. Not measured on
#: a GPU yet (tools/gpu_check.sh times both sides of it); every choice is
#: exact.
SPATIAL_DENSE_THRESHOLD_CUDA = 0.7
#: channel blocks on CUDA: kept-channel counts padded to a multiple of this
#: (tensor-core friendly GEMM sizes, few distinct shapes for cuBLAS / cuDNN)
CHANNEL_PAD_CUDA = 8


def device_path(x) -> bool:
    """Whether a dynamic block with input ``x`` takes the CUDA variant of
    its path: x on a CUDA device, or :data:`DEVICE_PATH_ON_CPU`."""
    return x.is_cuda or DEVICE_PATH_ON_CPU
