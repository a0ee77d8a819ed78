"""The mask-and-compute bottleneck: one block for spatial, channel and layer
skipping (and the static block when no paradigm is set).

Training and masked-dense evaluation compute densely and multiply by the mask;
dynamic inference (:mod:`laud_mm.models.resnet.dynamic`) computes only what the gates
keep and returns the same function. Both record per-sample FLOPs for the
sparsity loss and the latency predictor.

Source: paper sec. 3.2 (mask-and-compute), fig. 2; docs/method.md sec. 1
(where each mask acts; masked channels are exact zeros, masked after BN+ReLU;
the downsample path is always dense).
"""
from typing import Optional, Tuple

import torch
import torch.utils.checkpoint as cp
from mmdet.models.backbones.resnet import Bottleneck

from ...structures.geometry import PARADIGMS, BlockGeometry, block_out_hw
from ..layers.block import LAUDBlockMixin
from ..layers.maskers import build_masker
from ..layers.masks import (conv_gate_densities, expand_channel_gate,
                            expand_spatial_gate)
from . import flops  # noqa: F401  (registers the bottleneck's FLOPs count)
from ..layers.forward_plan import block_plan
from .dynamic import (BottleneckPlan, dynamic_bottleneck_forward,
                      sequence_plan, static_bottleneck_forward)


