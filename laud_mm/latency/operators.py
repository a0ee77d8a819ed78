"""Per-operator analytic latency model with a tile-shape search.

Every convolution-like operator splits its output tensor (batch, channel, h, w)
into tiles ``TP x TC x TS1 x TS2``; each tile runs on one processing engine
(PE). For every candidate tile shape the model estimates

* ``T_compute = waves * K * max(ceil(tile_out / P), cycles_per_op) / f`` with
  ``waves = ceil(n_tiles / N_PE)`` and ``K`` the multiply-accumulates per
  output element. This is docs/method.md sec. 4's
  ``(MACs per tile / (f * P)) / PE utilisation * ceil(n_tiles / N_PE)`` with
  the PE utilisation ``tile_out / (P * max(ceil(tile_out / P),
  cycles_per_op))``: lanes left idle by a tile that is not a multiple of P,
  and an FMA pipeline of ``cycles_per_op`` stages that needs that many
  independent accumulators per unit to stay full;
* ``T_memory = off-chip bytes / BW + on-chip bytes / (l2_factor * BW)``. The
  off-chip bytes are the unique input (or, for patches gathered from a dense
  map, the part of it their windows cover), the weights and the output; the
  on-chip bytes are, per tile, its input window *including the k-1 halo*, its
  weights and its output, each divided by the memory-access efficiency of its
  contiguous runs (a run of L bytes costs whole ``transaction_bytes``
  transactions: NCHW rows of tiles narrower than the map). A dense
  streaming kernel (add, ReLU, pooling) reuses nothing: its on-chip traffic
  is its off-chip traffic passing through, so it pays the off-chip term
  only;
* ``T_op = T_compute + T_memory + launch`` (a library GEMM over token
  rows, ``ConvOp.blas_gemm``: ``max(T_compute, T_memory) + launch``, its
  blocking overlapping the two),

and keeps the fastest tile shape. Tile sides are powers of two plus the
divisors ``3, 5, 6, 7, 12, 14, 28, 56`` and the full dimension, none larger
than the dimension; tiles hold at most ``hw.max_tile_outputs`` outputs and
span at most ``hw.max_tile_batch`` samples (when set: 1 on a CPU, whose
PyTorch kernels run image by image and re-read the weights per image).
Searches are cached (:func:`functools.lru_cache`) on the hashable
:class:`ConvOp` and :class:`HardwareSpec`.

Memory layout: NCHW FP32 (PyTorch's default), so rows of a feature map are
the contiguous runs. Dynamic operators (paper sec. 3.4, Fig. 2):

* spatial (``ConvOp.patch_loop``): ``gather-conv`` reads each active patch's
  input window (S-1) * stride + k pixels wide out of the dense map, halo
  included, and ``conv on gathered patches`` the patch buffer; a PE runs its
  channel x pixel tile for every active patch in turn (the patch count is
  data-dependent, the tiling fixed), so every channel tile re-reads every
  patch's window; accesses move a pixel's channels (the fused kernels'
  channels-last layout), at full efficiency. ``scatter-add``
  (:func:`scatter_add_latency`) reads the residual map and writes the output
  whole, adding the patches at their positions;
* channel: each sample has its own active channel set, so a tile cannot span
  samples (TP = 1, weights gathered per sample) and the number of channel
  tiles varies with the per-sample count (binomial load imbalance);
* layer: the dense operators on the gathered kept samples.

Units: seconds inside, milliseconds in :class:`OpLatency`. FLOPs = MACs.
Source: paper appendix A and sec. 3.3-3.4, docs/method.md sec. 4.
"""
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import List, Optional, Tuple

import numpy as np

from ..ops.policy import ATEN_GRAIN_SIZE
from .hardware import HardwareSpec

__all__ = ['ConvOp', 'OpLatency', 'conv_latency', 'conv_op',
           'elementwise_latency', 'pool_latency', 'linear_latency',
           'se_latency', 'launch_latency', 'region_ops',
           'tile_candidates', 'access_efficiency', 'TILE_DIVISORS',
           'PARALLEL_GRAIN']

