"""Load balance of the fused CPU kernels beyond the cores of this machine,
computed without running them: for random masks on every block of a
LAUD-ResNet, the per-thread work of the partition the kernels themselves
build (:mod:`laud_mm.ops.partition`, the extension's own planning code) at
2 - 64 threads.

Masks: every (sample, patch) gate (spatial, S = 4-4-2-1), (sample,
channel group) gate (channel, G = 2) or sample gate (layer) is on with
probability r, drawn independently, so per-sample counts differ as with
learned masks. Each
kernel runs in phases separated by barriers; a block's time is bounded by
the sum over its phases of the busiest thread's work, so the reported
figure is (sum over blocks and phases of the busiest thread's work) /
(sum of the mean work per thread): 1.00 is a perfect split, T means one
of T threads does everything. Channel blocks the dynamic path computes
masked-dense (small maps above ``CHANNEL_DENSE_RATE``) are left out (oneDNN
runs them), so are the static convolutions around the kernels (downsample,
masker). Layer blocks run the fused spatial kernel with a patch per kept
sample (``policy.LAYER_FUSED_CPU``; without it, conv1 and conv3 on
:func:`laud_mm.ops.sample_gemm`, the kept samples' columns split, are the
two phases and conv2 runs on oneDNN); a layer block with every sample
kept runs the static block and one with none computes nothing, so both
are left out: at batch 1 every layer block is (the table prints ``-``).

Command line: ``tools/analysis_tools/simulate_load_balance.py``; table in
docs/benchmarks.md ("Load balance beyond two cores").

Source: LAUDNet paper sec. 3.4 (scheduling); issue #22.
"""
from typing import Dict, List, Sequence, Tuple

import torch

from laud_mm import ops
from laud_mm.ops import policy

#: input of each size key: (batch, (H, W)), as the latency benchmark's
SIZES = {'224': (8, (224, 224)), 'det': (1, (800, 1216))}
#: granularity per paradigm, as the latency benchmark's
GRANULARITY = {'spatial': (4, 4, 2, 1), 'channel': (2, 2, 2, 2),
               'layer': None}


