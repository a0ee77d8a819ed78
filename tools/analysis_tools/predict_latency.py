"""Predict the latency of a LAUD backbone on a device
(:func:`laud_mm.analysis.prediction.predict_latency`).

Usage::

    python tools/analysis_tools/predict_latency.py CONFIG [--checkpoint CKPT]
        [--hardware v100|rtx3090|rtx3060|tx2|nano|a100|h200|cpu|spec.yaml]
        [--batch-size N] [--input-size H W] [--target T]
        [--num-images K] [--ops] [--sweep] [--search] [--out-dir DIR]

CONFIG is an mmdet / mmpretrain config holding a ``laud_mm.LAUDResNet``,
``laud_mm.LAUDRegNetY`` or ``laud_mm.LAUDT2TViT`` backbone, or a shortcut
``resnet50`` / ``resnet101`` (with ``--paradigm`` and ``--granularity``) or
``t2t-vit-t-14`` / ``-19`` / ``-24`` (with ``--paradigm``). Activation rates:
with ``--checkpoint`` they are measured on ``--num-images`` images of the
config's test set (mean mask density per block; detector and classifier
configs); otherwise every block gets the uniform mask density whose FLOPs
rate equals the config's target rate (``target_rate`` / the sparsity loss'
``target_rate``, or ``--target``).

Prints a per-stage table (dense and dynamic GFLOPs per image, activation rate,
predicted ms, static ms, speedup) and the whole backbone; for a T2T-ViT also
the per-layer table and the milliseconds per operator category (qkv,
attention, proj, MLP, masker, gather / scatter, ...); ``--ops`` adds the
per-kernel breakdown, ``--sweep`` writes PNG plots of latency vs activation
rate per paradigm and granularity (paper Figs. 6-7), ``--search`` ranks S and
G per stage by predicted latency (paper sec. 4.2).
"""
import argparse

from laud_mm.analysis.prediction import predict_latency


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


def main(argv=None):
    args = parse_args(argv)
    return predict_latency(
        args.config, checkpoint=args.checkpoint, hardware=args.hardware,
        batch_size=args.batch_size, input_size=args.input_size,
        target=args.target, paradigm=args.paradigm,
        granularity=args.granularity, num_images=args.num_images,
        ops=args.ops, sweep=args.sweep, search=args.search,
        out_dir=args.out_dir, cfg_options=args.cfg_options)


if __name__ == '__main__':
    main()
