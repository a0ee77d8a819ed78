"""Measured CPU latency of LAUD-T2T-ViT dynamic inference against the static
T2T-ViT, side by side in one run, with the latency predictor's ratio.

For each paradigm (token skipping = spatial, head skipping = channel, layer
skipping) the gates of every encoder layer are forced to random patterns at
activation rate r (:func:`~laud_mm.analysis.forced_gates.
force_random_token_gates`). The encoder runs on the Tokens-to-Token module's
output (computed once, the T2T module is dense and the same in both):

- static: mmpretrain's ``T2TTransformerLayer.forward`` in every layer,
  its attention fused as the backbone's ``static_forward`` runs it
  (:meth:`~laud_mm.models.LAUDT2TViT.inference_attention`);
- dynamic: ``layer(x)`` with ``dynamic_inference=True`` (the model's eval
  path: gather / scatter of kept tokens, kept heads only, kept samples only,
  its per-layer statistics are counted when read, after the timing:
  :class:`laud_mm.models.layers.BlockStats`).

Timing: :func:`~laud_mm.analysis.timing.bench_pair` (static and dynamic runs
alternate after warm-up; wall-clock medians, speedups as medians of the
per-pair ratios of wall-clock and of process CPU times, robust on a shared
machine). The T2T module is timed separately
(median), so "whole" = T2T module + encoder. 'pred. v100' is the latency
predictor's encoder-only dynamic / static ratio (fused kernels, batch 128)
at the realised gate rate; 'FLOPs' the encoder's FLOPs ratio. Command line:
``tools/analysis_tools/benchmark_t2t_vit.py``.

Source: paper sec. 3.2 and "Experiments on vision Transformers" (token
skipping by indexing, head and layer skipping).
"""
import statistics
from typing import Dict, List, Optional, Sequence, Union

import torch

from laud_mm.latency import LatencyPredictor
from laud_mm.models import LAUDT2TViT
from laud_mm.models.t2t_vit import T2T_VIT_ARCHS, t2t_vit_arch_kwargs
from laud_mm.models.t2t_vit.dynamic import static_t2t_layer_forward

from ..forced_gates import force_random_token_gates
from ..timing import bench_pair, wall_ms
from .common import (Column, check_exact, check_options, header,
                     leading_columns, table_row, timing_columns,
                     timing_table)

#: the paradigms of a T2T-ViT (token, head and layer skipping)
PARADIGMS = ('layer', 'channel', 'spatial')
#: a 2-layer, 64-dim model on 64 px (smoke test, ``tiny=True``)
TINY = dict(img_size=64, embed_dims=64, num_layers=2,
            t2t_cfg=dict(token_dims=16),
            layer_cfgs=dict(num_heads=4, feedforward_channels=128))

#: the columns of the table (rows of :func:`run`)
COLUMNS = leading_columns(lambda r: r['arch']) + [
    Column('encoder FLOPs', lambda r: f"{r['flops_rate']:.2f}"),
    Column('T2T module ms', lambda r: f"{r['stem_ms']:.0f}"),
    *timing_columns('encoder ', ms='.0f'),
    Column('whole-backbone speedup (wall)',
           lambda r: f"{r['whole_speedup']:.2f}x"),
    Column('pred. v100 encoder dyn/static',
           lambda r: f"{r['predicted_ratio']:.2f}")]
HEADER = header(COLUMNS)


def stem_tokens(net: LAUDT2TViT, x: torch.Tensor) -> torch.Tensor:
    """The encoder input (N, tokens, C): T2T module (in the backbone's
    :meth:`~laud_mm.models.LAUDT2TViT.inference_attention`, as its
    forward runs it), class token, position embedding (mmpretrain's
    ``T2T_ViT.forward`` up to the encoder)."""
    from mmpretrain.models.utils import resize_pos_embed
    with net.inference_attention():
        t, hw = net.tokens_to_token(x)
    if net.cls_token is not None:
        t = torch.cat((net.cls_token.expand(x.shape[0], -1, -1), t), dim=1)
    return t + resize_pos_embed(net.pos_embed, net.patch_resolution, hw,
                                mode=net.interpolate_mode,
                                num_extra_tokens=net.num_extra_tokens)


def static_encoder(net: LAUDT2TViT, t: torch.Tensor) -> torch.Tensor:
    """Every encoder layer's static forward (mmpretrain's, its attention
    fused as ``static_forward`` runs it), then the final norm."""
    with net.inference_attention():
        for lay in net.blocks:
            t = static_t2t_layer_forward(lay, t)
    return net.norm(t)


def dynamic_encoder(net: LAUDT2TViT, t: torch.Tensor) -> torch.Tensor:
    """Every encoder layer's dynamic forward (in the backbone's
    :meth:`~laud_mm.models.LAUDT2TViT.inference_attention`, as its forward
    runs them), then the final norm."""
    with net.inference_attention():
        for lay in net.blocks:
            t = lay(t)
    return net.norm(t)