class LAUDBottleneck(LAUDBlockMixin, Bottleneck):
    """ResNet bottleneck with a masker (mmdet's ``Bottleneck`` parameters and
    names, so static ResNet checkpoints load unchanged).

    Args:
        inplanes, planes, stride, dilation, downsample, style, with_cp,
            conv_cfg, norm_cfg, dcn, plugins, init_cfg: as mmdet's Bottleneck.
        paradigm: 'spatial', 'channel', 'layer' or None (static block).
        granularity: S (spatial) or G (channel); None for layer / static.

    Shapes:
        forward: (N, inplanes, H, W) -> (N, 4 * planes, H_out, W_out).

    Attributes:
        last_stats: after each forward, a dict with 'flops' (N,) FLOPs
            computed per sample (differentiable in training), 'dense' (float)
            the dense FLOPs per sample, 'density' (N,) the mask density (kept
            fraction of pixels / channel groups / the layer gate), 'gate' the
            raw gates and 'geometry' the :class:`BlockGeometry`.
        dynamic_inference: when True and not training, run the dynamic
            (skip-the-work) path of :mod:`laud_mm.models.resnet.dynamic`.

    Raises:
        ValueError: unsupported combination (a paradigm with
            style='caffe'; spatial / channel with DCN or plugins; unknown
            paradigm; G not dividing the width; a granularity with
            layer / static), see the options table of
            :class:`~laud_mm.models.resnet.backbone.LAUDResNet`.
    """

    def __init__(self, inplanes: int, planes: int, *args,
                 paradigm: Optional[str] = None,
                 granularity: Optional[int] = None, **kwargs):
        super().__init__(inplanes, planes, *args, **kwargs)
        if paradigm is not None and paradigm not in PARADIGMS:
            raise ValueError(f'paradigm={paradigm!r} is not one of {PARADIGMS}')
        if paradigm in (None, 'layer') and granularity is not None:
            raise ValueError(f'LAUDBottleneck: granularity={granularity!r} is '
                             f'only used with paradigm spatial/channel, not '
                             f'paradigm={paradigm!r}')
        if paradigm is not None:
            if self.style != 'pytorch':
                raise ValueError(
                    f"style={self.style!r} is not supported with "
                    f"paradigm={paradigm!r}: LAUD blocks need "
                    f"style='pytorch' (conv2 carries the stride)")
            if paradigm != 'layer' and (self.with_dcn or self.with_plugins):
                key = 'dcn' if self.with_dcn else 'plugins'
                raise ValueError(
                    f'{key}={getattr(self, key)!r} is not supported with '
                    f'paradigm={paradigm!r} (only with paradigm=\'layer\', '
                    f'which computes a block whole or skips it)')
        self.init_laud_block(paradigm, granularity, None if paradigm is None
                             else build_masker(paradigm, inplanes, planes,
                                               granularity))

    # ------------------------------------------------------------- geometry
    def make_geometry(self, in_hw: Tuple[int, int]) -> BlockGeometry:
        """:class:`BlockGeometry` of this block for an input size (H, W)."""
        return BlockGeometry(
            stage=self.stage, index=self.index,
            in_channels=self.conv1.in_channels, width=self.conv1.out_channels,
            out_channels=self.conv3.out_channels, stride=self.conv2_stride,
            in_hw=in_hw,
            out_hw=block_out_hw(in_hw, self.conv2_stride, self.dilation),
            has_downsample=self.downsample is not None,
            paradigm=self.paradigm, granularity=self.granularity,
            dilation=self.dilation)

    def gate_densities(self, gate: torch.Tensor, geom: BlockGeometry):
        """(density, conv1_density, None) of float gates, see
        :func:`~laud_mm.models.layers.masks.conv_gate_densities`."""
        return conv_gate_densities(gate, geom) + (None,)

    # -------------------------------------------------------------- forward
    def _branch(self, x: torch.Tensor, channel_mask: Optional[torch.Tensor]
                ) -> torch.Tensor:
        """conv1-bn1-relu-conv2-bn2-relu-conv3-bn3 (with mmdet's plugins
        after conv1 / conv2 / conv3, and its DCN as conv2, when configured),
        masking the bottleneck width with ``channel_mask`` (N, width, 1, 1)
        when given."""
        out = self.relu(self.norm1(self.conv1(x)))
        if self.with_plugins:  # layer paradigm only (see __init__)
            out = self.forward_plugin(out, self.after_conv1_plugin_names)
        if channel_mask is not None:
            out = out * channel_mask
        out = self.relu(self.norm2(self.conv2(out)))
        if self.with_plugins:
            out = self.forward_plugin(out, self.after_conv2_plugin_names)
        if channel_mask is not None:
            out = out * channel_mask
        out = self.norm3(self.conv3(out))
        if self.with_plugins:
            out = self.forward_plugin(out, self.after_conv3_plugin_names)
        return out

    def static_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The dense block, masker ignored, BN folded (eval; statistics
        untouched): :func:`static_bottleneck_forward`."""
        return static_bottleneck_forward(self, x)

    def sequence_plan(self, in_shape: Tuple[int, ...], like: torch.Tensor,
                      nxt, nxt_plan) -> Optional[BottleneckPlan]:
        """This block's plan inside a planned block sequence
        (:func:`laud_mm.models.resnet.dynamic.sequence_plan`)."""
        return sequence_plan(self, in_shape, like, nxt, nxt_plan)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # first: the first block's call plans the pass, even a static one
        plan = block_plan(self, x)
        if self.static_mode:
            return self.static_forward(x)
        if plan is not None:  # dynamic inference planned for the forward
            out, gate = plan.path(self, x, plan)
            self.record_stats(gate, plan.geom, plan.op_flops)
            return out
        in_hw = tuple(x.shape[-2:])
        geom = self.geometry(in_hw)
        op_flops = self.op_flops(in_hw)
        n = x.shape[0]
        if self.paradigm is None:
            out = super().forward(x)
            self.record_static_stats(n, x.device, geom, op_flops)
            return out

        if self.dynamic_inference and not self.training:
            # computes the gate itself (the spatial masker is fused into conv1)
            out, gate = dynamic_bottleneck_forward(self, x, geom)
        else:
            gate = self.masker(x, geom.out_hw)
            out = self._masked_dense(x, gate, geom)
        self.record_stats(gate, geom, op_flops)
        return out

    def _masked_dense(self, x: torch.Tensor, gate: torch.Tensor,
                      geom: BlockGeometry) -> torch.Tensor:
        """Dense compute times the mask (training and masked-dense eval)."""
        channel_mask = expand_channel_gate(gate, self.granularity) \
            if self.paradigm == 'channel' else None

        def branch(x):
            return self._branch(x, channel_mask)

        if self.with_cp and x.requires_grad:
            out = cp.checkpoint(branch, x, use_reentrant=False)
        else:
            out = branch(x)
        if self.paradigm == 'spatial':
            out = out * expand_spatial_gate(gate, self.granularity, geom.out_hw)
        elif self.paradigm == 'layer':
            out = out * gate[:, None, None, None]
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)
