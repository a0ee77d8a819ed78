"""Predicted latency of a LAUD backbone on a device (paper appendix A,
docs/method.md sec. 4), from a config or an architecture shortcut.

Activation rates: measured on images of the config's test set with a
checkpoint (:func:`measure_densities`), otherwise the uniform mask density
whose FLOPs rate equals the target rate (:func:`uniform_density_for_rate`).
:func:`predict_latency` prints the per-stage table (dense and dynamic GFLOPs
per image, activation rate, predicted ms, static ms, speedup) and the whole
backbone; for a T2T-ViT also the per-layer table and the milliseconds per
operator category; on request the per-kernel table, plots of latency against
activation rate per paradigm and granularity (paper Figs. 6-7) and the
granularity search (paper sec. 4.2). Command line:
``tools/analysis_tools/predict_latency.py``.

Source: paper appendix A, docs/method.md sec. 4.
"""
import math
import os
import os.path as osp
from typing import List, Optional, Sequence, Tuple

from .configs import CfgOptions, build_model, load_config

#: ResNet shortcuts of :func:`predict_latency` (name -> depth)
SHORTCUTS = {'resnet50': 50, 'resnet101': 101, 'resnet152': 152}
#: backbone types a config must hold
LAUD_BACKBONES = ('LAUDResNet', 'LAUDRegNetY', 'LAUDT2TViT')


def uniform_density_for_rate(geometries, rate: float, stem=None) -> float:
    """The uniform mask density d whose backbone FLOPs rate equals ``rate``.

    Uses :mod:`laud_mm.structures.flops` (the same count as the sparsity loss);
    bisection on d in [0, 1]. Returns 1.0 for a static backbone.

    Raises:
        ValueError: if ``rate`` is outside (0, 1], or below the rate of
            every gate off (head skipping keeps the MLP: T2T-ViT-t-14's
            floor is 0.66), naming the target and the floor.
    """
    from laud_mm.structures.flops import (block_op_flops, dynamic_flops,
                                          op_densities, stem_flops)
    if not 0 < rate <= 1:
        raise ValueError(f'target rate={rate!r} must be in (0, 1]')
    if all(g.paradigm is None for g in geometries):
        return 1.0
    base = float(stem_flops(stem)) if stem is not None else 0.
    ops = [block_op_flops(g) for g in geometries]
    dense = base + sum(sum(o.values()) - o['masker'] for o in ops)

    def total(d):
        t = base
        for g, o in zip(geometries, ops):
            if g.paradigm is None:
                t += sum(o.values())
            else:
                t += float(dynamic_flops(o, op_densities(g, d)))
        return t / dense
    lo, hi = 0., 1.
    floor = total(0.)
    if floor > rate:
        # the floor rounded up: the suggested target is one that passes
        least = math.ceil(floor * 1000) / 1000
        raise ValueError(
            f'target rate={rate!r} is below the lowest FLOPs rate this '
            f'backbone reaches, {floor:.4f} with every gate off (its dense '
            f'parts: the stem, the maskers, the parts the paradigm does '
            f'not skip); use a target of at least {least:.3f}')
    if total(1.) <= rate:
        return 1.
    for _ in range(50):
        mid = (lo + hi) / 2
        if total(mid) < rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def block_flops_table(geometries, densities) -> List[Tuple[float, float]]:
    """Per-block (dense, dynamic) FLOPs per image at the blocks' mask
    densities (dense without the masker; a static block computes all)."""
    from laud_mm.structures.flops import (block_op_flops, dynamic_flops,
                                          op_densities)
    out = []
    for g, d in zip(geometries, densities):
        o = block_op_flops(g)
        dense = sum(v for k, v in o.items() if k != 'masker')
        dyn = sum(o.values()) if g.paradigm is None else \
            float(dynamic_flops(o, op_densities(g, d)))
        out.append((dense, dyn))
    return out


