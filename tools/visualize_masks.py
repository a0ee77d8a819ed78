"""Interpretability pictures of a LAUD model (paper sec. 4.4): where the
spatial gates of each stage keep computing on real images, and how often each
block (layer skipping) or its channel groups (channel skipping) are active.

Usage:
    python tools/visualize_masks.py CONFIG CHECKPOINT IMG_OR_DIR [...]
        [--out-dir DIR] [--max-images N] [--cfg-options k=v ...]

CHECKPOINT may be 'none' (the freshly initialised model: every gate keeps,
which is only useful to try the tool). Works for any config whose model has a
``laud_mm.LAUDResNet`` backbone (LAUD detectors and classifiers): the images
go through the config's own test pipeline (annotation loading removed) and
``model.test_step``; the gates are read from each block's
``last_stats['gate']`` and the FLOPs from ``backbone.activation_stats()``.

Writes into ``--out-dir``:
- ``<image>_spatial_gates.png`` (spatial paradigm): the input image and, per
  stage, the fraction of the stage's blocks that compute each pixel, drawn
  over the image;
- ``block_activation.png``: per block, the mean mask density over the images
  (kept pixels / channel groups / fraction of images running the block) with
  its spread, and the block's FLOPs ratio (computed / dense);
- ``block_activation.json``: the same numbers.
"""
import argparse
import json
import os
import os.path as osp
import sys
from typing import Dict, List, Sequence

import numpy as np
import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

IMG_EXTS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp')


def list_images(paths: Sequence[str], max_images: int) -> List[str]:
    """Image files named by ``paths`` (files, or directories whose images are
    taken in sorted order), at most ``max_images``.

    Raises:
        FileNotFoundError: a path that does not exist, or no image found.
    """
    files = []
    for p in paths:
        if osp.isdir(p):
            files += [osp.join(p, f) for f in sorted(os.listdir(p))
                      if f.lower().endswith(IMG_EXTS)]
        elif osp.isfile(p):
            files.append(p)
        else:
            raise FileNotFoundError(f'image path {p!r} does not exist')
    if not files:
        raise FileNotFoundError(f'no image ({", ".join(IMG_EXTS)}) in {paths}')
    return files[:max_images]


def build_model_and_pipeline(config: str, checkpoint: str, cfg_options=None):
    """Build the model of a config (eval mode, CPU) and its test pipeline.

    Args:
        config: config file path.
        checkpoint: checkpoint path, or 'none' to keep the initial weights.
        cfg_options: dict merged into the config.

    Returns:
        (model, pipeline): the pipeline maps dict(img_path=...) to the packed
        inputs / data sample of one image.

    Raises:
        FileNotFoundError: missing config or checkpoint.
        TypeError: the model's backbone is not a dynamic LAUD backbone.
    """
    import importlib

    from mmengine.config import Config
    from mmengine.dataset import Compose
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner import load_checkpoint

    import laud_mm  # noqa: F401
    if not osp.isfile(config):
        raise FileNotFoundError(f'config {config!r} does not exist')
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope = cfg.get('default_scope', 'mmdet')
    importlib.import_module(f'{scope}.utils').register_all_modules(
        init_default_scope=False)
    init_default_scope(scope)
    model_cfg = cfg.model
    if cfg.get('data_preprocessor') is not None:
        # mmpretrain configs keep the data preprocessor (mean / std, BGR to
        # RGB) at the top level and mmengine's Runner merges it into the
        # model; without it a classifier would see unnormalised pixels
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    model = MODELS.build(model_cfg)
    if str(checkpoint).lower() != 'none':
        if not osp.isfile(checkpoint):
            raise FileNotFoundError(f'checkpoint {checkpoint!r} does not exist')
        load_checkpoint(model, checkpoint, map_location='cpu', strict=False)
    model.eval()
    backbone = getattr(model, 'backbone', None)
    if not hasattr(backbone, 'blocks') or \
            not getattr(backbone, 'paradigm', None):
        raise TypeError(
            f'visualize_masks needs a dynamic LAUD backbone (model.backbone '
            f"type='laud_mm.LAUDResNet' with a paradigm); got "
            f'{type(backbone).__name__} with paradigm='
            f'{getattr(backbone, "paradigm", None)!r}')
    dl = cfg.get('test_dataloader') or cfg.get('val_dataloader')
    if dl is None:
        raise KeyError(f'config {config!r} has no test_dataloader / '
                       f'val_dataloader to take the test pipeline from')
    ds = dl['dataset']
    while 'pipeline' not in ds and 'dataset' in ds:  # dataset wrappers
        ds = ds['dataset']
    steps = [t for t in ds['pipeline']
             if 'LoadAnnotations' not in str(t.get('type', ''))]
    return model, Compose(steps)


