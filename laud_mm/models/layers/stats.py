"""Activation statistics handed from a LAUD backbone to the evaluation:
the per-image FLOPs and mask densities of the last forward **at each
image's own input size**, written into each data sample so that metrics
(``laud_mm.BackboneLatencyMetric``) read them in any task (mmdet, mmseg,
mmpretrain).

A batch of images of different sizes is padded to one tensor; the padding
belongs to the batch, not to the image. Each image's figures are therefore
computed on the part of every block's maps that its own pixels (the data
sample's ``img_shape``, before padding) produce: the geometry at that size,
the spatial gates cropped to its patch grid, the channel and layer gates as
they are. So they do not depend on the test batch size or on the size of
the other images of the batch (up to the padding's influence on the gates
themselves: the maskers see the padded input).

Source: paper sec. 4.5 (average backbone FLOPs and latency over the
validation set), docs/method.md sec. 2-3.
"""
from typing import Dict, List, Sequence, Tuple

import torch

from ...structures import flops as flops_lib


def image_hw(data_sample, batch_hw: Tuple[int, int]) -> Tuple[int, int]:
    """The image's own (H, W) inside the padded batch: its ``img_shape``
    metainfo (mmdet / mmseg / mmpretrain set it after resizing, before
    padding), clipped to the batch input; the batch input size when absent.
    """
    meta = data_sample.metainfo if hasattr(data_sample, 'metainfo') else \
        data_sample
    shape = meta.get('img_shape') if isinstance(meta, dict) else None
    if shape is None or len(shape) < 2:
        return tuple(batch_hw)
    return (min(int(shape[0]), batch_hw[0]), min(int(shape[1]), batch_hw[1]))


def _crop_gate(gate: torch.Tensor, geom) -> torch.Tensor:
    """A sample's gate restricted to its own pixels: spatial gates cropped
    to the patch grid of the image-size geometry; others unchanged."""
    if getattr(geom, 'paradigm', None) == 'spatial' and gate.dim() == 3:
        gh, gw = geom.patch_grid
        return gate[:, :gh, :gw]
    return gate


def image_stats(backbone, index: int, hw: Tuple[int, int]) -> Dict:
    """FLOPs and per-block densities of sample ``index`` of the last forward,
    on its own ``hw`` input pixels.

    Args:
        backbone: a LAUD backbone after a forward pass.
        index: the sample in the batch.
        hw: its (H, W) before padding.

    Returns:
        dict with 'flops' and 'dense_flops' (FLOPs per image, float),
        'block_density' (list of floats, 1.0 for static blocks),
        'geometries' (block geometries at ``hw``) and 'stem' (stem geometry
        at ``hw``).
    """
    stem = backbone.stem_geometry(hw)
    geoms = backbone.block_geometries(hw)
    total = dense = float(flops_lib.stem_flops(stem))
    densities: List[float] = []
    for block, g in zip(backbone.blocks, geoms):
        ops = flops_lib.block_op_flops(g)
        block_dense = float(sum(ops.values()))
        gate = block.last_stats['gate']
        if gate is None:  # static block
            densities.append(1.)
            total += block_dense
            dense += block_dense
            continue
        gate = _crop_gate(gate[index:index + 1].float(), g)
        d, c1, c2 = block.gate_densities(gate, g)
        dyn = flops_lib.dynamic_flops(ops, flops_lib.op_densities(g, d, c1,
                                                                  c2))
        densities.append(float(d.reshape(-1)[0]))
        total += float(torch.as_tensor(dyn).reshape(-1)[0])
        dense += block_dense
    return dict(flops=total, dense_flops=dense, block_density=densities,
                geometries=geoms, stem=stem)


def attach_laud_stats(backbone, data_samples: Sequence) -> None:
    """Write the backbone's last activation statistics into each data
    sample's metainfo under ``laud_stats``: per image, at its own input size
    (see the module docstring): 'flops', 'dense_flops', 'block_density',
    'geometries', 'stem', 'input_hw' (the image's (H, W)) and
    'batch_input_hw' (the padded batch's).

    Raises:
        RuntimeError: if the backbone has not run a forward pass.
    """
    stats = backbone.activation_stats()
    batch_hw = tuple(stats['input_hw'])
    flops = stats['flops'].detach().float().cpu().tolist()
    dens = torch.stack([d.detach().float().reshape(-1) for d in
                        stats['block_density']], 1).cpu().tolist()
    for i, ds in enumerate(data_samples):
        hw = image_hw(ds, batch_hw)
        if hw == batch_hw:  # no padding: the batch's own figures
            rec = dict(flops=flops[i], dense_flops=stats['dense_flops'],
                       block_density=dens[i], geometries=stats['geometries'],
                       stem=backbone.stem_geometry(batch_hw))
        else:
            rec = image_stats(backbone, i, hw)
        rec.update(input_hw=hw, batch_input_hw=batch_hw)
        ds.set_metainfo(dict(laud_stats=rec))
