"""The backbone API shared by every LAUD backbone (ResNet, RegNetY,
T2T-ViT): gate switches, Gumbel temperature, geometry and activation
statistics.

A backbone using :class:`LAUDBackboneMixin` provides ``self.blocks`` (its
mask-and-compute blocks in forward order, each with ``masker``,
``dynamic_inference``, ``last_stats`` and ``geometry(in_hw)``),
``stem_geometry(in_hw)`` and sets ``self._input_hw`` in ``forward``.

Source: paper sec. 3.2 (mask-and-compute blocks), docs/method.md sec. 2
(FLOPs-based activation rates incl. the static stem).
"""
import contextlib
from typing import Dict, Iterator, List, Tuple

import torch

from ...structures import flops as flops_lib
from ...structures.geometry import BlockGeometry


class LAUDBackboneMixin:
    """Gate switches and statistics over ``self.blocks`` (see module doc)."""

    @property
    def dynamic_inference(self) -> bool:
        """Whether eval-mode forward runs the dynamic (skip-the-work) path."""
        return self._dynamic_inference

    @dynamic_inference.setter
    def dynamic_inference(self, value: bool) -> None:
        self._dynamic_inference = bool(value)
        for b in self.blocks:
            b.dynamic_inference = bool(value)

    def maskers(self) -> List[torch.nn.Module]:
        """The maskers of all dynamic blocks, in forward order."""
        return [b.masker for b in self.blocks if b.masker is not None]

    def set_tau(self, tau: float) -> None:
        """Set the Gumbel temperature of every masker.

        Raises:
            ValueError: if ``tau <= 0``.
        """
        if not tau > 0:
            raise ValueError(f'Gumbel temperature tau must be > 0, got {tau}')
        for m in self.maskers():
            m.tau = float(tau)

    def force_gates(self, value) -> None:
        """Impose every gate: None (learned gates), 1.0 (all on), 0.0 (all
        off); a tensor is applied to every masker and must fit each."""
        for m in self.maskers():
            m.forced_gate = value

    @contextlib.contextmanager
    def static_blocks(self) -> Iterator[None]:
        """Within the context every block runs its static forward (dense, no
        masker, BN folded) and leaves its statistics of the last dynamic or
        masked-dense forward untouched."""
        for b in self.blocks:
            b.static_mode = True
        try:
            yield
        finally:
            for b in self.blocks:
                b.static_mode = False

    def static_forward(self, x: torch.Tensor):
        """The static network of the same weights on ``x`` (eval mode, no
        autograd): the backbone's own forward with every block dense and its
        masker ignored, BN folded into the convolutions as dynamic inference
        does: the reference dynamic inference is timed against.

        Args:
            x: (N, C, H, W) images.

        Returns:
            what ``forward`` returns.

        Raises:
            ValueError: in training mode (BN cannot be folded).
        """
        if self.training:
            raise ValueError('static_forward needs the backbone in eval mode '
                             '(BN is folded)')
        input_hw = getattr(self, '_input_hw', None)
        with torch.no_grad(), self.static_blocks():
            out = self.forward(x)
        self._input_hw = input_hw  # the statistics stay the last forward's
        return out

    def block_geometries(self, in_hw: Tuple[int, int]) -> List[BlockGeometry]:
        """Geometry of every block for an image size (H, W), forward order.

        Raises:
            ValueError: if the image is too small for the stem.
        """
        hw = self.stem_geometry(in_hw).out_hw
        out = []
        for b in self.blocks:
            g = b.geometry(hw)
            out.append(g)
            hw = g.out_hw
        return out

    def activation_stats(self) -> Dict[str, object]:
        """Statistics of the last forward pass.

        Returns:
            dict with
            'block_flops': list of (N,) FLOPs per block and sample;
            'block_dense_flops': list of floats, dense FLOPs per block;
            'block_density': list of (N,) mask densities per block;
            'stem_flops': float; 'flops': (N,) backbone FLOPs per sample;
            'dense_flops': float; 'activation_rate': (N,) flops / dense;
            'geometries': list of :class:`BlockGeometry`;
            'input_hw': (H, W) of the batch.

        Raises:
            RuntimeError: if called before any forward.
        """
        if getattr(self, '_input_hw', None) is None or \
                any(b.last_stats is None for b in self.blocks):
            raise RuntimeError('activation_stats() needs a forward pass first')
        stem = float(flops_lib.stem_flops(self.stem_geometry(self._input_hw)))
        block_flops = [b.last_stats['flops'] for b in self.blocks]
        dense = [b.last_stats['dense'] for b in self.blocks]
        total = stem + sum(block_flops)
        dense_total = stem + sum(dense)
        return dict(
            block_flops=block_flops, block_dense_flops=dense,
            block_density=[b.last_stats['density'] for b in self.blocks],
            stem_flops=stem, flops=total, dense_flops=dense_total,
            activation_rate=total / dense_total,
            geometries=[b.last_stats['geometry'] for b in self.blocks],
            input_hw=self._input_hw)
