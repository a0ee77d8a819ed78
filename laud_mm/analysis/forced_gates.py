"""Random gate patterns imposed on a LAUD backbone through
``masker.forced_gate``, so that its dynamic path runs at a chosen activation
rate (benchmarks, predictor validation).

- :func:`force_random_gates`: every block of a CNN backbone (LAUD-ResNet,
  LAUD-RegNetY) at the paper's FLOPs-based per-block rate r_i
  (docs/method.md sec. 2) or at a mask density;
- :func:`force_random_token_gates`: every encoder layer of a LAUD-T2T-ViT
  (patch tokens, heads or samples);
- :func:`random_gate`, :func:`gate_shape`, :func:`realised_density`: one
  block's gate of an exact density and the density the latency predictor
  takes for it.
"""
from typing import List, Sequence, Tuple

import torch


def block_rate(blk, gate: torch.Tensor, geom) -> float:
    """FLOPs-based activation rate r_i of one block for a gate pattern:
    FLOPs computed / dense FLOPs, batch mean, incl. masker and downsample
    (docs/method.md sec. 2; the block's own statistics code, which it
    leaves in ``blk.last_stats``)."""
    blk.record_stats(gate, geom, blk.op_flops(geom.in_hw))
    st = blk.last_stats
    return float(st['flops'].mean()) / st['dense']


def _patterns(n: int, m: int, g: torch.Generator) -> torch.Tensor:
    """Per-sample random orders (N, m) of m gates: gate k of sample i is on
    iff its rank < the kept count."""
    return torch.stack([torch.randperm(m, generator=g) for _ in range(n)])


def force_random_gates(net, rate: float, n: int, hw: Tuple[int, int],
                       seed: int, mode: str = 'flops') -> float:
    """Force random gates at activation rate ``rate`` in every block of a
    CNN backbone (``net.blocks``, ``net.block_geometries``,
    ``net.paradigm``).

    mode 'flops' (default): the paper's FLOPs-based rate r_i (FLOPs computed
    / dense FLOPs of the block, incl. masker and dense downsample, conv1 with
    the dilated mask, conv2 with the squared channel density; docs/method.md
    sec. 2): in each block the kept count (patches / groups per sample;
    samples for layer skipping) whose r_i is closest to ``rate``. mode
    'density': the mask density itself (round(rate * gates) kept).

    Layer skipping with batches below 4: (block, sample) gates are switched
    on in random order until the blocks' FLOPs reach ``rate``.

    Args:
        net: a LAUD CNN backbone.
        rate: target activation rate in [0, 1].
        n: batch size of the input the gates are for.
        hw: input size (H, W) in pixels.
        seed: seed of the random patterns.
        mode: 'flops' or 'density'.

    Returns:
        the realised mean over blocks of r_i ('flops') or of the density.

    Raises:
        ValueError: unknown mode.
    """
    if mode not in ('flops', 'density'):
        raise ValueError(f"mode={mode!r} must be 'flops' or 'density'")
    g = torch.Generator().manual_seed(seed)
    geoms = net.block_geometries(hw)
    realised = []
    if net.paradigm == 'layer' and n < 4:
        nb = len(net.blocks)
        order = torch.randperm(nb * n, generator=g)
        gates = torch.zeros(nb * n)
        if mode == 'density':
            gates[order[:round(rate * nb * n)]] = 1
        else:
            fl = [blk.op_flops(geo.in_hw) for blk, geo in zip(net.blocks,
                                                              geoms)]
            dense = n * sum(sum(f.values()) for f in fl)
            fixed = n * sum(f['masker'] + f.get('downsample', 0) for f in fl)
            done = fixed
            for k in order.tolist():
                if done >= rate * dense:
                    break
                f = fl[k // n]
                res = f['conv1'] + f['conv2'] + f['conv3']
                # stop at the count closest to the target
                if abs(done + res - rate * dense) > abs(done - rate * dense):
                    break
                gates[k] = 1
                done += res
        gates = gates.view(nb, n)
        for blk, gate, geo in zip(net.blocks, gates, geoms):
            blk.masker.forced_gate = gate.clone()
            realised.append(block_rate(blk, gate, geo) if mode == 'flops'
                            else float(gate.mean()))
        return sum(realised) / len(realised)
    for blk, geo in zip(net.blocks, geoms):
        if net.paradigm == 'layer':
            shape, m = (n,), n
            ranks = torch.randperm(n, generator=g)[None]  # (1, N)
        else:
            shape = geo.patch_grid if net.paradigm == 'spatial' \
                else (geo.num_groups,)
            m = int(torch.tensor(shape).prod())
            ranks = _patterns(n, m, g)  # (N, m)

        def make(k):
            gate = (ranks < k).float()
            return gate.view(n) if net.paradigm == 'layer' \
                else gate.view(n, *shape)
        if mode == 'density':
            k = round(rate * m)
        else:
            k = min(range(m + 1),
                    key=lambda j: abs(block_rate(blk, make(j), geo) - rate))
        gate = make(k)
        blk.masker.forced_gate = gate
        realised.append(block_rate(blk, gate, geo) if mode == 'flops'
                        else float(gate.mean()))
    return sum(realised) / len(realised)


def force_random_token_gates(net, rate: float, n: int, tokens: int,
                             seed: int) -> List[float]:
    """Force random gates at ``rate`` in every encoder layer of a
    LAUD-T2T-ViT: exactly round(rate x P) of the P patch tokens per sample
    and layer (the class token always kept; 'spatial'), round(rate x H) of
    the H heads ('channel'), round(rate x N) samples per layer ('layer';
    batches below 4: round(rate x N x layers) of all (sample, layer) gates).

    Args:
        net: a :class:`laud_mm.LAUDT2TViT`.
        rate: target mask density in [0, 1].
        n: batch size.
        tokens: tokens of the encoder input (class token included).
        seed: seed of the random patterns.

    Returns:
        the realised mask density per layer (fraction of patch tokens /
        heads / samples).
    """
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


def random_gate(shape: Sequence[int], density: float,
                gen: torch.Generator) -> torch.Tensor:
    """A {0, 1} gate tensor of ``shape`` with exactly round(density * n)
    ones per sample (channel / spatial: shape (N, ...)) or over the batch
    (layer: shape (N,))."""
    if len(shape) == 1:  # layer: (N,)
        n = shape[0]
        k = int(round(density * n))
        g = torch.zeros(n)
        g[torch.randperm(n, generator=gen)[:k]] = 1
        return g
    n = shape[0]
    per = int(torch.tensor(shape[1:]).prod())
    k = int(round(density * per))
    g = torch.zeros(n, per)
    for i in range(n):
        g[i, torch.randperm(per, generator=gen)[:k]] = 1
    return g.view(*shape)


def gate_shape(block, geom, n: int) -> Tuple[int, ...]:
    """Shape of a block's gate for a batch of ``n``: (N, gh, gw) spatial
    (patch grid), (N, G) channel, (N,) layer."""
    if block.paradigm == 'spatial':
        return (n, *geom.patch_grid)
    if block.paradigm == 'channel':
        return (n, geom.num_groups)
    return (n,)


def realised_density(block, geom, gate: torch.Tensor) -> float:
    """The density the predictor takes for a gate: spatial = fraction of
    output pixels kept (partial edge patches counted by their pixels),
    channel = of groups, layer = of samples."""
    if block.paradigm == 'spatial':
        from laud_mm.models.layers.masks import expand_spatial_gate
        return float(expand_spatial_gate(gate, block.granularity,
                                         geom.out_hw).float().mean())
    return float(gate.float().mean())