def run_images(model, pipeline, files: Sequence[str]) -> List[Dict]:
    """Run each image alone through the model; record its gates.

    Returns:
        one dict per image: 'file', 'image' (H, W, 3) uint8 RGB as the
        network saw it (after the test pipeline, before padding),
        'input_hw' (padded batch size), 'blocks' (list per block of dict
        'stage', 'index', 'gate' (numpy, the gate of this image), 'density'
        (float), 'flops_ratio' (float), 'granularity', 'out_hw'), and
        'activation_rate' (backbone FLOPs / dense FLOPs).
    """
    from mmengine.dataset import pseudo_collate
    backbone = model.backbone
    out = []
    for i, f in enumerate(files):
        data = pipeline(dict(img_path=f, img_id=i))
        with torch.no_grad():
            model.test_step(pseudo_collate([data]))
        img = data['inputs'].permute(1, 2, 0).cpu().numpy()
        img = np.clip(img, 0, 255).astype(np.uint8)[..., ::-1]  # BGR -> RGB
        stats = backbone.activation_stats()
        blocks = []
        for b, bf in zip(backbone.blocks, stats['block_flops']):
            st = b.last_stats
            blocks.append(dict(
                stage=b.stage, index=b.index,
                gate=st['gate'][0].detach().float().cpu().numpy(),
                density=float(st['density'][0]),
                flops_ratio=float(bf[0]) / st['dense'],
                granularity=b.granularity, out_hw=st['geometry'].out_hw))
        out.append(dict(file=f, image=np.ascontiguousarray(img),
                        input_hw=stats['input_hw'], blocks=blocks,
                        activation_rate=float(stats['activation_rate'][0])))
    return out


def stage_pixel_maps(record: Dict) -> List[np.ndarray]:
    """Per stage, the fraction of its blocks whose spatial gate keeps each
    pixel, at the image's size (H, W) as the network saw it (the padding of
    the batch removed), values in [0, 1].

    Raises:
        ValueError: the record is not from a spatial model.
    """
    import torch.nn.functional as F

    from laud_mm.models.layers.masks import expand_spatial_gate
    h, w = record['image'].shape[:2]
    ph, pw = record['input_hw']
    maps: Dict[int, List[np.ndarray]] = {}
    for b in record['blocks']:
        if b['gate'].ndim != 2:
            raise ValueError('stage_pixel_maps needs spatial gates (gh, gw); '
                             f'got a gate of shape {b["gate"].shape}')
        oh, ow = b['out_hw']
        m = expand_spatial_gate(torch.from_numpy(b['gate'])[None],
                                b['granularity'], (oh, ow))
        # the image occupies the top-left h/ph x w/pw of the padded input
        ch, cw = max(1, round(oh * h / ph)), max(1, round(ow * w / pw))
        m = F.interpolate(m[:, :, :ch, :cw], size=(h, w), mode='nearest')
        maps.setdefault(b['stage'], []).append(m[0, 0].numpy())
    return [np.mean(maps[s], axis=0) for s in sorted(maps)]