def find_backbone_cfg(cfg) -> dict:
    """The LAUD backbone config dict (:data:`LAUD_BACKBONES`) inside a
    detector / classifier config.

    Raises:
        ValueError: if the config has no LAUD backbone (names the type).
    """
    model = cfg.get('model', {})
    for cand in (model.get('backbone'), model):
        if cand is not None and any(b in str(cand.get('type', ''))
                                    for b in LAUD_BACKBONES):
            return cand
    bb = (model.get('backbone') or {}).get('type')
    raise ValueError(f'config {cfg.filename!r}: model.backbone.type={bb!r} '
                     f'is not one of laud_mm.{LAUD_BACKBONES}')


def config_target(cfg) -> Optional[float]:
    """The config's target activation rate: top-level ``target_rate``, else
    ``model.sparsity_loss.target_rate``, else None."""
    t = cfg.get('target_rate', None)
    if t is None:
        sl = cfg.get('model', {}).get('sparsity_loss', None)
        if sl is not None:
            t = sl.get('target_rate', None)
    return t


def measure_densities(cfg, checkpoint: str, num_images: int
                      ) -> Tuple[List[float], Tuple[int, int]]:
    """Mean per-block mask densities of a trained model on real images.

    Builds ``cfg.model`` (a detector or a classifier with a LAUD backbone)
    as the Runner does (:func:`~laud_mm.analysis.configs.build_model`, the
    top-level data preprocessor merged), loads ``checkpoint`` (an mmengine
    Runner checkpoint or a bare state dict, strictly), runs the backbone in
    eval mode on the first ``num_images`` images of
    ``cfg.test_dataloader.dataset`` through the model's data preprocessor,
    one image at a time, and averages each block's mask density
    (``activation_stats()['block_density']``).

    Returns:
        (densities, (H, W)): list of per-block mean densities in [0, 1]
        and the most common backbone input size.

    Raises:
        ValueError: ``num_images`` < 1, or a model without a LAUD backbone.
    """
    import collections

    import torch
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DATASETS
    if num_images < 1:
        raise ValueError(f'--num-images={num_images} must be >= 1')
    model = build_model(cfg, checkpoint, strict=True)
    backbone = getattr(model, 'backbone', model)
    if not hasattr(backbone, 'activation_stats'):
        raise ValueError(f'model.backbone.type={type(backbone).__name__!r} '
                         f'is not a LAUD backbone (no activation_stats)')
    ds = DATASETS.build(cfg.test_dataloader.dataset)
    sums, n, sizes = None, 0, collections.Counter()
    with torch.no_grad():
        for i in range(min(num_images, len(ds))):
            data = model.data_preprocessor(pseudo_collate([ds[i]]), False)
            x = data['inputs']
            sizes[tuple(x.shape[-2:])] += 1
            backbone(x)
            dens = [float(torch.as_tensor(d, dtype=torch.float).mean())
                    for d in backbone.activation_stats()['block_density']]
            sums = dens if sums is None else [a + b for a, b in
                                              zip(sums, dens)]
            n += 1
    return [s / n for s in sums], sizes.most_common(1)[0][0]


