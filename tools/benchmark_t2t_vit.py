#!/usr/bin/env python
"""Measured CPU latency of LAUD-T2T-ViT dynamic inference against the static
T2T-ViT, side by side in one run, with the latency predictor's ratio.

For each paradigm (token skipping = spatial, head skipping = channel, layer
skipping) the gates of every encoder layer are forced to random patterns at
activation rate r: exactly round(r x P) of the P patch tokens per sample and
layer (the class token always kept), round(r x H) of the H heads per sample
and layer, and for layers round(r x N) samples per layer (batches below 4:
round(r x N x layers) of all (sample, layer) gates). The encoder runs on the
Tokens-to-Token module's output (computed once, the T2T module is dense and
the same in both):

- static: mmpretrain's ``T2TTransformerLayer.forward`` in every layer;
- dynamic: ``layer(x)`` with ``dynamic_inference=True`` (the model's eval
  path: gather / scatter of kept tokens, kept heads only, kept samples only,
  incl. its per-layer statistics).

Timing reuses :func:`benchmark_latency.bench_pair` (static and dynamic runs
alternate after warm-up; wall-clock medians and the ratio of median process
CPU times, robust on a shared machine). The T2T module is timed separately
(median), so "whole" = T2T module + encoder. 'pred. v100' is the latency
predictor's encoder-only dynamic / static ratio (fused kernels, batch 128)
at the realised gate rate; 'FLOPs' the encoder's FLOPs ratio.

Usage:
    python tools/benchmark_t2t_vit.py              # T2T-ViT-t-14, 8 x 224 px
    python tools/benchmark_t2t_vit.py --paradigms layer --rates 0.5 1.0
    python tools/benchmark_t2t_vit.py --tiny --repeats 1       # smoke test

Source: paper sec. 3.2 and "Experiments on vision Transformers" (token
skipping by indexing, head and layer skipping); issue 7.
"""
import argparse
import json
import os
import os.path as osp
import platform
import statistics
import sys
import time
from typing import Dict, List

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

from laud_mm import LAUDT2TViT  # noqa: E402
from laud_mm.latency import LatencyPredictor  # noqa: E402
from laud_mm.models.t2t_vit import T2T_VIT_ARCHS  # noqa: E402
from laud_mm.models.t2t_vit.dynamic import \
    static_t2t_layer_forward  # noqa: E402

from benchmark_latency import bench_pair  # noqa: E402  (shared timing)

PARADIGMS = ('layer', 'channel', 'spatial')
TINY = dict(img_size=64, embed_dims=64, num_layers=2,
            t2t_cfg=dict(token_dims=16),
            layer_cfgs=dict(num_heads=4, feedforward_channels=128))


def arch_kwargs(arch: str) -> dict:
    """LAUDT2TViT keyword arguments of a :data:`T2T_VIT_ARCHS` entry."""
    a = T2T_VIT_ARCHS[arch]
    d = a['embed_dims']
    return dict(embed_dims=d, num_layers=a['num_layers'],
                t2t_cfg=dict(token_dims=a['token_dims']),
                layer_cfgs=dict(num_heads=a['num_heads'],
                                feedforward_channels=a['ffn_ratio'] * d))


def force_random_gates(net: LAUDT2TViT, rate: float, n: int, tokens: int,
                       seed: int) -> List[float]:
    """Force random gates at ``rate`` in every layer; returns the realised
    mask density per layer (fraction of patch tokens / heads / samples)."""
    g = torch.Generator().manual_seed(seed)
    layers = net.blocks
    if net.paradigm == 'layer':
        if n >= 4:
            gates = torch.zeros(len(layers), n)
            for i in range(len(layers)):
                gates[i, torch.randperm(n, generator=g)[:round(rate * n)]] = 1
        else:
            k = len(layers) * n
            flat = torch.zeros(k)
            flat[torch.randperm(k, generator=g)[:round(rate * k)]] = 1
            gates = flat.view(len(layers), n)
        for lay, gate in zip(layers, gates):
            lay.masker.forced_gate = gate.clone()
        return [float(gt.mean()) for gt in gates]
    dens = []
    for lay in layers:
        geom = lay.geometry(tokens)
        m = geom.num_patch_tokens if net.paradigm == 'spatial' \
            else geom.num_heads
        gate = torch.zeros(n, m)
        for i in range(n):
            gate[i, torch.randperm(m, generator=g)[:round(rate * m)]] = 1
        lay.masker.forced_gate = gate
        dens.append(float(gate.mean()))
    return dens


def stem_tokens(net: LAUDT2TViT, x: torch.Tensor) -> torch.Tensor:
    """The encoder input: T2T module, class token, position embedding
    (mmpretrain's ``T2T_ViT.forward`` up to the encoder)."""
    from mmpretrain.models.utils import resize_pos_embed
    t, hw = net.tokens_to_token(x)
    if net.cls_token is not None:
        t = torch.cat((net.cls_token.expand(x.shape[0], -1, -1), t), dim=1)
    return t + resize_pos_embed(net.pos_embed, net.patch_resolution, hw,
                                mode=net.interpolate_mode,
                                num_extra_tokens=net.num_extra_tokens)


