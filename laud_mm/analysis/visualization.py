"""Interpretability pictures of a LAUD model (paper sec. 4.4): where the
spatial gates of each stage keep computing on real images, and how often each
block (layer skipping) or its channel groups (channel skipping) are active.

Works for any config whose model has a dynamic LAUD backbone (LAUD
detectors and classifiers): the images go through the config's own test
pipeline (annotation loading removed) and ``model.test_step``; the gates are
read from each block's ``last_stats['gate']`` and the FLOPs from
``backbone.activation_stats()``. :func:`visualize_masks` writes into its
output directory:

- ``<image>_spatial_gates.png`` (spatial paradigm): the input image and, per
  stage, the fraction of the stage's blocks that compute each pixel, drawn
  over the image;
- ``block_activation.png``: per block, the mean mask density over the images
  (kept pixels / channel groups / fraction of images running the block) with
  its spread, and the block's FLOPs ratio (computed / dense);
- ``block_activation.json``: the same numbers.

Command line: ``tools/analysis_tools/visualize_masks.py``.
"""
import json
import os
import os.path as osp
from typing import Dict, List, Sequence

import numpy as np
import torch

from .configs import CfgOptions, build_model, load_config

#: file extensions taken from an image directory
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


def build_model_and_pipeline(config: str, checkpoint: str,
                              cfg_options: CfgOptions = None):
    """Build the model of a config (eval mode, CPU) and its test pipeline.

    Args:
        config: config file path.
        checkpoint: checkpoint path, or 'none' to keep the initial weights
            (loaded non-strictly).
        cfg_options: overrides merged into the config (see
            :func:`~laud_mm.analysis.configs.load_config`).

    Returns:
        (model, pipeline): the pipeline maps dict(img_path=...) to the packed
        inputs / data sample of one image.

    Raises:
        FileNotFoundError: missing config or checkpoint.
        TypeError: the model's backbone is not a dynamic LAUD backbone.
        KeyError: the config has no test / val dataloader.
    """
    from mmengine.dataset import Compose
    cfg = load_config(config, cfg_options)
    ckpt = None if str(checkpoint).lower() == 'none' else checkpoint
    model = build_model(cfg, ckpt, strict=False)
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
        # skipped pixels dimmed, kept pixels tinted by how many blocks
        # keep them
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
    ax.set_ylim(0, 1.3)  # room for the legend above the bars
    ax.set_xlabel('block (stage.index)')
    what = {'layer': 'fraction of images running the block',
            'channel': 'fraction of channel groups kept',
            'spatial': 'fraction of pixels kept'}[paradigm]
    ax.set_ylabel(what, fontsize=8)
    g = '' if granularity is None else f' {"-".join(map(str, granularity))}'
    ax.set_title(f'{paradigm}{g}: backbone activation rate {act_rate:.3f} '
                 f'({n_images} images)', fontsize=9)
    ax.legend(fontsize=7, loc='upper center', ncol=2)
    ax.grid(axis='y', alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_file, dpi=90)
    plt.close(fig)
    return out_file


def visualize_masks(config: str, checkpoint: str, images: Sequence[str],
                    out_dir: str = 'mask_vis', max_images: int = 8,
                    max_overlays: int = 4, cfg_options: CfgOptions = None
                    ) -> List[str]:
    """Run up to ``max_images`` images (files or directories) through the
    model of ``config`` / ``checkpoint`` ('none': initial weights), write the
    spatial overlays of the first ``max_overlays`` images (spatial models),
    the per-block chart and its JSON into ``out_dir``, and print a summary.

    Returns:
        the written paths.

    Raises:
        ValueError: ``max_images`` < 1 or ``max_overlays`` < 0 (names the
            option and value).
        FileNotFoundError, TypeError, KeyError: see :func:`list_images` and
            :func:`build_model_and_pipeline`.
    """
    if max_images < 1:
        raise ValueError(f'--max-images={max_images} must be >= 1')
    if max_overlays < 0:
        raise ValueError(f'--max-overlays={max_overlays} must be >= 0')
    with torch.no_grad():
        files = list_images(images, max_images)
        model, pipeline = build_model_and_pipeline(config, checkpoint,
                                                   cfg_options)
        records = run_images(model, pipeline, files)
    os.makedirs(out_dir, exist_ok=True)
    bb = model.backbone
    written = []
    if bb.paradigm == 'spatial':
        for r in records[:max_overlays]:
            stem = osp.splitext(osp.basename(r['file']))[0]
            written.append(plot_spatial(
                r, osp.join(out_dir, f'{stem}_spatial_gates.png')))
    summary = block_summary(records)
    act = float(np.mean([r['activation_rate'] for r in records]))
    written.append(plot_blocks(summary, bb.paradigm, bb.granularity, act,
                               len(records),
                               osp.join(out_dir, 'block_activation.png')))
    js = osp.join(out_dir, 'block_activation.json')
    with open(js, 'w') as f:
        json.dump(dict(config=config, checkpoint=checkpoint,
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
    return written
