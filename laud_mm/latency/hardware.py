"""Hardware descriptions for the latency predictor.

A device is ``N_PE`` processing engines (GPU streaming multiprocessors, CPU
cores), each with ``P`` FP32 units at clock ``f``, and three memory levels:
off-chip DRAM (bandwidth ``BW``), an on-chip global level (L2 cache, bandwidth
``l2_factor * BW``) and the in-PE level (registers / shared memory, not
modelled as a bottleneck).

Source: paper appendix A and Tab. IV, docs/method.md sec. 4 (the figures of
the paper's five devices). H200, A100 and ``cpu`` are this project's
additions (public data sheets; ``cpu`` is a placeholder for this 2-core
machine, to be replaced by the measurement of
``tools/analysis_tools/calibrate_hardware.py``).
"""
import dataclasses
import json
import math
import os
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Union

__all__ = ['HardwareSpec', 'KNOWN_HARDWARE', 'get_hardware', 'load_hardware',
           'save_hardware']


@dataclass(frozen=True)
class HardwareSpec:
    """One device of the analytic latency model (immutable, hashable).

    Attributes:
        name: identifier, e.g. ``'v100'``.
        num_pe: number of processing engines N_PE (SMs / cores), > 0.
        fp32_per_pe: FP32 multiply-accumulate units per PE, P (> 0; may be
            fractional for a calibrated CPU).
        clock_mhz: clock f in MHz (> 0).
        bandwidth_gbs: off-chip (DRAM) bandwidth BW in GB/s (1e9 bytes/s).
        l2_factor: on-chip (L2) bandwidth as a multiple of BW (> 0).
        cycles_per_op: latency of one FP32 FMA in cycles (default 4). A PE
            runs at full rate only if each unit has at least this many
            independent accumulators (output elements) in its tile.
        transaction_bytes: memory transaction size in bytes (default 32 =
            8 FP32): a run of L contiguous bytes costs whole transactions.
        launch_us: fixed cost of one kernel launch in microseconds (8).
        default_batch: batch size the paper reports this device at.
        max_tile_outputs: most output elements one tile may hold (register
            file bound: 128 x 128 accumulators per PE on the GPUs).
        dtype_bytes: bytes per element (4, FP32).
        max_tile_batch: most samples (images, patches) one tile may span;
            0 (default) = no limit (GPU implicit-GEMM kernels tile the batch
            with the pixels). PyTorch's CPU kernels run image by image
            (oneDNN direct convolutions, the per-image GEMMs of 1x1
            convolutions, batched GEMMs), so each image re-reads the
            weights: ``tools/analysis_tools/calibrate_hardware.py`` writes 1
            for a CPU.
        weight_reorder_gbs: GB/s at which every call of a direct
            convolution re-lays out its weights (0, default: never). PyTorch's
            CPU convolutions (oneDNN: 3x3 convolutions, 1x1 convolutions of
            16 images or more) reorder the dense OIHW weights into oneDNN's
            blocked layout on every call: a read and a write of the weights,
            1.4 - 1.9 ms per call for the 9.4 MB of a 512 -> 512 3x3
            convolution on this CPU (against pre-packed weights), while
            weights that stay in cache (<= 2.4 MB: ~0.2 ms) cost little
            (``tools/analysis_tools/benchmark_kernels.py``): the term applies
            to weights of at least ``weight_reorder_min_mb``. The 1x1 convolutions of fewer than 16
            images and the GEMMs (``addmm``, ``baddbmm``) run MKL without it.
            ``tools/analysis_tools/calibrate_hardware.py`` measures it on a CPU.
        weight_reorder_min_mb: smallest weight size (MB, 1e6 bytes) whose
            reorder is charged (default 4).
        vector_width: FP32 lanes of the CPU's SIMD registers (16 with
            AVX-512, 8 with AVX2; 0, default: not modelled, GPUs). The MKL
            GEMMs of PyTorch's 1x1 convolutions (under 16 images) and of the
            batched per-sample GEMMs vectorise along the pixels of an image,
            so a map of HW pixels costs ceil(HW / vector_width) vectors: a
            7 x 7 map runs at 49 / 64 of the rate (measured: 32.6 vs 38.6
            GMAC/s for 56 x 56, ``tools/analysis_tools/benchmark_kernels.py``).
        llc_mb: last-level cache in MB (1e6 bytes; 0, default: not
            modelled). A streaming kernel (add, ReLU, gather, scatter) whose
            bytes moved fit in it is served from the cache at the on-chip
            bandwidth: on a CPU the activations of a block of one or two
            images stay in the L3 between kernels (32 MB here).
        host_call_us: host-side cost of one bookkeeping call of the eager
            dynamic path, microseconds (index building, ``.item()``
            syncs, views, the Python around them; ``launch_latency``
            counts them). 0 (default): the same as ``launch_us`` (the
            paper's GPU specs, whose model has one launch term). On a CPU
            a call costs several times a bare kernel launch:
            ``tools/analysis_tools/calibrate_hardware.py`` measures it from
            an empty dynamic block (every gate off).
        region_us: cost of one parallel region over the ``num_pe``
            threads of a CPU, microseconds: handing the work to the
            intra-op pool's sleeping threads and joining them (0, default:
            none; GPUs, one thread). Every library convolution, every
            ATen elementwise kernel over more than
            :data:`~laud_mm.latency.operators.PARALLEL_GRAIN` elements and
            each phase of the fused kernels pays it. It depends on the
            OpenMP wait policy (tens of microseconds when the pool's
            threads sleep between regions, ``OMP_WAIT_POLICY=PASSIVE``;
            a few when they spin; docs/latency_predictor.md, "Parallel
            regions"). ``tools/analysis_tools/calibrate_hardware.py``
            measures it (an add of a grain per thread at N threads against
            its one-thread time).
        fused_gemm_speed: compute rate of this repository's fused dynamic
            CPU kernels (``spatial_branch_add_relu``,
            ``channel_branch_add_relu``: AVX-512 GEMMs over the kept pixels
            or channels) as a multiple of the rate the model gives the
            library convolutions (> 0; 1, default: the same).
            ``calibrate_hardware.py`` measures it on a fused spatial and
            a fused channel block with half their gates on.
        gemm_speed: compute rate of the library GEMMs over token rows
            (``nn.Linear`` and the head-skipping batched GEMMs: MKL's /
            cuBLAS's sgemm, ``ConvOp.blas_gemm``) as a multiple of the
            rate the model gives the library convolutions (> 0; 1,
            default: the same). ``calibrate_hardware.py`` measures it on
            an encoder layer's Linear: 1.48 at two threads and 0.90 at
            one on the Intel VM of docs/t2t_vit.md, "Latency on a CPU"
            (the convolution fit at one thread gives a higher rate per
            core).
        attention_speed: compute rate of the fused attention kernel
            (``scaled_dot_product_attention``: the two products and the
            softmax, the logits kept on chip) as a multiple of the rate
            the model gives its parts (> 0; 1, default).
            ``calibrate_hardware.py`` measures it on an encoder layer's
            and a Tokens-to-Token layer's attention.
        token_stream_gbs: bandwidth, GB/s, at which PyTorch's streaming
            kernels over token activations (LayerNorm, the residual adds,
            GELU, the Tokens-to-Token module's splits and copies, the
            token-skipping gathers and scatters) move their bytes inside a
            transformer forward; each such kernel then costs its bytes /
            this rate plus its launch and parallel region
            (:func:`laud_mm.latency.blocks.t2t_vit.token_stream_latency`).
            0 (default; the paper's specs): the streaming model of
            :func:`~laud_mm.latency.operators.elementwise_latency`.
            ``calibrate_hardware.py`` measures it from an encoder layer
            run as inference runs it: what the layer's time leaves after
            its GEMMs and its attention, as modelled with the two terms
            above.

    Derived: ``peak_macs`` (MAC/s), ``bandwidth`` and ``l2_bandwidth``
    (bytes/s).

    Raises:
        ValueError: on construction, naming the field whose value is not a
            positive (or, where 0 is allowed, non-negative) finite number,
            or an integer field that is not an integer.
    """
    name: str
    num_pe: int
    fp32_per_pe: float
    clock_mhz: float
    bandwidth_gbs: float
    l2_factor: float = 4.0
    cycles_per_op: float = 4.0
    transaction_bytes: int = 32
    launch_us: float = 8.0
    default_batch: int = 1
    max_tile_outputs: int = 16384
    dtype_bytes: int = 4
    max_tile_batch: int = 0
    weight_reorder_gbs: float = 0.
    weight_reorder_min_mb: float = 4.
    vector_width: int = 0
    llc_mb: float = 0.
    host_call_us: float = 0.
    fused_gemm_speed: float = 1.
    region_us: float = 0.
    gemm_speed: float = 1.
    attention_speed: float = 1.
    token_stream_gbs: float = 0.

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f'HardwareSpec: name={self.name!r} must be a '
                             f'non-empty string')
        for f in dataclasses.fields(self):
            if f.name == 'name':
                continue
            v = getattr(self, f.name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) \
                and math.isfinite(v)
            zero_ok = f.name in ('launch_us', 'max_tile_batch',
                                  'weight_reorder_gbs',
                                  'weight_reorder_min_mb', 'vector_width',
                                  'llc_mb', 'host_call_us', 'region_us',
                                  'token_stream_gbs')
            if zero_ok:
                ok = ok and v >= 0
            else:
                ok = ok and v > 0
            if not ok:
                raise ValueError(
                    f'HardwareSpec {self.name!r}: {f.name}={v!r} must be a '
                    f'{"non-negative" if zero_ok else "positive"}'
                    f' finite number')
        for key in ('num_pe', 'transaction_bytes', 'default_batch',
                    'max_tile_outputs', 'dtype_bytes', 'max_tile_batch',
                    'vector_width'):
            if int(getattr(self, key)) != getattr(self, key):
                raise ValueError(f'HardwareSpec {self.name!r}: {key}='
                                 f'{getattr(self, key)!r} must be an integer')

    # ----------------------------------------------------------- derived
    @property
    def clock_hz(self) -> float:
        """Clock f in Hz."""
        return self.clock_mhz * 1e6

    @property
    def peak_macs(self) -> float:
        """Peak FP32 multiply-accumulates per second, N_PE * P * f."""
        return self.num_pe * self.fp32_per_pe * self.clock_hz

    @property
    def bandwidth(self) -> float:
        """Off-chip bandwidth in bytes/s."""
        return self.bandwidth_gbs * 1e9

    @property
    def l2_bandwidth(self) -> float:
        """On-chip (L2) bandwidth in bytes/s, ``l2_factor * BW``."""
        return self.l2_factor * self.bandwidth

    def to_dict(self) -> Dict[str, Any]:
        """Plain dict of the fields (for YAML/JSON)."""
        return dataclasses.asdict(self)

    def replace(self, **changes) -> 'HardwareSpec':
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def _spec(name, n_pe, p, mhz, bw, l2, batch, **kw):
    return HardwareSpec(name=name, num_pe=n_pe, fp32_per_pe=p, clock_mhz=mhz,
                        bandwidth_gbs=bw, l2_factor=l2, default_batch=batch,
                        **kw)


