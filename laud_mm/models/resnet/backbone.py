"""LAUD-ResNet: mmdet's ResNet with mask-and-compute bottlenecks.

Source: paper sec. 3.2 and 4.1 (LAUD-ResNet-50/101), docs/method.md sec. 1
(paradigms, granularities 4-4-2-1 / 2-2-2-2 / layer).
"""
import re
from collections import defaultdict
from typing import List, Optional, Sequence, Tuple

import torch
from mmdet.models.backbones.resnet import ResNet

from ...ops.max_pool import MaxPool2d
from ...registry import MODELS
from ...structures.geometry import (BlockGeometry, StemGeometry, block_out_hw,
                                    check_paradigm)
from ..layers.backbone import LAUDBackboneMixin, reject_unknown_keys
from ..layers.checkpoint import record_paradigm
from ..layers.dynamic import owned_block_inputs
from . import convert  # noqa: F401  (registers torchvision-cls://)
from .block import LAUDBottleneck

#: blocks per stage of the bottleneck ResNets: mmdet's own table
RESNET_ARCHS = {d: tuple(stages) for d, (block, stages) in
                ResNet.arch_settings.items() if d >= 50}


def _check_options(paradigm: Optional[str], kwargs: dict) -> None:
    """Refuse the mmdet ``ResNet`` options a paradigm does not support (the
    table of :class:`LAUDResNet`), when the model is built.

    Raises:
        ValueError: naming the option, its value and the paradigm.
    """
    if paradigm is None:
        return
    style = kwargs.get('style', 'pytorch')
    if style != 'pytorch':
        raise ValueError(f"LAUDResNet: style={style!r} is not supported with "
                         f"paradigm={paradigm!r}: LAUD blocks need "
                         f"style='pytorch' (conv2 carries the stride, as "
                         f"their FLOPs count and latency model assume)")
    if paradigm == 'layer':
        return
    dcn, stages = kwargs.get('dcn'), kwargs.get('stage_with_dcn', (True,))
    if dcn is not None and any(stages):
        raise ValueError(f'LAUDResNet: dcn={dcn!r} is not supported with '
                         f"paradigm={paradigm!r} (only with paradigm='layer',"
                         f' which computes a block whole or skips it)')
    if kwargs.get('plugins'):
        raise ValueError(f"LAUDResNet: plugins={kwargs['plugins']!r} is not "
                         f'supported with paradigm={paradigm!r} (only with '
                         f"paradigm='layer', which computes a block whole or "
                         f'skips it)')


def _validate(depth, paradigm, granularity, num_stages,
              base_channels=64) -> Optional[tuple]:
    """Check the LAUD-specific config keys; return granularity as a tuple.

    Raises:
        ValueError: naming the offending key and value.
    """
    if depth not in RESNET_ARCHS:
        raise ValueError(f'LAUDResNet: depth={depth!r} is not supported; '
                         f'use one of {sorted(RESNET_ARCHS)}')
    return check_paradigm('LAUDResNet', paradigm, granularity, num_stages,
                          [base_channels * 2 ** i for i in range(num_stages)])


_BLOCK_KEY = re.compile(r'^layer(\d+)\.(\d+)\.')


def _check_checkpoint_structure(module, state_dict, prefix, *args) -> None:
    """load_state_dict pre-hook of :class:`LAUDResNet`: refuse a checkpoint
    whose stages hold another number of blocks (another depth: e.g. an R101
    checkpoint would fill an R50 with its first 6 of 23 layer3 blocks and
    drop the rest, only warning about unexpected keys) or whose tensors have
    other shapes (another width / granularity). Keys missing altogether (a
    static checkpoint without maskers, a detector without backbone weights)
    stay mmengine's business (reported as missing keys).

    Raises:
        ValueError: naming the offending key, its checkpoint and model values.
    """
    ours = {k[len(prefix):]: v for k, v in state_dict.items()
            if k.startswith(prefix)}
    blocks = defaultdict(set)
    for k in ours:
        m = _BLOCK_KEY.match(k)
        if m:
            blocks[int(m.group(1))].add(int(m.group(2)))
    if not blocks:
        return
    model_counts = tuple(len(getattr(module, n)) for n in module.res_layers)
    ckpt_counts = tuple(max(blocks[s + 1]) + 1 if blocks.get(s + 1) else 0
                        for s in range(len(module.res_layers)))
    if ckpt_counts != model_counts or \
            any(s > len(module.res_layers) for s in blocks):
        depth = [d for d, c in RESNET_ARCHS.items() if c == ckpt_counts]
        bad = next(s for s in range(len(model_counts))
                   if ckpt_counts[s] != model_counts[s]) \
            if ckpt_counts != model_counts else len(model_counts)
        raise ValueError(
            f'LAUDResNet(depth={module.depth}): the checkpoint has '
            f'{ckpt_counts} blocks per stage (key prefix {prefix!r}), the '
            f'model {model_counts}: stage {prefix}layer{bad + 1} differs. '
            f'This is a checkpoint of another depth'
            f'{" (depth=%d)" % depth[0] if depth else ""}; set depth to '
            f"match or load another checkpoint (it would half-load)")
    own = module.state_dict()
    bad = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in ours.items()
           if k in own and hasattr(v, 'shape') and
           tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        k, got, want = bad[0]
        raise ValueError(
            f'LAUDResNet(depth={module.depth}, paradigm={module.paradigm!r}, '
            f'granularity={module.granularity!r}): checkpoint tensor '
            f'{prefix}{k} has shape {got}, the model {want} ({len(bad)} '
            f'tensors differ): a checkpoint of another architecture')


