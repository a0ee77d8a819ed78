"""Activation statistics handed from a LAUD backbone to the evaluation:
the per-image FLOPs and mask densities of the last forward, written into
each data sample so that metrics (``laud_mm.BackboneLatencyMetric``) read
them in any task (mmdet, mmpretrain).

Source: paper sec. 4.5 (average backbone FLOPs and latency over the
validation set), docs/method.md sec. 3.
"""
import torch


def attach_laud_stats(backbone, data_samples) -> None:
    """Write the backbone's last activation statistics into each data
    sample's metainfo under ``laud_stats`` (see :class:`LAUDDetectorMixin`).

    Raises:
        RuntimeError: if the backbone has not run a forward pass.
    """
    stats = backbone.activation_stats()
    flops = stats['flops'].detach().float().cpu().tolist()
    dens = torch.stack([d.detach().float().reshape(-1) for d in
                        stats['block_density']], 1).cpu().tolist()
    stem = backbone.stem_geometry(stats['input_hw'])
    for i, ds in enumerate(data_samples):
        ds.set_metainfo(dict(laud_stats=dict(
            flops=flops[i], dense_flops=stats['dense_flops'],
            block_density=dens[i], geometries=stats['geometries'],
            stem=stem, batch_size=len(data_samples))))
