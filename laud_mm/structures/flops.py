"""FLOPs of LAUD blocks, dense and dynamic: the single count shared by the
sparsity loss, the activation statistics and the latency tools.

Convention: FLOPs are multiply-accumulates of convolutions and linear layers
(the paper's convention: ResNet-50 = 4.1 GFLOPs at 224 px); pooling counts one
operation per input element; BN, ReLU and additions are not counted.

Each model family registers its counts by geometry ``kind``
(:func:`register_block_flops`, :func:`register_stem_flops`; e.g.
``laud_mm.models.resnet.flops``), so this module dispatches without knowing
the families. The CNN maskers (spatial / channel / layer, shared by every
convolutional family) are counted here (:func:`conv_masker_flops`).

Source: docs/method.md sec. 2 (FLOPs-based activation rates including the
masker and the dense downsample; conv1 with the dilated mask; conv2 with the
squared channel density), paper sec. 3.5.
"""
from typing import Callable, Dict, Mapping, NamedTuple, Union

import torch

from .geometry import BlockGeometry

Density = Union[float, torch.Tensor]


class BlockFlops(NamedTuple):
    """A family's FLOPs count of one block kind.

    Attributes:
        op_flops: ``geometry -> {operator: dense FLOPs per sample}``
            (must include ``'masker'``, 0 for a static block).
        op_densities: ``(geometry, mask_density, conv1_density,
            conv2_density) -> {operator: density}``: the fraction of each
            operator's FLOPs a dynamic block computes (operators not listed
            run densely). The extra densities are the family's (None when
            unused).
    """
    op_flops: Callable
    op_densities: Callable


_BLOCK_FLOPS: Dict[str, BlockFlops] = {}
_STEM_FLOPS: Dict[str, Callable] = {}


def register_block_flops(kind: str, op_flops: Callable,
                         op_densities: Callable) -> None:
    """Register the FLOPs count of a block kind (``geometry.kind``).

    Raises:
        ValueError: if ``kind`` is registered already with other functions.
    """
    new = BlockFlops(op_flops, op_densities)
    old = _BLOCK_FLOPS.get(kind)
    if old is not None and old != new:
        raise ValueError(f'block FLOPs of kind={kind!r} are registered '
                         f'already ({old.op_flops.__module__})')
    _BLOCK_FLOPS[kind] = new


def register_stem_flops(kind: str, fn: Callable) -> None:
    """Register ``fn(stem) -> FLOPs per sample`` for stems of ``kind``
    (the stem geometry's ``kind`` class attribute).

    Raises:
        ValueError: if ``kind`` is registered already with another function.
    """
    old = _STEM_FLOPS.get(kind)
    if old is not None and old is not fn:
        raise ValueError(f'stem FLOPs of kind={kind!r} are registered '
                         f'already ({old.__module__})')
    _STEM_FLOPS[kind] = fn


def _lookup(table: dict, kind: str, what: str):
    try:
        return table[kind]
    except KeyError:
        raise ValueError(f'no {what} FLOPs count for kind={kind!r} '
                         f'(registered: {sorted(table)})') from None


def block_op_flops(g) -> Dict[str, int]:
    """Dense per-sample FLOPs of every operator of a block.

    Args:
        g: the block geometry (:class:`BlockGeometry` or
            :class:`~laud_mm.structures.geometry.TokenLayerGeometry`).

    Returns:
        operator -> FLOPs (multiply-accumulates per sample), ``'masker'``
        included (0 for a static block).

    Raises:
        ValueError: for an unregistered ``g.kind`` or an unknown paradigm.
    """
    return _lookup(_BLOCK_FLOPS, g.kind, 'block').op_flops(g)


def op_densities(g, mask_density: Density, conv1_density: Density = None,
                 conv2_density: Density = None) -> Dict[str, Density]:
    """Fraction of each operator's dense FLOPs that a dynamic block
    computes, for ``g.paradigm``.

    Args:
        g: the block geometry.
        mask_density: spatial: fraction of output pixels (tokens) kept, (N,)
            or scalar; channel: fraction of channel groups (heads) kept;
            layer: the gate.
        conv1_density: spatial CNN blocks: fraction of conv1 output pixels
            read by the kept outputs (the dilated mask); defaults to
            ``mask_density``.
        conv2_density: RegNetY channel blocks: fraction of conv2's conv
            groups holding a kept channel; defaults to its expectation.

    Returns:
        operator -> density (same type and shape as the inputs); operators
        not listed (masker, downsample) run densely.

    Raises:
        ValueError: for an unregistered kind or an unknown paradigm.
    """
    return _lookup(_BLOCK_FLOPS, g.kind, 'block').op_densities(
        g, mask_density, conv1_density, conv2_density)


def dynamic_flops(op_flops: Mapping[str, int],
                  densities: Mapping[str, Density]) -> Density:
    """FLOPs actually computed: sum_k op_flops[k] * densities.get(k, 1).

    Args:
        op_flops: dense FLOPs per operator (:func:`block_op_flops`).
        densities: per-operator density, scalar or (N,) tensor.

    Returns:
        Per-sample FLOPs, a float or an (N,) tensor (differentiable through
        the densities).
    """
    total = 0.
    for name, f in op_flops.items():
        total = total + f * densities.get(name, 1.)
    return total


def stem_flops(stem) -> int:
    """Per-sample FLOPs of a backbone's (always dense) stem, dispatched on
    ``stem.kind``.

    Raises:
        ValueError: for an unregistered stem kind.
    """
    return _lookup(_STEM_FLOPS, stem.kind, 'stem')(stem)


def conv_masker_flops(g: BlockGeometry) -> int:
    """Per-sample FLOPs of the masker of a convolutional block (the
    spatial, channel and layer maskers of ``laud_mm.models.layers.maskers``
    read the block input x (C_in, H_in, W_in)).

    Returns:
        spatial: pool + 1x1 conv to 2 logits per patch cell; channel: pool
        + Linear(C_in, h) + Linear(h, 2 n_groups); layer: pool +
        Linear(C_in, 2); 0 for a static block.

    Raises:
        ValueError: for an unknown paradigm.
    """
    if g.paradigm is None:
        return 0
    hi, wi = g.in_hw
    pool = g.in_channels * hi * wi
    if g.paradigm == 'spatial':
        gh, gw = g.patch_grid
        return pool + g.in_channels * 2 * gh * gw
    if g.paradigm == 'channel':
        h = g.channel_masker_hidden
        return pool + g.in_channels * h + h * 2 * g.num_groups
    if g.paradigm == 'layer':
        return pool + g.in_channels * 2
    raise ValueError(f'unknown paradigm {g.paradigm!r}')