@MODELS.register_module()
class LAUDResNet(LAUDBackboneMixin, ResNet):
    """Latency-aware unified dynamic ResNet (bottleneck depths 50/101/152).

    Takes mmdet's ``ResNet`` arguments and keeps its parameter names, so
    mmdet / mmpretrain / torchvision ResNet checkpoints load (the maskers
    stay freshly initialised and are reported as missing keys). Which mmdet
    options each paradigm supports ("masked-dense" = training and
    masked-dense evaluation, not ``dynamic_inference``); unsupported
    combinations are refused when the model is built:

    ======================================  ======  ============  ===========
    mmdet ``ResNet`` option                 static  layer         spatial,
                                                                  channel
    ======================================  ======  ============  ===========
    in_channels, stem_channels,             yes     yes           yes
    base_channels, num_stages, strides,
    dilations, out_indices, deep_stem,
    avg_down, frozen_stages, norm_eval,
    with_cp, zero_init_residual,
    pretrained, init_cfg
    norm_cfg BN / SyncBN                    yes     yes           yes
    norm_cfg GN, LN, ... (not foldable)     yes     yes           masked-dense
    conv_cfg other than a plain Conv2d      yes     yes           masked-dense
    dcn (+ stage_with_dcn)                  yes     yes           no
    plugins                                 yes     yes           no
    style='caffe'                           yes     no            no
    ======================================  ======  ============  ===========

    A layer block with DCN, plugins or an unfoldable norm / conv runs its
    own modules on the kept samples in dynamic inference (no BN folding);
    FLOPs and latency count the bottleneck's three convolutions (not the
    DCN offsets or the plugins). ``style='caffe'`` puts the stride on conv1,
    which the FLOPs count and the latency model do not describe.

    Args:
        depth: 50, 101 or 152.
        paradigm: 'spatial', 'channel', 'layer' or None (static ResNet).
        granularity: per stage, S (spatial, patch side in output pixels, e.g.
            (4, 4, 2, 1)) or G (channel, channels per group, e.g.
            (2, 2, 2, 2)); None for 'layer' and static.
        dynamic_inference: in eval mode, skip the masked-out work with the
            dynamic kernels of :mod:`laud_mm.ops` (same function as the
            masked-dense model; computes no gradients). Default False:
            masked-dense evaluation.
        **kwargs: mmdet ``ResNet`` arguments (see the table).

    Shapes:
        forward: (N, 3, H, W) float, finite -> tuple of (N, 256 * 2^i,
        ~H / 2^(i+2), ...) for i in ``out_indices``. Any H, W >= 32 pixels
        works.

    Raises:
        TypeError: an unknown config key (named with its value and the
            closest known key).
        ValueError: bad ``depth``, ``paradigm`` or ``granularity`` (the
            message names the key and value), G not dividing a stage width,
            an option the paradigm does not support (the table), or
            ``dynamic_inference=True`` with a masked-dense-only option; in
            forward, an input that is not a finite floating-point (N,
            in_channels, H, W) batch.
        RuntimeError: dynamic inference called with gradients enabled.
    """

    arch_settings = {k: v for k, v in ResNet.arch_settings.items() if k >= 50}

    def __init__(self, depth: int, paradigm: Optional[str] = None,
                 granularity: Optional[Sequence[int]] = None,
                 dynamic_inference: bool = False, **kwargs):
        reject_unknown_keys('LAUDResNet', kwargs, ResNet, own=(
            'depth', 'paradigm', 'granularity', 'dynamic_inference'))
        _check_options(paradigm, kwargs)
        num_stages = kwargs.get('num_stages', 4)
        granularity = _validate(depth, paradigm, granularity, num_stages,
                                kwargs.get('base_channels', 64))
        self.paradigm = paradigm
        self.granularity = granularity
        self._stage_counter = 0
        super().__init__(depth, **kwargs)
        self.blocks: List[LAUDBottleneck] = []
        for s, name in enumerate(self.res_layers):
            for i, block in enumerate(getattr(self, name)):
                block.stage, block.index = s, i
                self.blocks.append(block)
        self.dynamic_inference = dynamic_inference
        # another paradigm / granularity is refused by name (before the
        # shape checks; a spatial masker has the same tensors for every S)
        record_paradigm(self, 'LAUDResNet', self.paradigm, self.granularity,
                        num_stages)
        # a checkpoint of another depth / width must not half-load silently
        # (mmengine's Pretrained init and load_from use strict=False)
        self._register_load_state_dict_pre_hook(_check_checkpoint_structure,
                                                with_module=True)

    def check_dynamic_inference(self) -> None:
        """Spatial and channel blocks run dynamically on BN-folded plain
        convolutions: refuse ``norm_cfg`` / ``conv_cfg`` that cannot be
        folded (GN, weight standardisation, ...), which support masked-dense
        evaluation only; layer blocks run their own modules.

        Raises:
            ValueError: naming the option, its value and the paradigm.
        """
        from .dynamic import unfoldable_reason
        if self.paradigm not in ('spatial', 'channel'):
            return
        for b in self.blocks:
            reason = unfoldable_reason(b)
            if reason is not None:
                raise ValueError(
                    f'LAUDResNet: {reason} with paradigm={self.paradigm!r} '
                    f'supports masked-dense evaluation only '
                    f'(dynamic_inference=False): dynamic inference runs BN '
                    f'folded into plain convolutions on the kept pixels / '
                    f"channels; use norm_cfg=dict(type='BN') (or 'SyncBN') "
                    f"or paradigm='layer'")

    def _make_stem_layer(self, in_channels: int, stem_channels: int):
        """mmdet's stem, with the max-pool on oneDNN's kernel at inference
        (:class:`laud_mm.ops.max_pool.MaxPool2d`: same values, 6 ms instead
        of PyTorch's 49 ms for 8 x 64 x 112 x 112 on one CPU thread,
        ``tools/analysis_tools/benchmark_kernels.py`` 'max_pool' row)."""
        super()._make_stem_layer(in_channels, stem_channels)
        self.maxpool = MaxPool2d(kernel_size=3, stride=2, padding=1)

    def make_res_layer(self, **kwargs):
        """Build one stage of :class:`LAUDBottleneck` (mmdet hook method)."""
        stage = self._stage_counter
        self._stage_counter += 1
        kwargs['block'] = LAUDBottleneck
        kwargs['paradigm'] = self.paradigm
        kwargs['granularity'] = None if self.granularity is None \
            else self.granularity[stage]
        return super().make_res_layer(**kwargs)

    # ------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        self.check_input(x, self.stem[0].in_channels if self.deep_stem
                         else self.conv1.in_channels)
        self._input_hw = (int(x.shape[-2]), int(x.shape[-1]))
        self._batch = int(x.shape[0])
        if self.paradigm is not None and self.dynamic_inference and \
                not self.training:
            # identity blocks may write into their input (the previous
            # block's output, read by nobody else): see owned_block_inputs
            with owned_block_inputs(self.blocks):
                return super().forward(x)
        return super().forward(x)

    # --------------------------------------------------------------- stats
    def stem_geometry(self, in_hw: Tuple[int, int]) -> StemGeometry:
        """Geometry of the stem for an image size (H, W)."""
        return StemGeometry(self.conv1.in_channels if not self.deep_stem
                            else self.stem[0].in_channels,
                            self.stem_channels if hasattr(self, 'stem_channels')
                            else 64, tuple(in_hw))