#: The known devices. First five: docs/method.md sec. 4 (paper Tab. IV).
#: a100 / h200: data sheets (108 / 132 SMs, 64 / 128 FP32 per SM, boost
#: clock, HBM bandwidth), L2 factor 4 like the V100. cpu: this 2-core
#: machine with AVX2 FMA (2 FMA ports x 8 lanes = 16 FP32 MACs per cycle),
#: ~10 GB/s DRAM and a slow "launch" (PyTorch op dispatch ~ 10 us);
#: re-measure with tools/analysis_tools/calibrate_hardware.py.
KNOWN_HARDWARE: Dict[str, HardwareSpec] = {
    s.name: s for s in [
        _spec('v100', 80, 64, 1500, 700, 4, 128),
        _spec('rtx3090', 82, 128, 1250, 936, 1, 128),
        _spec('rtx3060', 28, 128, 1777, 360, 4, 128),
        _spec('tx2', 2, 128, 1300, 59.7, 4, 1),
        _spec('nano', 1, 128, 921, 25.6, 4, 1),
        _spec('a100', 108, 64, 1410, 1555, 4, 128),
        _spec('h200', 132, 128, 1980, 4800, 4, 128),
        _spec('cpu', 2, 16, 2400, 10, 4, 1, launch_us=10.0,
              max_tile_outputs=4096),
    ]
}

