"""The BN-folded stem of a CNN backbone at inference.

Dynamic inference runs every block on BN-folded convolutions
(:mod:`.folding`); the static stem in front of them (ResNet's 7 x 7 conv or
deep stem, RegNet's 3 x 3 conv) ran its BatchNorm as a separate pass over
its output, a full read and write of the largest map of the network (8 x 64
x 112 x 112 for 8 images at 224 px), which the static network a user
deploys folds away. When the backbone's forward folds BN (dynamic
inference, or :meth:`~.backbone.LAUDBackboneMixin.static_forward`, the
static reference it is timed against), the stem's conv + BN + ReLU layers
run as one convolution with the folded weights and an in-place ReLU each
(:class:`FoldedStem`, cached on the backbone and refreshed when a weight or
statistic changes: :func:`~.folding.cached_fold`). Its output equals the
upstream stem's up to float rounding (the BN scale applied to the weights
instead of the output).

Source: standard inference-time BN folding; paper sec. 3.4 (convolution +
BN + ReLU as one operator) and sec. 4 (the stem is part of the measured
backbone latency).
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .dynamic import relu_pooled_
from .folding import LayoutWeight, cached_fold, fold_conv_bn

#: attribute of the backbone that caches its folded stem
_ATTR = '_laud_folded_stem'


def foldable_stem(layers: Sequence[Tuple[nn.Module, nn.Module]]) -> bool:
    """Whether a stem of (conv, norm) pairs can be folded.

    Args:
        layers: the stem's (conv, norm) pairs in order.

    Returns:
        True for at least one pair, each a plain ``nn.Conv2d`` with zero
        padding followed by a BatchNorm with running statistics; False
        otherwise (mmcv's weight-standardised convolutions, GN, an empty
        list).
    """
    return bool(layers) and all(
        type(conv) is nn.Conv2d and conv.padding_mode == 'zeros' and
        isinstance(norm, nn.modules.batchnorm._BatchNorm) and
        norm.track_running_stats for conv, norm in layers)


class FoldedStem:
    """The conv + BN + ReLU layers of a stem as folded convolutions.

    Args:
        layers: the stem's (conv, norm) pairs in order, each followed by a
            ReLU in the stem (checked by :func:`foldable_stem`).

    Attributes:
        convs: per layer (weight (C_out, C_in / groups, k, k) as a
            :class:`~.folding.LayoutWeight` (run in its input's memory
            format), bias (C_out,), stride, padding, dilation, groups), BN
            folded (:func:`~.folding.fold_conv_bn`), detached.

    Source: standard BN folding; paper sec. 3.4.
    """

    def __init__(self, layers: Sequence[Tuple[nn.Conv2d, nn.Module]]):
        self.convs = []
        for conv, norm in layers:
            w, b = fold_conv_bn(conv, norm)
            self.convs.append((LayoutWeight(w), b, conv.stride,
                               conv.padding, conv.dilation, conv.groups))

    def __call__(self, x: torch.Tensor, pooled: bool = False
                 ) -> torch.Tensor:
        """(N, C_in, H, W) images -> (N, C_out, H', W') ReLU output of the
        last layer, in x's memory format; with ``pooled`` the last ReLU
        also records the output's channel means for the first block's
        layer / channel masker, in the same pass
        (:func:`~.dynamic.relu_pooled_`)."""
        last = len(self.convs) - 1
        for i, (w, b, stride, padding, dilation, groups) in \
                enumerate(self.convs):
            x = F.conv2d(x, w.like(x), b, stride, padding, dilation,
                         groups)
            x = relu_pooled_(x) if pooled and i == last else x.relu_()
        return x


def folded_stem(backbone: nn.Module,
                layers: List[Tuple[nn.Module, nn.Module]]
                ) -> Optional[FoldedStem]:
    """The backbone's :class:`FoldedStem` of ``layers``, cached on it; None
    when a pair cannot be folded (:func:`foldable_stem`: the forward then
    runs the upstream stem).

    Args:
        backbone: the LAUD backbone owning the stem.
        layers: the stem's (conv, norm) pairs in order.

    Returns:
        the cached :class:`FoldedStem` (refolded when a parameter or
        buffer of ``layers`` changed: :func:`~.folding.cached_fold`), or
        None.

    Source: paper sec. 3.4.
    """
    if not foldable_stem(layers):
        return None
    parts = [m for pair in layers for m in pair]
    return cached_fold(backbone, lambda _: FoldedStem(layers), _ATTR,
                       parts=parts)
