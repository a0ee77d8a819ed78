"""The part of a mask-and-compute block every family shares: its place in
the backbone, the dynamic-inference switch, cached geometry and FLOPs per
input size, and the per-sample activation statistics of the last forward.

A family's block mixes in :class:`LAUDBlockMixin`, calls
:meth:`~LAUDBlockMixin.init_laud_block` in its ``__init__`` and implements
``make_geometry(key)`` (the block's geometry for an input size) and
``gate_densities(gate, geom)`` (the per-sample densities its FLOPs count
needs).

Source: paper sec. 3.2 (mask-and-compute), docs/method.md sec. 2
(FLOPs-based activation rates).
"""
from collections.abc import Mapping
from typing import Dict, Hashable, Iterator, Optional, Tuple

import torch

from ...structures import flops as flops_lib


class BlockStats(Mapping):
    """A dynamic block's ``last_stats``: the gates of the last forward, and
    the per-sample FLOPs and mask densities they imply.

    Keys: 'flops' (N,) FLOPs computed per sample (float32), 'dense' (float)
    the block's dense FLOPs per sample, 'density' (N,) the mask density
    (kept fraction of pixels / channel groups / tokens / heads, or the layer
    gate), 'gate' the raw gates (float32) and 'geometry' the block geometry.

    'flops' and 'density' are computed from the gates when first read
    (:meth:`LAUDBlockMixin.gate_densities`, then
    :func:`laud_mm.structures.flops.dynamic_flops`) and kept: dynamic
    inference does not pay for them when nothing reads them (a deployed
    model), the evaluation's metrics read them after the forward. Gates that
    require gradients (training: the sparsity loss differentiates the FLOPs)
    are counted at once, inside the forward's autograd graph.

    Source: docs/method.md sec. 2 (FLOPs-based activation rate r_i).
    """
    KEYS = ('flops', 'dense', 'density', 'gate', 'geometry')

    def __init__(self, block: 'LAUDBlockMixin', gate: torch.Tensor, geom,
                 op_flops: Dict[str, int]):
        self._block, self._op_flops = block, op_flops
        # (``float()`` dispatches an operator even on a float32 gate)
        self._values = dict(dense=float(sum(op_flops.values())),
                            gate=gate if gate.dtype == torch.float32
                            else gate.float(), geometry=geom)
        if gate.requires_grad:
            self._count()

    def _count(self) -> None:
        gate, geom = self._values['gate'], self._values['geometry']
        density, conv1, conv2 = self._block.gate_densities(gate, geom)
        dens = flops_lib.op_densities(geom, density, conv1, conv2)
        self._values.update(flops=flops_lib.dynamic_flops(self._op_flops,
                                                          dens),
                            density=density)
        self._block = None  # no reference cycle through the block

    def __getitem__(self, key: str):
        if key not in self._values and key in ('flops', 'density'):
            self._count()
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.KEYS)

    def __len__(self) -> int:
        return len(self.KEYS)


class LAUDBlockMixin:
    """Shared state and statistics of a LAUD block (see module doc).

    Attributes:
        paradigm: 'spatial', 'channel', 'layer' or None (static block).
        granularity: S (spatial) or G (channel); None otherwise.
        masker: the block's masker (None for a static block).
        stage, index: position in the backbone (set by the backbone).
        dynamic_inference: when True and not training, run the family's
            dynamic (skip-the-work) path.
        static_mode: when True, ``forward`` is :meth:`static_forward` (set
            by :meth:`LAUDBackboneMixin.static_blocks`).
        last_stats: after each forward, a mapping (a dict for a static
            block, a :class:`BlockStats` for a dynamic one) with 'flops'
            (N,) FLOPs computed per sample (float32, differentiable in
            training), 'dense' (float) the dense FLOPs per sample,
            'density' (N,) the mask density (kept fraction of pixels /
            channel groups / tokens / heads, or the layer gate), 'gate' the
            raw gates (float32) and 'geometry' the block geometry.
    """

    def init_laud_block(self, paradigm: Optional[str],
                        granularity: Optional[int],
                        masker: Optional[torch.nn.Module]) -> None:
        """Set the shared attributes (call from the block's ``__init__``)."""
        self.paradigm = paradigm
        self.granularity = granularity
        self.masker = masker
        self.stage = 0
        self.index = 0
        self.dynamic_inference = False
        self.last_stats: Optional[Dict] = None
        self._geometry_cache: Dict[Hashable, object] = {}
        self._flops_cache: Dict[Hashable, Dict[str, int]] = {}
        self.static_mode = False

    def static_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The dense block without its masker, BN folded, statistics left
        untouched (family method; eval mode): the static network of the
        same weights, what dynamic inference is timed against
        (:meth:`LAUDBackboneMixin.static_forward`)."""
        raise NotImplementedError

    def make_geometry(self, key):
        """The block's geometry for input size ``key`` (family method)."""
        raise NotImplementedError

    def gate_densities(self, gate: torch.Tensor, geom
                       ) -> Tuple[torch.Tensor, Optional[torch.Tensor],
                                  Optional[torch.Tensor]]:
        """(density, conv1_density, conv2_density), each (N,) or None, of
        float32 gates (family method; see
        :func:`laud_mm.structures.flops.op_densities`)."""
        raise NotImplementedError

    @staticmethod
    def _key(key) -> Hashable:
        return tuple(int(v) for v in key) if isinstance(key, (tuple, list)) \
            else int(key)

    def geometry(self, key):
        """The block's geometry for an input size (cached): ``(H, W)`` of a
        convolutional block's input, the token count of a transformer
        layer."""
        key = self._key(key)
        g = self._geometry_cache.get(key)
        if g is None:
            g = self.make_geometry(key)
            self._geometry_cache[key] = g
        return g

    def op_flops(self, key) -> Dict[str, int]:
        """Dense per-sample FLOPs per operator for an input size (cached),
        :func:`laud_mm.structures.flops.block_op_flops`."""
        key = self._key(key)
        f = self._flops_cache.get(key)
        if f is None:
            f = flops_lib.block_op_flops(self.geometry(key))
            self._flops_cache[key] = f
        return f

    def record_static_stats(self, n: int, device: torch.device, geom,
                            op_flops: Dict[str, int]) -> None:
        """``last_stats`` of a static block (every operator dense)."""
        dense = float(sum(op_flops.values()))
        self.last_stats = dict(  # float32: FLOPs overflow float16
            flops=torch.full((n,), dense, device=device), dense=dense,
            density=torch.ones(n, device=device), gate=None, geometry=geom)

    def record_stats(self, gate: torch.Tensor, geom,
                     op_flops: Dict[str, int]) -> None:
        """``last_stats`` of a dynamic block from its gates
        (:class:`BlockStats`, FLOPs counted when read), in float32 whatever
        the activation dtype (FLOPs ~1e9 overflow float16, and a bfloat16
        count stops being exact at 256).

        Args:
            gate: the forward's gates, (N, ...) as the masker returns them.
            geom: the block geometry of the forward's input size.
            op_flops: dense per-sample FLOPs per operator
                (:meth:`op_flops`)."""
        # (a plain attribute: object.__setattr__ skips nn.Module's checks
        # for parameters, buffers and submodules, host time per block)
        object.__setattr__(self, 'last_stats',
                           BlockStats(self, gate, geom, op_flops))