def resnet_geometries(depth: int, in_hw: Tuple[int, int],
                      paradigm: Optional[str] = None,
                      granularity: Optional[Sequence[int]] = None,
                      ) -> Tuple[List[BlockGeometry], StemGeometry]:
    """Block and stem geometry of a bottleneck ResNet without building it
    (the same numbers as ``LAUDResNet.block_geometries`` with mmdet's
    defaults: ``style='pytorch'``, the stride on conv2, no dilation).

    Args:
        depth: 50, 101 or 152.
        in_hw: image size (H, W), pixels.
        paradigm: 'spatial', 'channel', 'layer' or None.
        granularity: S or G per stage (4 values) for spatial / channel.

    Returns:
        (list of :class:`BlockGeometry`, :class:`StemGeometry`).

    Raises:
        ValueError: naming ``depth``, ``paradigm`` or ``granularity``.
    """
    gran = _validate(depth, paradigm, granularity, 4)
    stem = StemGeometry(3, 64, tuple(in_hw))
    hw, cin, out = stem.out_hw, 64, []
    for s, n in enumerate(RESNET_ARCHS[depth]):
        width = 64 * 2 ** s
        for i in range(n):
            stride = 2 if (i == 0 and s > 0) else 1
            ohw = block_out_hw(hw, stride)
            out.append(BlockGeometry(
                s, i, cin, width, width * 4, stride, tuple(hw), ohw, i == 0,
                paradigm, None if gran is None else gran[s]))
            cin, hw = width * 4, ohw
    return out, stem