def stage_table(geoms, dens, rep, static, stem=None) -> str:
    """Per-stage table: dense and dynamic GFLOPs per image, rate, predicted
    and static ms per batch, speedup; then the stem (static: its FLOPs in
    both columns) and the total, whose rate is the backbone's FLOPs rate
    with the stem counted, as the sparsity loss and
    :func:`uniform_density_for_rate` count it (docs/method.md sec. 2).

    Args:
        geoms, dens: block geometries and their mask densities.
        rep, static: :class:`~laud_mm.latency.BackboneLatency` of the
            dynamic and the static backbone.
        stem: the stem geometry (None: no stem FLOPs, e.g. blocks only).
    """
    from laud_mm.structures.flops import stem_flops
    fl = block_flops_table(geoms, dens)
    n_st = len(rep.per_stage_ms)
    lines = [f'{"stage":<7}{"dense GFLOPs":>13}{"dyn GFLOPs":>12}'
             f'{"rate":>7}{"pred ms":>11}{"static ms":>11}{"speedup":>9}']
    stem_fl = float(stem_flops(stem)) if stem is not None else 0.
    tot_d = tot_y = stem_fl
    for s in range(n_st):
        d = sum(f[0] for g, f in zip(geoms, fl) if g.stage == s)
        y = sum(f[1] for g, f in zip(geoms, fl) if g.stage == s)
        tot_d += d
        tot_y += y
        lines.append(f'{s:<7}{d / 1e9:>13.3f}{y / 1e9:>12.3f}{y / d:>7.3f}'
                     f'{rep.per_stage_ms[s]:>11.3f}'
                     f'{static.per_stage_ms[s]:>11.3f}'
                     f'{static.per_stage_ms[s] / rep.per_stage_ms[s]:>9.3f}')
    stem_cols = f'{stem_fl / 1e9:>13.3f}{stem_fl / 1e9:>12.3f}{1.:>7.3f}' \
        if stem is not None else f'{"":>13}{"":>12}{"":>7}'
    lines.append(f'{"stem":<7}{stem_cols}{rep.stem_ms:>11.3f}'
                 f'{static.stem_ms:>11.3f}')
    lines.append(f'{"total":<7}{tot_d / 1e9:>13.3f}{tot_y / 1e9:>12.3f}'
                 f'{tot_y / tot_d:>7.3f}{rep.total_ms:>11.3f}'
                 f'{static.total_ms:>11.3f}'
                 f'{static.total_ms / rep.total_ms:>9.3f}')
    return '\n'.join(lines)


def vit_tables(rep, static, ops: bool = False) -> str:
    """T2T-ViT: the per-layer table (per kernel with ``ops``) and the
    milliseconds per operator category, dynamic and static
    (:func:`laud_mm.latency.blocks.t2t_vit.vit_op_breakdown`)."""
    from laud_mm.latency.blocks.t2t_vit import vit_op_breakdown
    dyn, st = vit_op_breakdown(rep), vit_op_breakdown(static)
    lines = [rep.table(ops=ops), '',
             f'{"operators (all layers)":<32}{"pred ms":>11}{"static ms":>11}']
    for k in dyn:
        lines.append(f'{k:<32}{dyn[k]:>11.3f}{st[k]:>11.3f}')
    return '\n'.join(lines)


