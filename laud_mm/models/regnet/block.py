"""The RegNetY mask-and-compute block: spatial, channel and layer skipping
(and the static block when no paradigm is set) for RegNetY-400MF / 800MF.

A RegNetY block (Radosavovic et al. 2020, torchvision ``ResBottleneckBlock``
with bottleneck ratio 1) is

    x -> conv1 1x1 (C_in -> w) -> BN -> ReLU
      -> conv2 3x3, stride s, groups w / group_width -> BN -> ReLU
      -> SE (global pool -> 1x1 w -> se -> ReLU -> 1x1 se -> w -> sigmoid,
             channel-wise scale), se = round(0.25 * C_in)
      -> conv3 1x1 (w -> C_out) -> BN
      -> + shortcut (identity, or 1x1 stride-s conv + BN) -> ReLU

Where the LAUD masks act (the same places as in the ResNet bottleneck,
:class:`laud_mm.models.resnet.block.LAUDBottleneck`, docs/method.md sec. 1):

- spatial (patch side S in output pixels): on the conv3+BN output before the
  residual add; conv1 needs the mask dilated by conv2's 3x3 kernel (mapped to
  the input grid in a stride-2 block).
- channel (G channels per gate): on the width after BN+ReLU of conv1 and of
  conv2, exact zeros. conv2 is a grouped conv; the dynamic path runs whole
  conv groups (those holding at least one kept channel), any G dividing the
  width is allowed (see :mod:`laud_mm.models.regnet.dynamic`).
- layer: one gate per sample on the conv3+BN output: a skipped block is
  ``relu(shortcut(x))``, SE included in the skipped work.

**SE over the active region** (the definition the dynamic path matches):

- spatial: the SE squeeze is the mean of the conv2 output (after BN+ReLU)
  over the *kept output pixels* of each sample,
  ``z[n, c] = sum_p m[n, p] h[n, c, p] / max(1, sum_p m[n, p])`` with the
  pixel mask m at the block's output size (the nearest-upsampled patch
  gates, :func:`laud_mm.models.layers.masks.expand_spatial_gate`); a sample with
  no kept pixel gets z = 0 (its branch output is masked anyway). With every
  gate on this is the ordinary global average pool.
- channel: the ordinary global average pool; skipped channels are exact
  zeros, so the squeeze FC reads only the kept channels and only the kept
  channels' excitations are used.
- layer: skipped with the block.

Source: paper sec. 4.3.2 (LAUD-RegNetY-400MF / 800MF: layer skipping also skips
the memory-bound SE), docs/method.md sec. 1 (stage widths, depths, group
widths, SE squeeze 0.25 x block input width, bottleneck ratio 1).
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp

from ...structures.geometry import PARADIGMS, BlockGeometry, block_out_hw
from ..layers.block import LAUDBlockMixin
from ..layers.forward_plan import block_plan
from ..layers.maskers import build_masker
from ..layers.masks import (conv_gate_densities, expand_channel_gate,
                            expand_spatial_gate, masked_avg_pool)
from . import flops  # noqa: F401  (registers the RegNetY FLOPs count)
from .dynamic import (RegNetYPlan, dynamic_regnety_forward, sequence_plan,
                      static_regnety_forward)


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation as torchvision's (``fc1``/``fc2`` are 1x1 convs
    with bias, ReLU, sigmoid), with an optional pixel mask for the squeeze.

    Args:
        channels: C, channels of the features it rescales.
        squeeze_channels: hidden width (RegNetY: round(0.25 * C_in of the
            block)).

    Shapes:
        forward(h (N, C, H, W), mask (N, 1, H, W) or None) -> (N, C, H, W).

    Raises:
        ValueError: if a width is not a positive integer.
    """

    def __init__(self, channels: int, squeeze_channels: int):
        super().__init__()
        for k, v in (('channels', channels),
                     ('squeeze_channels', squeeze_channels)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f'SqueezeExcitation: {k}={v!r} must be a '
                                 f'positive integer')
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)

    def scale(self, pooled: torch.Tensor) -> torch.Tensor:
        """(N, C, 1, 1) squeeze -> (N, C, 1, 1) sigmoid excitation."""
        return torch.sigmoid(self.fc2(F.relu(self.fc1(pooled))))

    def forward(self, h: torch.Tensor,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.scale(masked_avg_pool(h, mask)) * h


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1
             ) -> Tuple[nn.Conv2d, nn.BatchNorm2d]:
    conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
    return conv, nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)


