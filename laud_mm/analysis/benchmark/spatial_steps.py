"""Where a LAUD-ResNet spatial block's dynamic time goes: the CPU time of
each step of its sparse path next to the static block's convolutions
(``tools/analysis_tools/benchmark_latency.py --spatial-breakdown``)."""
from functools import partial
from typing import Callable, Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F

from laud_mm.models.layers.backbone import layout_name
from laud_mm.models.resnet.dynamic import static_bottleneck_forward

from ..forced_gates import force_random_gates
from ..timing import cpu_ms, static_inputs


def spatial_breakdown(net, stem: Callable, batch: int, block_rate: float,
                      rate_mode: str, repeats: int,
                      hw: Tuple[int, int] = (224, 224)) -> List[Dict]:
    """Per spatial block of a LAUD-ResNet (gates forced at ``block_rate``
    on ``batch`` images of ``hw``), the CPU time of each step of the sparse
    path (conv1 dense, gather with halo - or, in stride-2 blocks with few
    patches, conv1 on the gathered input windows, ``window_conv1``, both in
    one step -, conv2 + conv3 of the patches, fused scatter-add + ReLU in
    place as in the backbone) next to the static block's conv1 and conv2 +
    conv3, the block on that path (``SPATIAL_FUSED_CPU`` off), the fused
    CPU kernel's call alone (``laud_mm.ops.spatial_branch_add_relu``, in
    place as in the backbone) with the masker it runs on its own, and the
    block as the dynamic path runs it. Blocks the dense fallback runs are
    skipped.
    Each step runs in the memory format its network is deployed in, as the
    whole-backbone rows and ``--per-block`` time them: the static block
    and its steps in the faster of the formats of
    :data:`~laud_mm.models.layers.backbone.STATIC_LAYOUTS` (the static
    block timed in each, per block, one format after the other), the
    masker, the fused kernel and the block as it runs in
    ``net.dynamic_memory_format`` (channels_last where the fused CPU
    kernels run); the gather / scatter steps and the block on that path
    in NCHW, the only format those ops take (with ``SPATIAL_FUSED_CPU``
    off the backbone runs NCHW).

    Args:
        net: a spatial :class:`~laud_mm.LAUDResNet` with
            ``dynamic_inference=True``, eval mode (its gates are forced).
        stem: its BN-folded stem (callable).
        batch: images.
        block_rate: activation rate of the forced gates.
        rate_mode: 'flops' or 'density' (see
            :func:`~laud_mm.analysis.forced_gates.force_random_gates`).
        repeats: timed calls per step (median CPU time, 1 warm-up call).
        hw: input size (H, W).

    Returns:
        one dict per block: block, threads (torch's), S, density (active
        patch fraction), windows (window_conv1 used), static_layout (the
        static block's faster format, its steps timed in it),
        dynamic_layout (the format of the masker, fused and dynamic_block
        steps), static / dynamic step and block times in ms
        (gather_block: the gather / scatter path; masker, fused: the fused
        path's steps; dynamic_block: the block as it runs).

    Raises:
        ValueError: ``hw`` not a pair of positive sizes.
    """
    import laud_mm.ops.policy as policy
    from laud_mm.models.layers.spatial_logit_record import spatial_gate
    from laud_mm.models.resnet.dynamic import (_gather, _scatter,
                                               _spatial_branch, folded,
                                               spatial_patch_convs,
                                               window_conv1)
    from laud_mm.ops.policy import uses_window_conv1
    if len(hw) != 2 or min(hw) < 1:
        raise ValueError(f'hw={hw!r} must be (H, W), positive')
    n = batch
    force_random_gates(net, block_rate, n, hw, seed=1, mode=rate_mode)

    def ms(fn):
        return cpu_ms(fn, warmup=1, repeats=repeats)
    out = []
    with torch.no_grad():
        image = torch.randn(n, 3, *hw)
        dyn_fmt = net.dynamic_memory_format(image)
        t = stem(image)
        for blk in net.blocks:
            x = t
            t = static_bottleneck_forward(blk, x)
            gate = blk.masker.forced_gate
            d = float((gate > 0.5).float().mean())
            if d == 0 or d >= policy.SPATIAL_DENSE_THRESHOLD:
                continue
            fb, s = folded(blk), blk.granularity
            width = fb.w1.shape[0]
            idx = (gate > 0.5).nonzero()
            h1 = F.conv2d(x, fb.w1, fb.b1)
            win = _gather(h1, idx, s, fb.stride, fb.dilation, width, True)
            y = spatial_patch_convs(fb, win, s)
            ident = fb.shortcut(x)
            buf = ident.clone()
            windows = uses_window_conv1(s, fb.stride, fb.dilation,
                                        idx.shape[0], n * x[0, 0].numel())
            if windows:  # window_conv1: conv1 and the gather in one step
                conv1 = ms(lambda: window_conv1(fb, x, idx, s))
                gather = 0.
            else:
                conv1 = ms(lambda: F.conv2d(x, fb.w1, fb.b1))
                gather = ms(lambda: _gather(h1, idx, s, fb.stride,
                                            fb.dilation, width, True))
            # the static block in each format, its steps in the faster
            ins = static_inputs(x)
            static = {k: ms(partial(static_bottleneck_forward, blk, v))
                      for k, v in ins.items()}
            layout = min(static, key=static.get)
            xs = ins[layout]
            h1s = F.conv2d(xs, fb.w1, fb.b1).relu_()
            row = dict(
                block=f'{blk.stage}.{blk.index}',
                threads=torch.get_num_threads(), S=s, density=d,
                windows=windows, static_layout=layout,
                dynamic_layout=layout_name(dyn_fmt),
                static_conv1=ms(lambda: F.conv2d(xs, fb.w1, fb.b1).relu_()),
                static_conv23=ms(lambda: F.conv2d(
                    fb.conv2(h1s).relu_(), fb.w3, fb.b3)),
                static_block=static[layout],
                conv1=conv1, gather=gather,
                patch_convs=ms(lambda: spatial_patch_convs(fb, win, s)),
                # in place, as in the backbone: into the downsample output,
                # or into the owned input (identity_nonneg) of an identity
                # block (a copy here, made once)
                scatter=ms(lambda: _scatter(buf, y, idx, (s, s), True, None,
                                            ident is x)))
            prev = policy.SPATIAL_FUSED_CPU
            try:  # the same block on the gather / scatter path
                policy.SPATIAL_FUSED_CPU = False
                row['gather_block'] = ms(lambda: blk(x))
            finally:
                policy.SPATIAL_FUSED_CPU = prev
            # the fused kernel (when the block uses it), in place as in the
            # backbone, and the masker it runs on its own, on the input in
            # the dynamic format
            xd = x.contiguous(memory_format=dyn_fmt)
            identd = fb.shortcut(xd)
            row['masker'] = ms(lambda: spatial_gate(fb, blk.masker, xd,
                                                    tuple(gate.shape)))
            fbuf = identd.clone(memory_format=dyn_fmt)
            row['fused'] = ms(lambda: _spatial_branch(
                fbuf, xd, fbuf, idx, fb.spatial_packed(), s,
                fb.stride, fb.dilation, identity_nonneg=identd is xd))
            row['dynamic_block'] = ms(lambda: blk(xd))
            out.append(row)
    return out