def plot_spatial(record: Dict, out_file: str) -> str:
    """Image plus one overlay per stage (see :func:`stage_pixel_maps`).
    Returns ``out_file``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    maps = stage_pixel_maps(record)
    img = record['image'].astype(np.float32) / 255.0
    n = len(maps) + 1
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.6 * img.shape[0] /
                                            img.shape[1] + 0.5))
    axes[0].imshow(img)
    axes[0].set_title(f'{osp.basename(record["file"])}\nact. rate '
                      f'{record["activation_rate"]:.2f}', fontsize=7)
    for s, (ax, m) in enumerate(zip(axes[1:], maps)):
        dens = [b['density'] for b in record['blocks'] if b['stage'] == s]
        S = [b['granularity'] for b in record['blocks'] if b['stage'] == s][0]
        # skipped pixels dimmed, kept pixels tinted by how many blocks keep them
        ax.imshow(img * (0.3 + 0.7 * m[..., None]))
        im = ax.imshow(m, cmap='viridis', vmin=0, vmax=1, alpha=0.35)
        ax.set_title(f'stage {s + 1} (S={S})\nmean density '
                     f'{np.mean(dens):.2f}', fontsize=7)
    for ax in axes:
        ax.axis('off')
    fig.colorbar(im, ax=list(axes), fraction=0.02, pad=0.01,
                 label='fraction of blocks computing')
    fig.savefig(out_file, dpi=90, bbox_inches='tight')
    plt.close(fig)
    return out_file


def block_summary(records: Sequence[Dict]) -> List[Dict]:
    """Per block over the images: mean and std of the mask density, mean
    FLOPs ratio. For layer skipping the density of one image is its gate
    (0 or 1), so the mean is the fraction of images running the block."""
    out = []
    for k, b0 in enumerate(records[0]['blocks']):
        d = np.array([r['blocks'][k]['density'] for r in records])
        fr = np.array([r['blocks'][k]['flops_ratio'] for r in records])
        out.append(dict(block=f'{b0["stage"] + 1}.{b0["index"]}',
                        stage=b0['stage'], density_mean=float(d.mean()),
                        density_std=float(d.std()),
                        flops_ratio_mean=float(fr.mean())))
    return out


def plot_blocks(summary: Sequence[Dict], paradigm: str, granularity,
                act_rate: float, n_images: int, out_file: str) -> str:
    """Bar chart of per-block activation (see :func:`block_summary`).
    Returns ``out_file``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    x = np.arange(len(summary))
    colors = [f'C{s["stage"]}' for s in summary]
    fig, ax = plt.subplots(figsize=(max(6, 0.28 * len(summary) + 2), 3.2))
    ax.bar(x, [s['density_mean'] for s in summary],
           yerr=[s['density_std'] for s in summary], color=colors,
           alpha=0.8, capsize=2, label='mask density (mean, std over images)')
    ax.plot(x, [s['flops_ratio_mean'] for s in summary], 'k.', ms=6,
            label='FLOPs ratio (computed / dense)')
    ax.set_xticks(x)
    ax.set_xticklabels([s['block'] for s in summary], rotation=90, fontsize=7)
    ax.set_ylim(0, 1.08)
    ax.set_xlabel('block (stage.index)')
    what = {'layer': 'fraction of images running the block',
            'channel': 'fraction of channel groups kept',
            'spatial': 'fraction of pixels kept'}[paradigm]
    ax.set_ylabel(what, fontsize=8)
    g = '' if granularity is None else f' {"-".join(map(str, granularity))}'
    ax.set_title(f'{paradigm}{g}: backbone activation rate {act_rate:.3f} '
                 f'({n_images} images)', fontsize=9)
    ax.legend(fontsize=7, loc='lower right')
    ax.grid(axis='y', alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_file, dpi=90)
    plt.close(fig)
    return out_file


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Draw the gates of a LAUD model on images')
    parser.add_argument('config')
    parser.add_argument('checkpoint', help="checkpoint, or 'none'")
    parser.add_argument('images', nargs='+', help='image files or dirs')
    parser.add_argument('--out-dir', default='mask_vis')
    parser.add_argument('--max-images', type=int, default=8)
    parser.add_argument('--max-overlays', type=int, default=4,
                        help='spatial overlays to draw (the chart uses all '
                        'images)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(argv)
    if args.max_images < 1:
        parser.error(f'--max-images={args.max_images} must be >= 1')
    return args


def main(argv=None) -> int:
    """Command-line entry point (returns the exit code)."""
    args = parse_args(argv)
    # no_grad as a context: main() is also called in-process by the tests
    with torch.no_grad():
        return _run(args)


def _run(args) -> int:
    files = list_images(args.images, args.max_images)
    model, pipeline = build_model_and_pipeline(args.config, args.checkpoint,
                                               args.cfg_options)
    records = run_images(model, pipeline, files)
    os.makedirs(args.out_dir, exist_ok=True)
    bb = model.backbone
    written = []
    if bb.paradigm == 'spatial':
        for r in records[:args.max_overlays]:
            stem = osp.splitext(osp.basename(r['file']))[0]
            written.append(plot_spatial(
                r, osp.join(args.out_dir, f'{stem}_spatial_gates.png')))
    summary = block_summary(records)
    act = float(np.mean([r['activation_rate'] for r in records]))
    written.append(plot_blocks(summary, bb.paradigm, bb.granularity, act,
                               len(records),
                               osp.join(args.out_dir, 'block_activation.png')))
    js = osp.join(args.out_dir, 'block_activation.json')
    with open(js, 'w') as f:
        json.dump(dict(config=args.config, checkpoint=args.checkpoint,
                       paradigm=bb.paradigm,
                       granularity=bb.granularity, activation_rate=act,
                       images=[r['file'] for r in records],
                       blocks=summary), f, indent=1)
    written.append(js)
    print(f'{bb.paradigm}: activation rate {act:.3f} over {len(records)} '
          f'images; per block density: ' + ' '.join(
              f'{s["block"]}={s["density_mean"]:.2f}' for s in summary))
    for w in written:
        print(f'wrote {w}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