def encoder_flops_rate(net: LAUDT2TViT) -> float:
    """Encoder FLOPs ratio (dynamic / dense, maskers included) of the last
    forward."""
    f = sum(float(b.last_stats['flops'].mean()) for b in net.blocks)
    return f / sum(b.last_stats['dense'] for b in net.blocks)


def run(arch: str, paradigms: Sequence[str], rates: Sequence[float],
        batch: int, size: int, warmup: int, repeats: int, tiny: bool = False
        ) -> List[Dict]:
    """Time every (paradigm, rate) of ``arch`` (or :data:`TINY`) on
    ``batch`` images at torch's current thread count; prints each row (:func:`fmt_row`) as it is measured.

    Returns:
        one dict per row: arch, batch, size, paradigm, threads, rate,
        gate_mean,
        flops_rate, stem_ms, static_ms, dynamic_ms, speedup, cpu_speedup,
        whole_speedup, predicted_ratio.
    """
    rows = []
    pred = LatencyPredictor('v100')
    kw = dict(TINY) if tiny else dict(t2t_vit_arch_kwargs(arch),
                                      img_size=size)
    size = kw['img_size']
    x = torch.randn(batch, 3, size, size)
    name = 'tiny' if tiny else arch
    for paradigm in paradigms:
        torch.manual_seed(0)
        net = LAUDT2TViT(paradigm=paradigm, dynamic_inference=True, **kw)
        net.eval()
        with torch.no_grad():
            stem_ms = statistics.median(
                wall_ms(lambda: stem_tokens(net, x))
                for _ in range(max(1, repeats // 2)))
            t = stem_tokens(net, x)
        tokens = t.shape[1]
        geoms = net.block_geometries((size, size))
        p_static = pred.predict_static(geoms, 128).total_ms
        for rate in rates:
            dens = force_random_token_gates(net, rate, batch, tokens, seed=1)
            if rate == 1.0:  # exactness spot check: the static layers
                with torch.no_grad():
                    check_exact(static_encoder(net, t),
                                dynamic_encoder(net, t), 1e-4)
            tm = bench_pair(lambda u: static_encoder(net, u),
                            lambda u: dynamic_encoder(net, u), t, warmup,
                            repeats)
            st, dy = tm.static_ms, tm.dynamic_ms
            with torch.no_grad():
                dynamic_encoder(net, t)
            p_dyn = pred.predict_backbone(geoms, dens, 128).total_ms
            row = dict(arch=name, batch=batch, size=size,
                       paradigm=paradigm, threads=torch.get_num_threads(),
                       rate=rate,
                       gate_mean=sum(dens) / len(dens),
                       flops_rate=encoder_flops_rate(net), stem_ms=stem_ms,
                       static_ms=st, dynamic_ms=dy, speedup=tm.speedup,
                       cpu_speedup=tm.cpu_speedup,
                       whole_speedup=(stem_ms + st) / (stem_ms + dy),
                       predicted_ratio=p_dyn / p_static)
            rows.append(row)
            print(fmt_row(row), flush=True)
    return rows


def fmt_row(r: Dict) -> str:
    """One markdown row of :data:`HEADER` for a row of :func:`run`."""
    return table_row(COLUMNS, r)


def benchmark_t2t_vit(arch: Optional[str] = None,
                      paradigms: Sequence[str] = PARADIGMS,
                      rates: Sequence[float] = (0.25, 0.5, 1.0),
                      batch: int = 8, size: Optional[int] = None,
                      threads: Union[int, Sequence[int], None] = None,
                      warmup: int = 1, repeats: int = 5, tiny: bool = False,
                      json_path: Optional[str] = None) -> List[Dict]:
    """The LAUD-T2T-ViT benchmark of the command line (``tiny``: the
    :data:`TINY` model instead of ``arch`` at ``size``, default
    't2t-vit-t-14' at 224 px): :func:`run` at each thread count of
    ``threads`` (an int or a list; None: 1 and every logical CPU) as one
    printed table and, with ``json_path``, a JSON file of its rows.

    Raises:
        ValueError: an option out of range, an unknown arch, or ``arch`` /
            ``size`` with ``tiny`` (names the option and value).
    """
    if tiny and (arch is not None or size is not None):
        raise ValueError(f'--arch={arch!r} / --size={size!r} cannot be used '
                         f'with --tiny (a 2-layer, 64-dim model on 64 px)')
    arch = 't2t-vit-t-14' if arch is None else arch
    size = 224 if size is None else size
    check_options(rates, warmup=warmup, repeats=repeats, batch=batch,
                  size=size)
    if not tiny and arch not in T2T_VIT_ARCHS:
        raise ValueError(f'--arch={arch!r} is not one of '
                         f'{sorted(T2T_VIT_ARCHS)}')
    return timing_table(
        lambda t: run(arch, paradigms, rates, batch, size, warmup, repeats,
                      tiny), COLUMNS, threads, json_path, backend=False)
