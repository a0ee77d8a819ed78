"""Predict the latency of a LAUD backbone on a device.

Usage::

    python tools/predict_latency.py CONFIG [--checkpoint CKPT]
        [--hardware v100|rtx3090|rtx3060|tx2|nano|a100|h200|cpu|spec.yaml]
        [--batch-size N] [--input-size H W] [--target T]
        [--num-images K] [--ops] [--sweep] [--search] [--out-dir DIR]

CONFIG is an mmdet / mmpretrain config holding a ``laud_mm.LAUDResNet``,
``laud_mm.LAUDRegNetY`` or ``laud_mm.LAUDT2TViT`` backbone, or a shortcut
``resnet50`` / ``resnet101`` (with ``--paradigm`` and ``--granularity``) or
``t2t-vit-t-14`` / ``-19`` / ``-24`` (with ``--paradigm``). Activation rates:
with ``--checkpoint`` they are measured on ``--num-images`` images of the
config's test set (mean mask density per block; detector and classifier
configs);
otherwise every block gets the uniform mask density whose FLOPs rate
equals the config's target rate (``target_rate`` / the sparsity loss'
``target_rate``, or ``--target``).

Prints a per-stage table (dense and dynamic GFLOPs per image, activation rate,
predicted ms, static ms, speedup) and the whole backbone; for a T2T-ViT also
the per-layer table and the milliseconds per operator category (qkv,
attention, proj, MLP, masker, gather / scatter, ...); ``--ops`` adds the
per-kernel breakdown, ``--sweep`` writes PNG plots of latency vs activation
rate per paradigm and granularity (paper Figs. 6-7), ``--search`` ranks S and
G per stage by predicted latency (paper sec. 4.2).

Source: paper appendix A, docs/method.md sec. 4.
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

SHORTCUTS = {'resnet50': 50, 'resnet101': 101, 'resnet152': 152}
LAUD_BACKBONES = ('LAUDResNet', 'LAUDRegNetY', 'LAUDT2TViT')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config', help='config file, or resnet50 / resnet101 / '
                   't2t-vit-t-14 / t2t-vit-t-19 / t2t-vit-t-24')
    p.add_argument('--checkpoint', help='checkpoint: measure activation '
                   'rates on the config test set')
    p.add_argument('--hardware', default='v100',
                   help='device name or .yaml/.json spec (default v100)')
    p.add_argument('--batch-size', type=int, default=None,
                   help='batch (default: the device default)')
    p.add_argument('--input-size', type=int, nargs=2, metavar=('H', 'W'),
                   default=None, help='input size (default 224 224, or the '
                   'measured images)')
    p.add_argument('--target', type=float, default=None,
                   help='target activation (FLOPs) rate, overrides config')
    p.add_argument('--paradigm', default=None,
                   choices=['spatial', 'channel', 'layer'],
                   help='paradigm for the resnet / t2t-vit shortcuts')
    p.add_argument('--granularity', type=int, nargs=4, default=None,
                   help='S or G per stage for the resnet shortcuts')
    p.add_argument('--num-images', type=int, default=8,
                   help='images used to measure activation rates')
    p.add_argument('--ops', action='store_true', help='per-kernel table')
    p.add_argument('--sweep', action='store_true',
                   help='plot latency vs activation rate (PNG)')
    p.add_argument('--search', action='store_true',
                   help='rank granularities per stage by predicted latency')
    p.add_argument('--out-dir', default='work_dirs/latency',
                   help='where --sweep writes its plots')
    p.add_argument('--cfg-options', nargs='+', default=None,
                   help='key=value overrides of the config')
    return p.parse_args(argv)


# ---------------------------------------------------------------- helpers
def uniform_density_for_rate(geometries, rate, stem=None):
    """The uniform mask density d whose backbone FLOPs rate equals ``rate``.

    Uses :mod:`laud_mm.structures.flops` (the same count as the sparsity loss);
    bisection on d in [0, 1]. Returns 1.0 for a static backbone.

    Raises:
        ValueError: if ``rate`` is outside (0, 1].
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
    if total(0.) >= rate:
        return 0.
    if total(1.) <= rate:
        return 1.
    for _ in range(50):
        mid = (lo + hi) / 2
        if total(mid) < rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def block_flops_table(geometries, densities):
    """Per-block (dense, dynamic) FLOPs per image."""
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