_ALIASES = {'jetson_tx2': 'tx2', 'jetson-tx2': 'tx2', 'jetson_nano': 'nano',
            'jetson-nano': 'nano', 'tesla_v100': 'v100', 'rtx_3090': 'rtx3090',
            'rtx_3060': 'rtx3060', 'tx-2': 'tx2'}


def _from_mapping(d: Mapping, source: str) -> HardwareSpec:
    if not isinstance(d, Mapping):
        raise ValueError(f'hardware spec {source}: expected a mapping of '
                         f'fields, got {type(d).__name__}')
    names = {f.name for f in dataclasses.fields(HardwareSpec)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f'hardware spec {source}: unknown key(s) {unknown}; '
                         f'known keys are {sorted(names)}')
    required = {'name', 'num_pe', 'fp32_per_pe', 'clock_mhz', 'bandwidth_gbs'}
    missing = sorted(required - set(d))
    if missing:
        raise ValueError(f'hardware spec {source}: missing key(s) {missing}')
    return HardwareSpec(**dict(d))


def load_hardware(path: str) -> HardwareSpec:
    """Read a :class:`HardwareSpec` from a ``.yaml``/``.yml``/``.json`` file.

    The file holds the fields of :class:`HardwareSpec` (``name``, ``num_pe``,
    ``fp32_per_pe``, ``clock_mhz``, ``bandwidth_gbs`` required; the rest
    default), optionally under a top-level key ``hardware``.

    Raises:
        ValueError: unreadable file, wrong extension, unknown or missing key,
            bad value (the message names the file, key and value).
    """
    ext = os.path.splitext(path)[1].lower()
    if ext not in ('.yaml', '.yml', '.json'):
        raise ValueError(f'hardware spec file {path!r}: extension {ext!r} '
                         f'is not .yaml, .yml or .json')
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise ValueError(f'hardware spec file {path!r} cannot be read: {e}')
    try:
        if ext == '.json':
            d = json.loads(text)
        else:
            import yaml
            d = yaml.safe_load(text)
    except Exception as e:  # parse errors of either format
        raise ValueError(f'hardware spec file {path!r} does not parse: {e}')
    if isinstance(d, Mapping) and 'hardware' in d and len(d) == 1:
        d = d['hardware']
    return _from_mapping(d, repr(path))