def sweep_plot(pred, geoms, stem, batch: int, out_dir: str, title: str
               ) -> str:
    """Latency / static per stage vs mask density for every paradigm and
    granularity (paper Figs. 6-7), written as
    ``<out_dir>/sweep_<device>_b<batch>.png``. Returns the PNG path."""
    import dataclasses

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rates = [i / 10 for i in range(1, 11)]
    configs = [('spatial', S) for S in (1, 2, 4, 7, 8)] + \
        [('channel', G) for G in (1, 2, 4)] + [('layer', None)]
    colors = {c: plt.cm.tab10(i % 10) for i, c in enumerate(configs)}
    n_st = max(g.stage for g in geoms) + 1
    fig, axes = plt.subplots(1, n_st, figsize=(4 * n_st, 3.6), sharey=True)
    for s in range(n_st):
        blocks = [g for g in geoms if g.stage == s]
        st = pred.predict_static(blocks, batch).total_ms
        ax = axes[s]
        for par, gran in configs:
            if par == 'spatial' and gran > max(blocks[-1].out_hw):
                continue
            gs = [dataclasses.replace(b, paradigm=par, granularity=gran)
                  for b in blocks]
            ys = [pred.predict_backbone(gs, [r] * len(gs), batch).total_ms
                  / st for r in rates]
            ax.plot(rates, ys, marker='.', color=colors[(par, gran)],
                    ls='-' if par == 'spatial' else
                    '--' if par == 'channel' else ':',
                    label=f'{par}' + (f' {"S" if par == "spatial" else "G"}'
                                      f'={gran}' if gran else ''))
        ax.axhline(1.0, color='k', lw=0.8)
        ax.set_title(f'stage {s + 1} (static {st:.2f} ms)')
        ax.set_xlabel('activation rate (mask density)')
        if s == 0:
            ax.set_ylabel('latency / static')
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(out_dir, exist_ok=True)
    path = osp.join(out_dir, f'sweep_{pred.hw.name}_b{batch}.png')
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def predict_latency(config: str, checkpoint: Optional[str] = None,
                    hardware: str = 'v100', batch_size: Optional[int] = None,
                    input_size: Optional[Sequence[int]] = None,
                    target: Optional[float] = None,
                    paradigm: Optional[str] = None,
                    granularity: Optional[Sequence[int]] = None,
                    num_images: int = 8, ops: bool = False,
                    sweep: bool = False, search: bool = False,
                    out_dir: str = 'work_dirs/latency',
                    cfg_options: CfgOptions = None):
    """Predict and print the latency of a LAUD backbone.

    Args:
        config: an mmdet / mmpretrain config holding a
            :data:`LAUD_BACKBONES` backbone, a ResNet shortcut
            (:data:`SHORTCUTS`, with ``paradigm`` and ``granularity``) or a
            T2T-ViT arch (``t2t-vit-t-14`` / ``-19`` / ``-24``, with
            ``paradigm``).
        checkpoint: measure the activation rates on ``num_images`` images of
            the config's test set (configs only).
        hardware: device name or .yaml / .json spec.
        batch_size: batch (default: the device's default batch).
        input_size: (H, W) (default 224 x 224, or the measured images).
        target: target activation (FLOPs) rate, overrides the config's
            (shortcut defaults: 0.5 ResNet, 0.7 T2T-ViT; configs without
            one: 1.0).
        paradigm, granularity: of the shortcuts.
        num_images: images used to measure activation rates.
        ops: add the per-kernel table.
        sweep: write PNG plots of latency against activation rate per
            paradigm and granularity into ``out_dir``.
        search: rank granularities per stage by predicted latency.
        out_dir: where ``sweep`` writes.
        cfg_options: config overrides (see
            :func:`~laud_mm.analysis.configs.load_config`).

    Returns:
        the :class:`~laud_mm.latency.BackboneLatency` of the dynamic
        backbone.

    Raises:
        ValueError: a config without a LAUD backbone, a target rate outside
            (0, 1], ``num_images`` < 1, ``sweep`` / ``search`` for a
            T2T-ViT, a paradigm / granularity the model cannot be built with
            (e.g. a G not dividing a stage width), or ``paradigm`` /
            ``granularity`` where they are not used (configs; granularity
            of a T2T-ViT), ``checkpoint`` / ``cfg_options`` with a shortcut,
            ``target`` with ``checkpoint``, ``batch_size`` < 1.
    """
    from laud_mm.latency import LatencyPredictor
    from laud_mm.models import resnet_geometries, t2t_vit_geometries
    from laud_mm.models.t2t_vit import T2T_VIT_ARCHS
    if config not in SHORTCUTS and granularity is not None:
        raise ValueError(
            f'--granularity {" ".join(map(str, granularity))}: only the '
            f'ResNet shortcuts {sorted(SHORTCUTS)} take it (a config sets '
            f'model.backbone.granularity; a T2T-ViT has none)')
    if config not in SHORTCUTS and config not in T2T_VIT_ARCHS and \
            paradigm is not None:
        raise ValueError(f'--paradigm {paradigm}: only the shortcuts '
                         f'{sorted(SHORTCUTS) + sorted(T2T_VIT_ARCHS)} take '
                         f'it (a config sets model.backbone.paradigm)')
    shortcut = config in SHORTCUTS or config in T2T_VIT_ARCHS
    if shortcut and (checkpoint is not None or cfg_options):
        given = f'--checkpoint={checkpoint!r}' if checkpoint is not None \
            else f'--cfg-options {cfg_options!r}'
        raise ValueError(f'{given}: only configs take it, not the shortcut '
                         f'{config!r}')
    if checkpoint is not None and target is not None:
        raise ValueError(f'--target={target!r} cannot be used with '
                         f'--checkpoint: the rates are measured on the '
                         f'checkpoint')
    if batch_size is not None and (isinstance(batch_size, bool) or
                                   not isinstance(batch_size, int) or
                                   batch_size < 1):
        raise ValueError(f'--batch-size={batch_size!r} must be a positive '
                         f'integer')
    pred = LatencyPredictor(hardware)
    batch = batch_size if batch_size is not None else pred.hw.default_batch
    in_hw = tuple(input_size) if input_size else (224, 224)
    if config in SHORTCUTS:
        geoms, stem = resnet_geometries(SHORTCUTS[config], in_hw, paradigm,
                                        granularity)
        target = target if target is not None else 0.5
        name = config
        dens = [uniform_density_for_rate(geoms, target, stem)] * len(geoms)
    elif config in T2T_VIT_ARCHS:
        geoms, stem = t2t_vit_geometries(config, in_hw, paradigm)
        target = target if target is not None else 0.7
        name = config
        dens = [uniform_density_for_rate(geoms, target, stem)] * len(geoms)
    else:
        from laud_mm.registry import MODELS
        cfg = load_config(config, cfg_options)
        name = osp.basename(config)
        if checkpoint:
            dens, measured_hw = measure_densities(cfg, checkpoint,
                                                  num_images)
            if input_size is None:
                in_hw = measured_hw
            target = None
        bb_cfg = dict(find_backbone_cfg(cfg))
        bb_cfg.pop('init_cfg', None)
        backbone = MODELS.build(bb_cfg)
        geoms = backbone.block_geometries(in_hw)
        stem = backbone.stem_geometry(in_hw)
        if not checkpoint:
            if target is None:
                target = config_target(cfg)
            if target is None:
                target = 1.0
            dens = [uniform_density_for_rate(geoms, target, stem)] * \
                len(geoms)
    rep = pred.predict_backbone(geoms, dens, batch, stem)
    static = pred.predict_static(geoms, batch, stem)
    src = 'measured on %d images' % num_images if checkpoint \
        else f'uniform density {dens[0]:.3f} for target rate {target}'
    print(f'{name} on {pred.hw.name}, batch {batch}, input {in_hw[0]}x'
          f'{in_hw[1]}, paradigm {geoms[0].paradigm}, activation: {src}')
    print(stage_table(geoms, dens, rep, static, stem))
    print(f'backbone: {rep.total_ms:.3f} ms per batch, {rep.per_image_ms:.4f}'
          f' ms per image (static {static.per_image_ms:.4f} ms per image, '
          f'speedup {static.total_ms / rep.total_ms:.3f})')
    vit = getattr(geoms[0], 'kind', None) == 'vit'
    if vit:
        print(vit_tables(rep, static, ops))
    elif ops:
        print(rep.table(ops=True))
    if vit and (sweep or search):
        raise ValueError('--sweep / --search choose CNN granularities; a '
                         'T2T-ViT has none (tokens, heads and layers are '
                         'single gates)')
    if sweep:
        path = sweep_plot(pred, geoms, stem, batch, out_dir,
                          f'{name}: {pred.hw.name}, batch {batch}')
        print(f'sweep plot: {path}')
    if search:
        from laud_mm.latency.search import format_search, search_granularity
        t = target if target is not None else sum(dens) / len(dens)
        res = search_granularity(pred, geoms, t, batch)
        print(f'granularity search at density {t:.3f}:')
        print(format_search(res, top=6))
    return rep