class LAUDRegNetYBlock(LAUDBlockMixin, nn.Module):
    """RegNetY block with a masker (parameter names ``conv1, bn1, conv2,
    bn2, se.fc1, se.fc2, conv3, bn3, downsample.0, downsample.1, masker.*``;
    :func:`laud_mm.models.regnet.convert.convert_torchvision_regnety`
    maps torchvision's names to them).

    Args:
        in_channels: C_in of the block input.
        out_channels: C_out = bottleneck width w (bottleneck ratio 1).
        stride: stride of conv2 and of the downsample path (1 or 2).
        group_width: channels per conv group of conv2 (must divide w).
        se_ratio: SE squeeze width = round(se_ratio * C_in) (0.25).
        paradigm: 'spatial', 'channel', 'layer' or None (static block).
        granularity: S (spatial) or G (channel); None for layer / static.
        with_cp: gradient checkpointing of the residual branch in training.

    Shapes:
        forward: (N, C_in, H, W) -> (N, C_out, H_out, W_out), H_out =
        floor((H - 1) / stride) + 1.

    Attributes:
        last_stats: after each forward, a dict with 'flops' (N,) FLOPs
            computed per sample (differentiable in training), 'dense' (float)
            dense FLOPs per sample, 'density' (N,) the mask density (kept
            pixels / channels / layer gate), 'gate' the raw gates and
            'geometry' the :class:`BlockGeometry` (``kind='regnety'``), as
            :class:`~laud_mm.models.resnet.block.LAUDBottleneck`.
        dynamic_inference: when True and not training, run the dynamic
            (skip-the-work) path of :mod:`laud_mm.models.regnet.dynamic`.

    Raises:
        ValueError: unknown paradigm, a group width not dividing the width,
            a granularity missing / given for the wrong paradigm, or a G not
            dividing the width (messages name the key and value).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 group_width: int = 8, se_ratio: float = 0.25,
                 paradigm: Optional[str] = None,
                 granularity: Optional[int] = None, with_cp: bool = False):
        super().__init__()
        if paradigm is not None and paradigm not in PARADIGMS:
            raise ValueError(f'LAUDRegNetYBlock: paradigm={paradigm!r} is not '
                             f'one of {PARADIGMS} or None')
        if stride not in (1, 2):
            raise ValueError(f'LAUDRegNetYBlock: stride={stride!r} must be 1 '
                             f'or 2')
        w = out_channels
        if isinstance(group_width, bool) or not isinstance(group_width, int) \
                or group_width < 1 or w % group_width:
            raise ValueError(f'LAUDRegNetYBlock: group_width={group_width!r} '
                             f'must be a positive divisor of the width {w}')
        if paradigm in ('spatial', 'channel'):
            if isinstance(granularity, bool) or \
                    not isinstance(granularity, int) or granularity < 1:
                raise ValueError(f'LAUDRegNetYBlock: granularity='
                                 f'{granularity!r} must be a positive integer '
                                 f'for paradigm={paradigm!r}')
            if paradigm == 'channel' and w % granularity:
                raise ValueError(f'LAUDRegNetYBlock: granularity G='
                                 f'{granularity} must divide the width {w}')
        elif granularity is not None:
            raise ValueError(f'LAUDRegNetYBlock: granularity={granularity!r} '
                             f'is only used with paradigm spatial/channel, '
                             f'not paradigm={paradigm!r}')
        se_channels = int(round(se_ratio * in_channels))
        self.conv1, self.bn1 = _conv_bn(in_channels, w, 1)
        self.conv2, self.bn2 = _conv_bn(w, w, 3, stride, w // group_width)
        self.se = SqueezeExcitation(w, se_channels) if se_channels > 0 \
            else None
        self.conv3, self.bn3 = _conv_bn(w, out_channels, 1)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                *_conv_bn(in_channels, out_channels, 1, stride))
        self.relu = nn.ReLU(inplace=True)
        self.stride = stride
        self.group_width = group_width
        self.with_cp = with_cp
        self.init_laud_block(paradigm, granularity, None if paradigm is None
                             else build_masker(paradigm, in_channels, w,
                                               granularity))

    # ------------------------------------------------------------- geometry
    def make_geometry(self, in_hw: Tuple[int, int]) -> BlockGeometry:
        """:class:`BlockGeometry` (``kind='regnety'``) for an input size
        (H, W) in pixels."""
        return BlockGeometry(
            stage=self.stage, index=self.index,
            in_channels=self.conv1.in_channels,
            width=self.conv1.out_channels,
            out_channels=self.conv3.out_channels, stride=self.stride,
            in_hw=in_hw, out_hw=block_out_hw(in_hw, self.stride),
            has_downsample=self.downsample is not None,
            paradigm=self.paradigm, granularity=self.granularity,
            kind='regnety', groups=self.conv2.groups,
            se_channels=0 if self.se is None else self.se.fc1.out_channels)

    def gate_densities(self, gate: torch.Tensor, geom: BlockGeometry):
        """(density, conv1_density, conv2_density) of float gates: the
        convolutional densities (:func:`~laud_mm.models.layers.masks.
        conv_gate_densities`) and, for channel blocks, the fraction of
        conv2's conv groups holding a kept channel."""
        density, conv1 = conv_gate_densities(gate, geom)
        conv2 = self.active_conv_groups(gate).mean(dim=1) \
            if self.paradigm == 'channel' else None
        return density, conv1, conv2

    # -------------------------------------------------------------- forward
    def _branch(self, x: torch.Tensor, channel_mask: Optional[torch.Tensor],
                pixel_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """conv1-bn1-relu-conv2-bn2-relu-SE-conv3-bn3; ``channel_mask``
        (N, w, 1, 1) zeroes channels after both ReLUs; ``pixel_mask``
        (N, 1, H_out, W_out) restricts the SE squeeze to the kept pixels."""
        out = self.relu(self.bn1(self.conv1(x)))
        if channel_mask is not None:
            out = out * channel_mask
        out = self.relu(self.bn2(self.conv2(out)))
        if channel_mask is not None:
            out = out * channel_mask
        if self.se is not None:
            out = self.se(out, pixel_mask)
        return self.bn3(self.conv3(out))

    def static_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The dense block, masker ignored, BN folded (eval; statistics
        untouched): :func:`static_regnety_forward`."""
        return static_regnety_forward(self, x)

    def sequence_plan(self, in_shape: Tuple[int, ...], like: torch.Tensor,
                      nxt, nxt_plan) -> Optional[RegNetYPlan]:
        """This block's plan inside a planned block sequence
        (:func:`laud_mm.models.regnet.dynamic.sequence_plan`)."""
        return sequence_plan(self, in_shape, like, nxt, nxt_plan)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # first: the first block's call plans the pass, even a static one
        plan = block_plan(self, x)
        if self.static_mode:
            return self.static_forward(x)
        if plan is not None:  # dynamic inference planned for the forward
            out, gate = plan.path(self, x, plan.geom, plan.fb)
            self.record_stats(gate, plan.geom, plan.op_flops)
            return out
        if x.dim() != 4:
            raise ValueError(f'LAUDRegNetYBlock: x must be (N, C, H, W), got '
                             f'{tuple(x.shape)}')
        in_hw = tuple(x.shape[-2:])
        geom = self.geometry(in_hw)
        op_flops = self.op_flops(in_hw)
        n = x.shape[0]
        if self.paradigm is None:
            out = self._static(x)
            self.record_static_stats(n, x.device, geom, op_flops)
            return out
        if self.dynamic_inference and not self.training:
            out, gate = dynamic_regnety_forward(self, x, geom)
        else:
            gate = self.masker(x, geom.out_hw)
            out = self._masked_dense(x, gate, geom)
        self.record_stats(gate, geom, op_flops)
        return out

    def _static(self, x: torch.Tensor) -> torch.Tensor:
        """torchvision's block, op for op (bitwise the same result)."""
        def branch(x):
            return self._branch(x, None, None)
        if self.with_cp and x.requires_grad:
            out = cp.checkpoint(branch, x, use_reentrant=False)
        else:
            out = branch(x)
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(identity + out)

    def _masked_dense(self, x: torch.Tensor, gate: torch.Tensor,
                      geom: BlockGeometry) -> torch.Tensor:
        """Dense compute times the mask (training and masked-dense eval)."""
        channel_mask = pixel_mask = None
        if self.paradigm == 'channel':
            channel_mask = expand_channel_gate(gate, self.granularity)
        elif self.paradigm == 'spatial':
            pixel_mask = expand_spatial_gate(gate, self.granularity,
                                             geom.out_hw)

        def branch(x):
            return self._branch(x, channel_mask, pixel_mask)

        if self.with_cp and x.requires_grad:
            out = cp.checkpoint(branch, x, use_reentrant=False)
        else:
            out = branch(x)
        if pixel_mask is not None:
            out = out * pixel_mask
        elif self.paradigm == 'layer':
            out = out * gate[:, None, None, None]
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(identity + out)

    def active_conv_groups(self, gate: torch.Tensor) -> torch.Tensor:
        """Channel blocks: (N, groups) 0/1 (differentiable) - conv2's conv
        groups holding at least one kept channel (the groups the dynamic
        path computes)."""
        cm = expand_channel_gate(gate, self.granularity)[:, :, 0, 0]
        return cm.view(cm.shape[0], self.conv2.groups, -1).amax(dim=2)