def save_hardware(spec: HardwareSpec, path: str) -> None:
    """Write ``spec`` to a ``.yaml``/``.yml``/``.json`` file.

    Raises:
        ValueError: for another extension.
    """
    ext = os.path.splitext(path)[1].lower()
    d = spec.to_dict()
    if ext == '.json':
        with open(path, 'w') as f:
            json.dump(d, f, indent=2)
    elif ext in ('.yaml', '.yml'):
        import yaml
        with open(path, 'w') as f:
            yaml.safe_dump(d, f, sort_keys=False)
    else:
        raise ValueError(f'hardware spec file {path!r}: extension {ext!r} '
                         f'is not .yaml, .yml or .json')


def get_hardware(hw: Union[str, HardwareSpec, Mapping]) -> HardwareSpec:
    """Resolve a device: a :class:`HardwareSpec`, a known name (case- and
    dash-insensitive, e.g. ``'V100'``, ``'jetson-tx2'``), a path to a
    ``.yaml``/``.json`` spec file, or a dict of spec fields.

    Returns:
        the :class:`HardwareSpec`.

    Raises:
        ValueError: naming the value, listing the known device names, if it
            is neither a known name nor an existing spec file; or naming the
            bad key/value of a file or dict.
    """
    if isinstance(hw, HardwareSpec):
        return hw
    if isinstance(hw, Mapping):
        return _from_mapping(hw, '(dict)')
    if not isinstance(hw, str):
        raise ValueError(f'hardware={hw!r}: expected a device name, a spec '
                         f'file path or a HardwareSpec; known names: '
                         f'{sorted(KNOWN_HARDWARE)}')
    key = hw.strip().lower()
    key = _ALIASES.get(key, key)
    if key in KNOWN_HARDWARE:
        return KNOWN_HARDWARE[key]
    if os.path.splitext(hw)[1].lower() in ('.yaml', '.yml', '.json'):
        if not os.path.isfile(hw):
            raise ValueError(f'hardware={hw!r}: spec file does not exist')
        return load_hardware(hw)
    raise ValueError(f'hardware={hw!r} is unknown; known names: '
                     f'{sorted(KNOWN_HARDWARE)}, or give a .yaml/.json spec '
                     f'file path')