def block_work(g, n: int, rate: float, threads: int,
               gen: torch.Generator) -> Tuple[torch.Tensor, float]:
    """Per-thread work of one block's fused kernel under a random mask.

    Args:
        g: the block's :class:`~laud_mm.structures.geometry.BlockGeometry`
            (paradigm 'spatial', 'channel' or 'layer').
        n: batch size; rate: probability that a gate is on.
        threads: threads of the partition.
        gen: random generator of the mask (drawn once per call).

    Returns:
        ((phases, threads) work of :func:`laud_mm.ops.spatial_partition_work`
        (spatial; layer with ``policy.LAYER_FUSED_CPU``) /
        :func:`~laud_mm.ops.channel_partition_work` / the MACs of
        :func:`~laud_mm.ops.sample_gemm_partition`'s columns (conv1, conv3),
        or an empty (0, threads) tensor where the kernel does not run; the
        mask's density).
    """
    if g.paradigm == 'layer':
        on = torch.rand(n, generator=gen) < rate
        kept = int(on.sum())
        if kept in (0, n):  # the static block, or nothing to compute
            return torch.zeros(0, threads, dtype=torch.float64), kept / n
        if policy.LAYER_FUSED_CPU:  # the fused spatial kernel, a patch
            # (S = the map's side) per kept sample
            idx = torch.zeros(kept, 3, dtype=torch.int64)
            idx[:, 0] = on.nonzero()[:, 0]
            work = ops.spatial_partition_work(
                idx, n, g.in_channels, g.in_hw, g.width, g.out_channels,
                max(g.out_hw), g.stride, g.dilation, threads)
            return work, kept / n
        p_in, p_out = (g.in_hw[0] * g.in_hw[1], g.out_hw[0] * g.out_hw[1])
        work = torch.stack([
            ops.sample_gemm_partition(kept, p_in, threads).double() *
            (g.in_channels * g.width),
            ops.sample_gemm_partition(kept, p_out, threads).double() *
            (g.width * g.out_channels)])
        return work, kept / n
    if g.paradigm == 'spatial':
        s = g.granularity
        gh, gw = -(-g.out_hw[0] // s), -(-g.out_hw[1] // s)
        gate = torch.rand(n, gh, gw, generator=gen) < rate
        idx = gate.nonzero().contiguous()
        work = ops.spatial_partition_work(
            idx, n, g.in_channels, g.in_hw, g.width, g.out_channels, s,
            g.stride, g.dilation, threads)
        return work, float(gate.float().mean())
    groups = g.width // g.granularity
    gate = torch.rand(n, groups, generator=gen) < rate
    keep = gate.repeat_interleave(g.granularity, 1)
    pixels = g.in_hw[0] * g.in_hw[1]
    if pixels < policy.CHANNEL_SMALL_MAP_PIXELS and \
            float(gate.float().mean()) > policy.CHANNEL_DENSE_RATE:
        return torch.zeros(0, threads, dtype=torch.float64), \
            float(gate.float().mean())
    counts = keep.sum(1)
    order = torch.sort((~keep).to(torch.uint8), dim=1, stable=True)[1]
    work = ops.channel_partition_work(
        order.contiguous(), counts, g.in_channels, g.in_hw, g.width,
        g.out_channels, g.stride, g.dilation, g.dilation, threads)
    return work, float(gate.float().mean())


def simulate(depth: int = 50, sizes: Sequence[str] = ('224', 'det'),
             paradigms: Sequence[str] = ('spatial', 'channel', 'layer'),
             rates: Sequence[float] = (0.25, 0.5, 0.75),
             threads: Sequence[int] = (2, 4, 8, 16, 32, 64),
             seeds: int = 3) -> List[Dict]:
    """The load-balance table: one row per (size, paradigm, rate, threads).

    Args:
        depth: ResNet depth.
        sizes: keys of :data:`SIZES`.
        paradigms: among 'spatial', 'channel', 'layer'.
        rates: gate probabilities.
        threads: thread counts.
        seeds: masks drawn per configuration (the figures are their mean;
            the worst block is over all of them).

    Returns:
        dicts: size, batch, hw, paradigm, rate, threads, blocks (blocks on
        the kernel), backbone (sum of phase maxima / sum of phase means
        over the blocks), worst_block (the largest block figure) and
        worst (its block, 'stage.index').

    Raises:
        ValueError: an unknown size or paradigm, a rate outside [0, 1], a
            thread count or ``seeds`` < 1 (names the option).
    """
    from laud_mm.models import resnet_geometries
    for s in sizes:
        if s not in SIZES:
            raise ValueError(f'--sizes: {s!r} is not one of {sorted(SIZES)}')
    for p in paradigms:
        if p not in GRANULARITY:
            raise ValueError(f'--paradigms: {p!r} is not one of '
                             f'{sorted(GRANULARITY)}')
    if any(not 0 <= r <= 1 for r in rates):
        raise ValueError(f'--rates={list(rates)} must lie in [0, 1]')
    if any(t < 1 for t in threads):
        raise ValueError(f'--threads={list(threads)} must be >= 1')
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f'--seeds={seeds!r} must be an integer >= 1')
    rows = []
    for size in sizes:
        n, hw = SIZES[size]
        for paradigm in paradigms:
            geoms, _ = resnet_geometries(depth, hw, paradigm,
                                         GRANULARITY[paradigm])
            for rate in rates:
                for t in threads:
                    figs, worst, used = [], (0., ''), 0
                    for seed in range(seeds):
                        gen = torch.Generator().manual_seed(seed)
                        mx = mean = 0.
                        used = 0
                        for g in geoms:
                            work, _ = block_work(g, n, rate, t, gen)
                            if work.shape[0] == 0:
                                continue
                            used += 1
                            bmx = float(work.max(1).values.sum())
                            bmean = float(work.mean(1).sum())
                            mx, mean = mx + bmx, mean + bmean
                            if bmean > 0:
                                worst = max(worst, (bmx / bmean,
                                                    f'{g.stage}.{g.index}'))
                        figs.append(mx / mean if mean > 0 else 1.)
                    rows.append(dict(size=size, batch=n, hw=hw,
                                     paradigm=paradigm, rate=rate,
                                     threads=t, blocks=used,
                                     backbone=sum(figs) / len(figs),
                                     worst_block=worst[0], worst=worst[1]))
    return rows


def format_table(rows: Sequence[Dict]) -> str:
    """Markdown table of :func:`simulate` rows: one line per (input,
    paradigm, rate), one column per thread count with the backbone figure
    and the worst block's (``backbone / worst``), and the worst blocks at
    the most threads."""
    counts = sorted({r['threads'] for r in rows})
    keys = []
    for r in rows:
        k = (r['size'], r['paradigm'], r['rate'])
        if k not in keys:
            keys.append(k)
    lines = ['| input | paradigm | r | ' + ' | '.join(
        f'{t} threads' for t in counts) + f' | worst block at {counts[-1]} |',
        '|---|---|---|' + '---|' * (len(counts) + 1)]
    for k in keys:
        sel = {r['threads']: r for r in rows
               if (r['size'], r['paradigm'], r['rate']) == k}
        r0 = next(iter(sel.values()))
        cells = ['' if t not in sel else '-' if not sel[t]['blocks'] else
                 f"{sel[t]['backbone']:.2f} / {sel[t]['worst_block']:.2f}"
                 for t in counts]
        last = sel.get(counts[-1], {}).get('worst', '') or '-'
        lines.append(f"| {r0['batch']}x{r0['hw'][0]}x{r0['hw'][1]} | "
                     f"{k[1]} | {k[2]:.2f} | " + ' | '.join(cells) +
                     f' | {last} |')
    return '\n'.join(lines)