def load_config(args):
    from mmengine.config import Config
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        opts = {}
        for kv in args.cfg_options:
            k, v = kv.split('=', 1)
            try:
                import ast
                v = ast.literal_eval(v)
            except (ValueError, SyntaxError):
                pass
            opts[k] = v
        cfg.merge_from_dict(opts)
    return cfg


def find_backbone_cfg(cfg):
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


def config_target(cfg):
    t = cfg.get('target_rate', None)
    if t is None:
        sl = cfg.get('model', {}).get('sparsity_loss', None)
        if sl is not None:
            t = sl.get('target_rate', None)
    return t


def measure_densities(cfg, checkpoint, num_images):
    """Mean per-block mask densities of a trained model on real images.

    Builds ``cfg.model`` (a detector or a classifier with a LAUD backbone) in
    the config's default scope, loads ``checkpoint`` (an mmengine Runner
    checkpoint or a bare state dict), runs the backbone in eval mode on the
    first ``num_images`` images of ``cfg.test_dataloader.dataset`` through
    the model's data preprocessor, one image at a time, and averages each
    block's mask density (``activation_stats()['block_density']``).

    Returns:
        (densities, (H, W)): list of per-block mean densities in [0, 1]
        and the most common backbone input size.

    Raises:
        ValueError: ``num_images`` < 1, or a model without a LAUD backbone.
    """
    import collections
    import copy

    import torch
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DATASETS, MODELS, init_default_scope
    from mmengine.runner import load_checkpoint

    import laud_mm  # noqa: F401  (registers the LAUD models, safe loading)
    if num_images < 1:
        raise ValueError(f'--num-images={num_images} must be >= 1')
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model_cfg = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor') is not None:
        # mmpretrain configs keep the data preprocessor (mean / std, BGR to
        # RGB) at the top level and mmengine's Runner merges it into the
        # model; without it a classifier would see unnormalised pixels
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    model = MODELS.build(model_cfg)
    load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
    model.eval()
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


def stage_table(geoms, dens, rep, static):
    fl = block_flops_table(geoms, dens)
    n_st = len(rep.per_stage_ms)
    lines = [f'{"stage":<7}{"dense GFLOPs":>13}{"dyn GFLOPs":>12}'
             f'{"rate":>7}{"pred ms":>11}{"static ms":>11}{"speedup":>9}']
    tot_d = tot_y = 0.
    for s in range(n_st):
        d = sum(f[0] for g, f in zip(geoms, fl) if g.stage == s)
        y = sum(f[1] for g, f in zip(geoms, fl) if g.stage == s)
        tot_d += d
        tot_y += y
        lines.append(f'{s:<7}{d / 1e9:>13.3f}{y / 1e9:>12.3f}{y / d:>7.3f}'
                     f'{rep.per_stage_ms[s]:>11.3f}'
                     f'{static.per_stage_ms[s]:>11.3f}'
                     f'{static.per_stage_ms[s] / rep.per_stage_ms[s]:>9.3f}')
    lines.append(f'{"stem":<7}{"":>13}{"":>12}{"":>7}{rep.stem_ms:>11.3f}'
                 f'{static.stem_ms:>11.3f}')
    lines.append(f'{"total":<7}{tot_d / 1e9:>13.3f}{tot_y / 1e9:>12.3f}'
                 f'{tot_y / tot_d:>7.3f}{rep.total_ms:>11.3f}'
                 f'{static.total_ms:>11.3f}'
                 f'{static.total_ms / rep.total_ms:>9.3f}')
    return '\n'.join(lines)


def vit_tables(rep, static, ops=False):
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