def format_spatial_steps(rows: Sequence[Dict]) -> str:
    """Markdown table of :func:`spatial_breakdown` rows (CPU ms; the
    formats the static block and the dynamic block ran in; the last
    column: static / dynamic block)."""
    lines = ['| block | threads | S | active patches | layouts (static / '
             'dynamic) | static conv1 | static conv2+3 '
             '| static block | conv1 | gather | conv2+3 (patches) | '
             'scatter | gather-path block | masker | fused kernel | '
             'dynamic block | static / dynamic |\n'
             '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|'
             '---|---|']
    for r in rows:
        c1 = f"{r['conv1']:.2f} (windows)" if r['windows'] \
            else f"{r['conv1']:.2f}"
        g = '(in conv1)' if r['windows'] else f"{r['gather']:.2f}"
        lines.append(
            f"| {r['block']} | {r['threads']} | {r['S']} | "
            f"{r['density']:.2f} | "
            f"{r['static_layout']} / {r['dynamic_layout']} | "
            f"{r['static_conv1']:.2f} | {r['static_conv23']:.2f} | "
            f"{r['static_block']:.2f} | {c1} | "
            f"{g} | {r['patch_convs']:.2f} | "
            f"{r['scatter']:.2f} | {r['gather_block']:.2f} | "
            f"{r['masker']:.2f} | {r['fused']:.2f} | "
            f"{r['dynamic_block']:.2f} | "
            f"{r['static_block'] / r['dynamic_block']:.2f}x |")
    return '\n'.join(lines)