def static_encoder(net, t):
    for lay in net.blocks:
        t = static_t2t_layer_forward(lay, t)
    return net.norm(t)


def dynamic_encoder(net, t):
    for lay in net.blocks:
        t = lay(t)
    return net.norm(t)


def encoder_flops_rate(net) -> float:
    """Encoder FLOPs ratio (dynamic / dense, maskers included) of the last
    forward."""
    f = sum(float(b.last_stats['flops'].mean()) for b in net.blocks)
    return f / sum(b.last_stats['dense'] for b in net.blocks)


def run(args) -> List[Dict]:
    rows = []
    pred = LatencyPredictor('v100')
    kw = dict(TINY) if args.tiny else dict(arch_kwargs(args.arch),
                                           img_size=args.size)
    size = kw['img_size']
    x = torch.randn(args.batch, 3, size, size)
    name = 'tiny' if args.tiny else args.arch
    for paradigm in args.paradigms:
        torch.manual_seed(0)
        net = LAUDT2TViT(paradigm=paradigm, dynamic_inference=True, **kw)
        net.eval()
        with torch.no_grad():
            stem_ms = statistics.median(
                _timed_ms(lambda: stem_tokens(net, x))
                for _ in range(max(1, args.repeats // 2)))
            t = stem_tokens(net, x)
        tokens = t.shape[1]
        geoms = net.block_geometries((size, size))
        p_static = pred.predict_static(geoms, 128).total_ms
        for rate in args.rates:
            dens = force_random_gates(net, rate, args.batch, tokens, seed=1)
            if rate == 1.0:  # exactness spot check: the static layers
                with torch.no_grad():
                    a = static_encoder(net, t)
                    b = dynamic_encoder(net, t)
                assert (a - b).abs().max() <= 1e-4 * a.abs().max()
            st, dy, cpu = bench_pair(lambda u: static_encoder(net, u),
                                     lambda u: dynamic_encoder(net, u), t,
                                     args.warmup, args.repeats)
            with torch.no_grad():
                dynamic_encoder(net, t)
            p_dyn = pred.predict_backbone(geoms, dens, 128).total_ms
            row = dict(arch=name, batch=args.batch, size=size,
                       paradigm=paradigm, rate=rate,
                       gate_mean=sum(dens) / len(dens),
                       flops_rate=encoder_flops_rate(net), stem_ms=stem_ms,
                       static_ms=st, dynamic_ms=dy, speedup=st / dy,
                       cpu_speedup=cpu,
                       whole_speedup=(stem_ms + st) / (stem_ms + dy),
                       predicted_ratio=p_dyn / p_static)
            rows.append(row)
            print(fmt_row(row), flush=True)
    return rows


def _timed_ms(fn) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def fmt_row(r) -> str:
    return (f"| {r['arch']} | {r['batch']}x{r['size']}x{r['size']} | "
            f"{r['paradigm']} | {r['rate']:.2f} | {r['flops_rate']:.2f} | "
            f"{r['stem_ms']:.0f} | {r['static_ms']:.0f} | "
            f"{r['dynamic_ms']:.0f} | {r['speedup']:.2f}x | "
            f"{r['cpu_speedup']:.2f}x | {r['whole_speedup']:.2f}x | "
            f"{r['predicted_ratio']:.2f} |")


HEADER = ('| backbone | input | paradigm | r | encoder FLOPs | T2T module ms '
          '| static encoder ms | dynamic encoder ms | encoder speedup (wall) '
          '| encoder speedup (CPU time) | whole-backbone speedup (wall) | '
          'pred. v100 encoder dyn/static |\n'
          '|---|---|---|---|---|---|---|---|---|---|---|---|')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--arch', default='t2t-vit-t-14',
                   choices=sorted(T2T_VIT_ARCHS))
    p.add_argument('--paradigms', nargs='+', default=list(PARADIGMS),
                   choices=list(PARADIGMS))
    p.add_argument('--rates', type=float, nargs='+', default=[0.25, 0.5, 1.0])
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--size', type=int, default=224)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--tiny', action='store_true',
                   help='a 2-layer, 64-dim model on 64 px (smoke test)')
    p.add_argument('--json', default=None, help='write the rows as JSON')
    args = p.parse_args(argv)
    for key in ('threads', 'repeats', 'batch', 'size'):
        if getattr(args, key) < 1:
            raise ValueError(f'--{key}={getattr(args, key)} must be >= 1')
    if args.warmup < 0:
        raise ValueError(f'--warmup={args.warmup} must be >= 0')
    if any(not 0 <= r <= 1 for r in args.rates):
        raise ValueError(f'--rates={args.rates} must lie in [0, 1]')
    torch.set_num_threads(args.threads)
    print(f'# torch {torch.__version__}, {torch.get_num_threads()} threads, '
          f'{platform.processor() or "cpu"} ({os.cpu_count()} logical CPUs), '
          f'load average {os.getloadavg()[0]:.1f}')
    print(HEADER)
    rows = run(args)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == '__main__':
    main()