#: non-power-of-two tile sides tried in addition to powers of two
TILE_DIVISORS = (3, 5, 6, 7, 12, 14, 28, 56)
#: ATen's intra-op grain (``at::internal::GRAIN_SIZE``): an elementwise
#: kernel over more elements than this splits over the threads, a parallel
#: region (``HardwareSpec.region_us``); one over fewer runs on the calling
#: thread. This repository's compiled epilogues and gathers split from
#: about 16 384 elements; the model takes ATen's grain for them too (the
#: two differ on maps of 16 - 32 K elements only)
PARALLEL_GRAIN = ATEN_GRAIN_SIZE


def _region_s(hw: HardwareSpec, parallel: bool) -> float:
    """Seconds of one parallel region (``hw.region_us``) if ``parallel``
    and the device has more than one PE, else 0."""
    return hw.region_us * 1e-6 if parallel and hw.num_pe > 1 else 0.


@dataclass
class OpLatency:
    """Predicted latency of one kernel.

    Attributes:
        name: operator name, e.g. ``'conv2'``, ``'gather_conv2'``.
        ms: total latency, milliseconds: compute + memory + launch (a
            library GEMM over token rows, ``ConvOp.blas_gemm``: max(compute,
            memory) + launch).
        compute_ms, memory_ms, launch_ms: the three terms, milliseconds.
        macs: multiply-accumulates executed (whole batch).
        offchip_bytes, onchip_bytes: traffic of the chosen tile shape (the
            on-chip bytes already divided by the access efficiency).
        tile: chosen (TP, TC, TS1, TS2), or None for streaming ops.
        n_tiles: number of tiles of the chosen shape.
        utilisation: PE utilisation of the chosen tile (0..1].
    """
    name: str
    ms: float
    compute_ms: float = 0.
    memory_ms: float = 0.
    launch_ms: float = 0.
    macs: float = 0.
    offchip_bytes: float = 0.
    onchip_bytes: float = 0.
    tile: Optional[Tuple[int, int, int, int]] = None
    n_tiles: float = 0.
    utilisation: float = 1.

    def scaled(self, factor: float, name: Optional[str] = None) -> 'OpLatency':
        """This latency times ``factor`` (expected cost of an op that runs
        with probability ``factor``)."""
        return OpLatency(name or self.name, self.ms * factor,
                         self.compute_ms * factor, self.memory_ms * factor,
                         self.launch_ms * factor, self.macs * factor,
                         self.offchip_bytes * factor, self.onchip_bytes * factor,
                         self.tile, self.n_tiles, self.utilisation)