def sweep_plot(pred, geoms, stem, batch, out_dir, title):
    """Latency / static per stage vs mask density for every paradigm and
    granularity (paper Figs. 6-7). Returns the PNG path."""
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
            ax.plot(rates, ys, marker='.', color=colors[(par, gran)], ls='-' if par == 'spatial' else
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


def main(argv=None):
    args = parse_args(argv)
    from laud_mm.latency import LatencyPredictor
    from laud_mm.models import resnet_geometries, t2t_vit_geometries
    from laud_mm.models.t2t_vit import T2T_VIT_ARCHS
    pred = LatencyPredictor(args.hardware)
    batch = args.batch_size or pred.hw.default_batch
    in_hw = tuple(args.input_size) if args.input_size else (224, 224)
    if args.config in SHORTCUTS:
        geoms, stem = resnet_geometries(SHORTCUTS[args.config], in_hw,
                                        args.paradigm, args.granularity)
        target = args.target if args.target is not None else 0.5
        name = args.config
        dens = [uniform_density_for_rate(geoms, target, stem)] * len(geoms)
    elif args.config in T2T_VIT_ARCHS:
        geoms, stem = t2t_vit_geometries(args.config, in_hw, args.paradigm)
        target = args.target if args.target is not None else 0.7
        name = args.config
        dens = [uniform_density_for_rate(geoms, target, stem)] * len(geoms)
    else:
        import laud_mm  # noqa: F401  (registers LAUDResNet)
        from laud_mm.registry import MODELS
        cfg = load_config(args)
        name = osp.basename(args.config)
        if args.checkpoint:
            dens, measured_hw = measure_densities(cfg, args.checkpoint,
                                                  args.num_images)
            if args.input_size is None:
                in_hw = measured_hw
            target = None
        bb_cfg = dict(find_backbone_cfg(cfg))
        bb_cfg.pop('init_cfg', None)
        backbone = MODELS.build(bb_cfg)
        geoms = backbone.block_geometries(in_hw)
        stem = backbone.stem_geometry(in_hw)
        if not args.checkpoint:
            target = args.target if args.target is not None else \
                config_target(cfg)
            if target is None:
                target = 1.0
            dens = [uniform_density_for_rate(geoms, target, stem)] * \
                len(geoms)
    rep = pred.predict_backbone(geoms, dens, batch, stem)
    static = pred.predict_static(geoms, batch, stem)
    src = 'measured on %d images' % args.num_images if args.checkpoint \
        else f'uniform density {dens[0]:.3f} for target rate {target}'
    print(f'{name} on {pred.hw.name}, batch {batch}, input {in_hw[0]}x'
          f'{in_hw[1]}, paradigm {geoms[0].paradigm}, activation: {src}')
    print(stage_table(geoms, dens, rep, static))
    print(f'backbone: {rep.total_ms:.3f} ms per batch, {rep.per_image_ms:.4f}'
          f' ms per image (static {static.per_image_ms:.4f} ms per image, '
          f'speedup {static.total_ms / rep.total_ms:.3f})')
    vit = getattr(geoms[0], 'kind', None) == 'vit'
    if vit:
        print(vit_tables(rep, static, args.ops))
    elif args.ops:
        print(rep.table(ops=True))
    if vit and (args.sweep or args.search):
        raise ValueError('--sweep / --search choose CNN granularities; a '
                         'T2T-ViT has none (tokens, heads and layers are '
                         'single gates)')
    if args.sweep:
        path = sweep_plot(pred, geoms, stem, batch, args.out_dir,
                          f'{name}: {pred.hw.name}, batch {batch}')
        print(f'sweep plot: {path}')
    if args.search:
        from laud_mm.latency.search import format_search, search_granularity
        t = target if target is not None else sum(dens) / len(dens)
        res = search_granularity(pred, geoms, t, batch)
        print(f'granularity search at density {t:.3f}:')
        print(format_search(res, top=6))
    return rep


if __name__ == '__main__':
    main()