@dataclass(frozen=True)
class ConvOp:
    """A convolution-like operator, hashable so that searches cache.

    Output tensor: (batch, cout, out_h, out_w); input source map
    (cin, in_h, in_w) per sample.

    Attributes:
        batch: number of output "images": samples, or active patches for a
            gathered spatial conv (> 0, may be fractional for expectations).
        cin, cout: input / output channels (expected active counts for a
            channel-dynamic conv; fractional allowed).
        out_h, out_w: output size per image (patch side S for patches).
        in_h, in_w: size of the map the input is read from (the dense map
            for a gathered conv), pixels.
        kernel, stride, dilation, groups: convolution hyper-parameters.
        gathered: input windows are cut out of a larger map (patches): each
            window row is a separate run, and off-chip input is limited to
            ``in_coverage`` of the source map.
        in_coverage: fraction of the source map the windows touch (0..1].
        source_batch: samples of the source map (for off-chip input bytes
            of a gathered conv); defaults to ``batch``.
        per_sample_channels: channel-dynamic: every sample has its own
            channel set, so tiles do not span samples (TP = 1).
        cout_std: standard deviation of the per-sample active output
            channels (load imbalance), 0 for static.
        cout_max: the most output channels a sample can keep (the full
            width; None: unbounded): caps the spread ``cout + cout_std``
            of the load imbalance, so that the channel tiles never exceed
            those of the whole width.
        weight_elems: weight elements read off-chip (defaults to the dense
            ``cout * cin / groups * k * k``).
        patch_loop: the batch is the list of active patches (a spatial
            block's gather-conv and conv on gathered patches, paper sec.
            3.4): every tile spans all of them (TP = batch; the PE loops
            over the patches, the tile cap applies to one patch's part),
            and the tile's reads and writes run at full access efficiency
            (a pixel's contiguous channels).
        fused_gemm: a GEMM of the fused dynamic CPU kernels: its compute
            runs at ``HardwareSpec.fused_gemm_speed`` times the modelled
            rate.
        blas_gemm: a library GEMM over token rows (``nn.Linear``, the
            batched matmuls of head skipping): its compute runs at
            ``HardwareSpec.gemm_speed`` times the modelled rate, and its
            blocking overlaps the memory traffic with the compute, so the
            operator costs the larger of the two (a roofline) rather than
            their sum.
        parallel: whether the operator is a parallel region of its own
            (``HardwareSpec.region_us``). None: a library convolution or
            GEMM is one, except a GEMV (a linear layer of one row: MKL
            runs it on the calling thread) and a fused kernel's GEMM
            (``fused_gemm``: the kernel's phases are counted by its path,
            :func:`region_ops`). False: a call that stays on the calling
            thread (e.g. the compiled masker, ``laud_mm.ops.masker_gate``).
        name: operator name.
    """
    batch: float
    cin: float
    cout: float
    out_h: int
    out_w: int
    in_h: int
    in_w: int
    kernel: int = 1
    stride: int = 1
    dilation: int = 1
    groups: int = 1
    gathered: bool = False
    in_coverage: float = 1.
    source_batch: Optional[float] = None
    per_sample_channels: bool = False
    cout_std: float = 0.
    cout_max: Optional[float] = None
    weight_elems: Optional[float] = None
    patch_loop: bool = False
    fused_gemm: bool = False
    blas_gemm: bool = False
    parallel: Optional[bool] = None
    name: str = 'conv'

    @property
    def k_reduce(self) -> float:
        """MACs per output element: cin / groups * k * k."""
        return self.cin / self.groups * self.kernel * self.kernel

    @property
    def macs(self) -> float:
        """MACs of the whole operator."""
        return self.batch * self.cout * self.out_h * self.out_w * self.k_reduce


def tile_candidates(dim: int) -> Tuple[int, ...]:
    """Candidate tile sides for a dimension: powers of two and
    :data:`TILE_DIVISORS` not above ``dim``, plus ``dim`` itself (sorted).

    Raises:
        ValueError: if ``dim < 1``.
    """
    dim = int(math.ceil(dim))
    if dim < 1:
        raise ValueError(f'tile_candidates: dim={dim} must be >= 1')
    out = {dim}
    p = 1
    while p <= dim:
        out.add(p)
        p *= 2
    out.update(d for d in TILE_DIVISORS if d <= dim)
    return tuple(sorted(out))


def access_efficiency(run_bytes, transaction_bytes: int, aligned: bool):
    """Fraction of the moved bytes that are useful for contiguous runs.

    Args:
        run_bytes: length of a contiguous run in bytes (scalar or array).
        transaction_bytes: memory transaction size T in bytes.
        aligned: runs start on a transaction boundary (dense tiles of a
            dense tensor); else (windows, scattered patch rows) the start is
            uniformly 4-byte aligned and costs on average
            ``1 + (L - 4) / T`` transactions.

    Returns:
        ``L / (T * transactions)`` in (0, 1].
    """
    L = np.asarray(run_bytes, dtype=float)
    T = float(transaction_bytes)
    if aligned:
        n = np.ceil(L / T)
    else:
        n = 1. + np.maximum(L - 4., 0.) / T
    return np.minimum(1., L / (T * n))


def _expected_ceil(mean: float, std: float, tile: np.ndarray,
                   cap: Optional[float] = None) -> np.ndarray:
    """E[ceil(X / tile)] for X ~ (mean, std) in [0, cap], by two-point
    quadrature (mean - std, mean + std), each point clipped to the range:
    a sample keeps between 0 and ``cap`` (the width) channels, so near
    full density the spread cannot add a channel tile."""
    if std <= 0:
        return np.ceil(mean / tile - 1e-9)
    lo = max(mean - std, 0.)
    hi = mean + std if cap is None else min(mean + std, float(cap))
    return 0.5 * (np.ceil(lo / tile - 1e-9) + np.ceil(hi / tile - 1e-9))


#: PyTorch's CPU 1x1 convolutions below this many images run as per-image
#: MKL GEMMs (no weight reorder); from it on, oneDNN's direct convolution
ONEDNN_MIN_1X1_BATCH = 16


def reorders_weights(op: ConvOp) -> bool:
    """Whether a CPU eager call of ``op`` goes to oneDNN's direct
    convolution, which re-lays out the weights on every call
    (``HardwareSpec.weight_reorder_gbs``): kernels larger than 1x1, and 1x1
    convolutions of :data:`ONEDNN_MIN_1X1_BATCH` images or more; not the
    per-sample batched GEMMs (``per_sample_channels``) nor the library
    GEMMs of linear layers (``blas_gemm``: ``F.linear`` runs MKL at any
    batch)."""
    if op.per_sample_channels or op.blas_gemm:
        return False
    return op.kernel > 1 or op.batch >= ONEDNN_MIN_1X1_BATCH


@lru_cache(maxsize=65536)
def conv_latency(hw: HardwareSpec, op: ConvOp) -> OpLatency:
    """Latency of one convolution-like kernel, fastest tile shape.

    Args:
        hw: the device.
        op: the operator (see :class:`ConvOp`).

    Returns:
        :class:`OpLatency` of the best tile shape (milliseconds; the
        launch term is ``launch_us``, plus one parallel region,
        ``region_us``, on several PEs where ``op`` is one,
        :attr:`ConvOp.parallel`; compute + memory + launch, or for a
        library GEMM over token rows, :attr:`ConvOp.blas_gemm`, the
        roofline max(compute, off-chip memory) + launch); a
        zero-cost entry when the operator has no work (``batch`` or
        ``cout`` is 0).

    Raises:
        ValueError: for negative sizes or a groups value that does not
            divide the channels.
    """
    for key in ('batch', 'cin', 'cout', 'out_h', 'out_w', 'in_h', 'in_w'):
        if getattr(op, key) < 0:
            raise ValueError(f'{op.name}: {key}={getattr(op, key)!r} < 0')
    if op.batch <= 0 or op.cout <= 0 or op.cin <= 0:
        return OpLatency(op.name, 0.)
    if op.groups < 1 or (op.groups > 1 and (
            op.cin % op.groups or op.cout % op.groups)):
        raise ValueError(f'{op.name}: groups={op.groups} must divide '
                         f'cin={op.cin} and cout={op.cout}')
    B, C, H, W = op.batch, op.cout, op.out_h, op.out_w
    K = op.k_reduce
    db = hw.dtype_bytes
    T_tr = hw.transaction_bytes
    P = hw.fp32_per_pe
    if op.patch_loop:  # every tile loops over all the active patches
        tp_c = np.array((B,), float)
    elif op.per_sample_channels or hw.max_tile_batch == 1:
        tp_c = np.array((1,), float)
    else:
        tp_c = np.array(tile_candidates(math.ceil(B)), float)
        if hw.max_tile_batch > 1:
            tp_c = tp_c[tp_c <= hw.max_tile_batch]
    tc_c = np.array(tile_candidates(math.ceil(C)), float)
    th_c = np.array(tile_candidates(H), float)
    tw_c = np.array(tile_candidates(W), float)
    TP, TC, TH, TW = (a.ravel() for a in np.meshgrid(
        tp_c, tc_c, th_c, tw_c, indexing='ij'))
    tile_out = TP * TC * TH * TW
    keep = (tile_out / TP if op.patch_loop else tile_out) <= \
        hw.max_tile_outputs
    if not keep.any():  # a single output row larger than the cap
        keep = tile_out == tile_out.min()
    TP, TC, TH, TW, tile_out = TP[keep], TC[keep], TH[keep], TW[keep], \
        tile_out[keep]

    # ---- tiles and compute
    n_c = _expected_ceil(C, op.cout_std, TC, op.cout_max)
    n_tiles = np.ceil(B / TP - 1e-9) * n_c * np.ceil(H / TH) * np.ceil(W / TW)
    waves = np.ceil(n_tiles / hw.num_pe - 1e-9)
    per_unit = np.ceil(tile_out / P - 1e-9)
    cycles_per_k = np.maximum(per_unit, hw.cycles_per_op)
    util = tile_out / (P * cycles_per_k)
    t_compute = waves * K * cycles_per_k / hw.clock_hz
    v = hw.vector_width
    if v > 0 and op.kernel == 1 and W > 1 and not reorders_weights(op):
        # MKL GEMM vectorised along the pixels of an image (not the single
        # GEMMs over gathered rows, modelled as a (rows x 1) map: those
        # vectorise along the output channels)
        t_compute = t_compute * (math.ceil(H * W / v) * v) / (H * W)
    if op.fused_gemm:
        t_compute = t_compute / hw.fused_gemm_speed
    elif op.blas_gemm:
        t_compute = t_compute / hw.gemm_speed

    # ---- on-chip traffic per tile (elements), halo included
    k_eff = (op.kernel - 1) * op.dilation + 1
    pad = (op.kernel // 2) * op.dilation
    win_h = np.minimum((TH - 1) * op.stride + k_eff, op.in_h + 2 * pad)
    win_w = np.minimum((TW - 1) * op.stride + k_eff, op.in_w + 2 * pad)
    if op.groups == 1:
        cin_tile = op.cin
    else:
        cout_g = op.cout / op.groups
        cin_tile = op.cin / op.groups * np.minimum(
            op.groups, np.ceil(TC / cout_g))
    in_tile = TP * cin_tile * win_h * win_w
    w_tile = TC * K
    full_rows = (~np.bool_(op.gathered)) & (win_w >= op.in_w)
    in_run = np.where(full_rows, win_h * op.in_w, win_w) * db
    eff_in = np.where(full_rows,
                      access_efficiency(in_run, T_tr, True),
                      access_efficiency(in_run, T_tr, False))
    out_run = np.where(TW >= W, TH * W, TW) * db
    eff_out = access_efficiency(out_run, T_tr, True)
    if op.patch_loop:  # a pixel's contiguous channels per access
        eff_in = np.ones_like(eff_in)
        eff_out = np.ones_like(eff_out)
    onchip = n_tiles * (in_tile / eff_in + w_tile + tile_out / eff_out) * db

    # ---- off-chip traffic (tile independent except for the input runs)
    src_b = op.batch if op.source_batch is None else op.source_batch
    in_elems = src_b * op.cin * op.in_h * op.in_w
    if op.gathered:
        in_elems = in_elems * op.in_coverage
    in_off = in_elems * db
    w_elems = op.weight_elems if op.weight_elems is not None \
        else op.cout * K
    out_elems = B * C * H * W
    offchip = in_off + (w_elems + out_elems) * db
    if op.blas_gemm:  # its blocking keeps the tiles' traffic in cache
        t_mem = np.full_like(onchip, offchip / hw.bandwidth)
    else:
        t_mem = offchip / hw.bandwidth + onchip / hw.l2_bandwidth
    w_bytes = w_elems * db
    if hw.weight_reorder_gbs > 0 and reorders_weights(op) and \
            w_bytes >= hw.weight_reorder_min_mb * 1e6:
        # the per-call weight reorder of a CPU direct convolution
        t_mem = t_mem + 2. * w_bytes / (hw.weight_reorder_gbs * 1e9)
    # a library convolution or GEMM is a parallel region, except a GEMV
    # (one row on 1 x 1 maps: MKL runs it on the calling thread); the
    # fused kernels' GEMMs are phases their paths count (region_ops)
    gemv = op.out_h * op.out_w == 1 and op.in_h * op.in_w == 1 and \
        op.batch <= 1
    parallel = (not op.fused_gemm and not gemv) if op.parallel is None \
        else op.parallel
    launch = hw.launch_us * 1e-6 + _region_s(hw, parallel)
    if op.blas_gemm:  # a blocked library GEMM overlaps its traffic
        total = np.maximum(t_compute, t_mem) + launch
    else:
        total = t_compute + t_mem + launch
    # a memory-bound roofline ties every tile whose compute fits under the
    # memory time: report the one of least compute among them
    i = int(np.lexsort((t_compute, total))[0]) if op.blas_gemm else \
        int(np.argmin(total))
    return OpLatency(
        op.name, float(total[i]) * 1e3, float(t_compute[i]) * 1e3,
        float(t_mem[i]) * 1e3, launch * 1e3, op.macs, float(offchip),
        float(onchip[i]),
        (int(TP[i]), int(TC[i]), int(TH[i]), int(TW[i])), float(n_tiles[i]),
        float(util[i]))


@lru_cache(maxsize=65536)
def elementwise_latency(hw: HardwareSpec, name: str, elems: float,
                        reads: int = 2, writes: int = 1, ops_per_elem: float = 1.,
                        run_elems: Optional[float] = None,
                        contiguous_reads: int = 0,
                        density: Optional[float] = None,
                        parallel: Optional[bool] = None,
                        cold: bool = False) -> OpLatency:
    """A streaming (memory-bound) kernel: add, scatter-add, ReLU, scale.

    Args:
        hw: the device.
        name: operator name.
        elems: output elements (whole batch).
        reads, writes: tensors read / written per element.
        ops_per_elem: arithmetic operations per element.
        run_elems: contiguous run length in elements of the scattered
            accesses (patch row length S for scatter-add); None = dense.
        contiguous_reads: how many of the ``reads`` are dense (e.g. the
            gathered patch buffer of a scatter-add) when ``run_elems`` is
            given.
        density: with ``run_elems``, the fraction in (0, 1] of the
            scattered tensors that the runs cover, the runs placed
            independently at random (a random patch mask): a transaction
            shared by several runs moves once, so a scattered tensor moves
            ``elems / density * (1 - (1 - density) ** k)`` elements' bytes
            with ``k = 1 / efficiency`` the transactions' bytes per useful
            byte of a lone run (``elems / efficiency`` as ``density -> 0``,
            the whole tensor once at density 1). None: runs share no
            transaction.
        parallel: whether the kernel is a parallel region of its own
            (``hw.region_us``); None: as ATen's kernels, when ``elems``
            exceeds :data:`PARALLEL_GRAIN`. False for a pass inside a
            fused kernel, whose phases the caller counts
            (:func:`region_ops`).
        cold: the bytes come from DRAM even when they would fit in the
            last-level cache: weights, which a backbone forward last read a
            forward earlier (docs/latency_predictor.md, "Cold weights").
            False: resident when they fit (activations that the previous
            kernel has just written).

    Returns:
        :class:`OpLatency` (``offchip_bytes`` the bytes moved in whole
        transactions, ``onchip_bytes`` the useful bytes); zero when
        ``elems`` is 0.

    Raises:
        ValueError: if ``elems < 0``, ``density`` is outside (0, 1] or
            given without ``run_elems``.
    """
    if elems < 0:
        raise ValueError(f'{name}: elems={elems!r} < 0')
    if density is not None and not 0. < density <= 1.:
        raise ValueError(f'{name}: density={density!r} is not in (0, 1]')
    if density is not None and run_elems is None:
        raise ValueError(f'{name}: density={density!r} needs run_elems '
                         f'(the runs it places)')
    if elems == 0:
        return OpLatency(name, 0.)
    db = hw.dtype_bytes
    if run_elems is None:
        eff = 1.
        useful = (reads + writes) * elems * db
        moved = useful
    else:
        eff = float(access_efficiency(run_elems * db, hw.transaction_bytes,
                                      False))
        dense = contiguous_reads
        scattered = reads + writes - dense
        useful = (reads + writes) * elems * db
        if density is None:  # each run's transactions its own
            per_tensor = elems / eff
        elif density < 1.:  # E[transactions touched] of the whole tensor
            per_tensor = elems / density * \
                -math.expm1(math.log1p(-density) / eff)
        else:
            per_tensor = elems
        moved = dense * elems * db + scattered * per_tensor * db
    # a dense streaming kernel reuses nothing: its bytes come from DRAM
    # once and the on-chip level only passes them through. Short scattered
    # runs (the eager CPU path's gather / scatter kernels) move whole cache
    # lines from DRAM, then their useful bytes through the on-chip level.
    if not cold and moved <= hw.llc_mb * 1e6:  # in the last-level cache
        t_mem = moved / hw.l2_bandwidth
    elif run_elems is None:
        t_mem = useful / hw.bandwidth
    else:
        t_mem = moved / hw.bandwidth + useful / hw.l2_bandwidth
    t_comp = elems * ops_per_elem / hw.peak_macs
    launch = hw.launch_us * 1e-6 + _region_s(
        hw, elems > PARALLEL_GRAIN if parallel is None else parallel)
    total = t_comp + t_mem + launch
    return OpLatency(name, total * 1e3, t_comp * 1e3, t_mem * 1e3,
                     launch * 1e3, 0., moved, useful)


def scatter_add_latency(hw: HardwareSpec, name: str, map_elems: float,
                        patch_elems: float) -> OpLatency:
    """The fused scatter-add (+ ReLU) of a spatial block: the residual map
    read and the block output written whole (the inactive positions pass
    the residual through the final ReLU), the gathered patch buffer read
    and added at the active positions.

    Args:
        hw: the device.
        name: operator name.
        map_elems: elements of the block output (whole batch).
        patch_elems: elements of the active patches (whole batch).

    Returns:
        :class:`OpLatency`: off-chip the two maps and the patches; on-chip
        the active positions' three accesses (patch, residual, output),
        each a pixel's contiguous channels (the fused kernels' channels-last
        layout), so at full access efficiency.
    """
    if map_elems < 0 or patch_elems < 0:
        raise ValueError(f'{name}: map_elems={map_elems!r}, patch_elems='
                         f'{patch_elems!r} must be >= 0')
    db = hw.dtype_bytes
    off = (2. * map_elems + patch_elems) * db
    on = 3. * patch_elems * db
    t_mem = off / hw.bandwidth + on / hw.l2_bandwidth
    t_comp = (map_elems + patch_elems) / hw.peak_macs
    launch = hw.launch_us * 1e-6 + _region_s(hw, map_elems > PARALLEL_GRAIN)
    return OpLatency(name, (t_comp + t_mem + launch) * 1e3, t_comp * 1e3,
                     t_mem * 1e3, launch * 1e3, 0., off, on)


def pool_latency(hw: HardwareSpec, name: str, batch: float, channels: float,
                 in_hw: Tuple[int, int], out_hw: Tuple[int, int],
                 window: int) -> OpLatency:
    """Pooling (max / average), a streaming kernel.

    Args:
        batch, channels: tensor batch and channels.
        in_hw, out_hw: input and output sizes, pixels.
        window: pooling window area in pixels (e.g. 9 for 3x3; H*W for
            global pooling).

    Returns:
        :class:`OpLatency` (reads the input once, writes the output: the
        off-chip term only, as every streaming kernel of
        :func:`elementwise_latency`; an input resident in the last-level
        cache at the on-chip bandwidth).
    """
    in_e = batch * channels * in_hw[0] * in_hw[1]
    out_e = batch * channels * out_hw[0] * out_hw[1]
    db = hw.dtype_bytes
    moved = (in_e + out_e) * db
    if moved <= hw.llc_mb * 1e6:
        t_mem = moved / hw.l2_bandwidth
    else:
        t_mem = moved / hw.bandwidth
    t_comp = out_e * window / hw.peak_macs
    launch = hw.launch_us * 1e-6 + _region_s(hw, in_e > PARALLEL_GRAIN)
    total = t_comp + t_mem + launch
    return OpLatency(name, total * 1e3, t_comp * 1e3, t_mem * 1e3,
                     launch * 1e3, out_e * window, moved, moved)


def linear_latency(hw: HardwareSpec, name: str, batch: float, fin: float,
                   fout: float, parallel: Optional[bool] = None
                   ) -> OpLatency:
    """A fully connected layer (N, fin) -> (N, fout) as a 1x1 conv on 1x1
    maps (tile search included); ``parallel`` as :attr:`ConvOp.parallel`
    (None: a parallel region from two rows on)."""
    return conv_latency(hw, ConvOp(batch, fin, fout, 1, 1, 1, 1,
                                   parallel=parallel, name=name))


def se_latency(hw: HardwareSpec, batch: float, channels: int, hw_size:
               Tuple[int, int], squeeze: int) -> Tuple[OpLatency, ...]:
    """Squeeze-and-excitation: global pool, FC C -> s, FC s -> C (one fused
    kernel for the two FCs), channel-wise scale of the map.

    Args:
        batch, channels: input tensor (N, C, H, W).
        hw_size: (H, W).
        squeeze: hidden width s.

    Returns:
        (pool, fc, scale) latencies.
    """
    pool = pool_latency(hw, 'se_pool', batch, channels, hw_size, (1, 1),
                        hw_size[0] * hw_size[1])
    fc1 = linear_latency(hw, 'se_fc', batch, channels, squeeze)
    fc2 = linear_latency(hw, 'se_fc2', batch, squeeze, channels)
    fc = OpLatency('se_fc', fc1.ms + fc2.ms - hw.launch_us * 1e-3,
                   fc1.compute_ms + fc2.compute_ms,
                   fc1.memory_ms + fc2.memory_ms, hw.launch_us * 1e-3,
                   fc1.macs + fc2.macs)
    scale = elementwise_latency(hw, 'se_scale',
                                batch * channels * hw_size[0] * hw_size[1],
                                reads=1, writes=1)
    return pool, fc, scale


def conv_op(hw: HardwareSpec, name: str, batch: float, cin: float,
            cout: float, out_hw, in_hw, k: int = 1, stride: int = 1,
            **kw) -> OpLatency:
    """:func:`conv_latency` of a k x k convolution given by its sizes.

    Args:
        hw: the device.
        name: operator name in the report.
        batch: samples (may be fractional: expected counts).
        cin, cout: input / output channels (may be fractional).
        out_hw, in_hw: (H, W) of output and input, pixels.
        k, stride: kernel side and stride.
        **kw: further :class:`ConvOp` fields (``dilation``, ``groups``,
            ``per_sample_channels``, ``gathered``, ...).

    Returns:
        :class:`OpLatency` (milliseconds).
    """
    return conv_latency(hw, ConvOp(
        float(batch), cin, cout, int(out_hw[0]), int(out_hw[1]),
        int(in_hw[0]), int(in_hw[1]), k, stride, name=name, **kw))


def launch_latency(hw: HardwareSpec, name: str, n: float) -> OpLatency:
    """``n`` tiny kernels or host calls whose cost is their launch (eager
    bookkeeping: index building, small gathers, ``.item()`` syncs, masker
    MLP steps).

    Args:
        hw: the device: ``host_call_us`` per call, or ``launch_us`` where
            that is 0.
        name: the entry's name.
        n: calls (>= 0).

    Returns:
        :class:`OpLatency` of ``n`` calls, milliseconds, all launch.
    """
    per_call = hw.host_call_us if hw.host_call_us > 0 else hw.launch_us
    t = n * per_call * 1e-3
    return OpLatency(name, t, launch_ms=t)


def region_ops(hw: HardwareSpec, name: str, n: float) -> List[OpLatency]:
    """``n`` parallel regions of a fused CPU kernel (its phases, one
    ``at::parallel_for`` each, ``csrc/cpu/partition.h``): the thread pool
    started and joined ``n`` times (``hw.region_us`` each). The phases'
    work is in the kernel's other entries.

    Args:
        hw: the device.
        name: the entry's name.
        n: regions (>= 0).

    Returns:
        ``[OpLatency]`` (milliseconds, all launch), or ``[]`` where a
        region costs nothing (``region_us`` 0, one PE, ``n`` 0).

    Raises:
        ValueError: if ``n < 0``.

    Source: the launch term of paper appendix A, on a CPU's thread pool
    (docs/latency_predictor.md, "Parallel regions").
    """
    if n < 0:
        raise ValueError(f'{name}: n={n!r} regions < 0')
    t = n * _region_s(hw, True) * 1e3
    return [OpLatency(name, t, launch_ms=t)] if t > 0 else []
