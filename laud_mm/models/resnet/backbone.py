"""LAUD-ResNet: mmdet's ResNet with mask-and-compute bottlenecks, and the
dilated (output stride 8 / 16) settings of semantic segmentation
(``contract_dilation``, the deep stem of ResNetV1c, as mmseg's ResNet).

Source: paper sec. 3.2 and 4.1 (LAUD-ResNet-50/101), docs/method.md sec. 1
(paradigms, granularities 4-4-2-1 / 2-2-2-2 / layer); dilated ResNets for
segmentation: Chen et al. 2017 (DeepLab: atrous convolution, output stride
8), mmseg ``ResNet`` / ``ResNetV1c`` (``contract_dilation``, deep stem).
"""
import re
from collections import defaultdict
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmdet.models.backbones.resnet import ResNet

from ...ops.max_pool import MaxPool2d
from ...registry import MODELS
from ...structures.checks import check_int, check_stage_options
from ...structures.geometry import (BlockGeometry, DeepStemGeometry,
                                    StemGeometry, block_out_hw,
                                    check_paradigm)
from ..layers.backbone import LAUDBackboneMixin, reject_unknown_keys
from ..layers.checkpoint import record_paradigm
from . import convert  # noqa: F401  (registers torchvision-cls://)
from .block import LAUDBottleneck
from .dynamic import dynamic_memory_format

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


def _check_stage_options(kwargs: dict) -> int:
    """Check the mmdet ``ResNet`` options that size the network, which
    mmdet asserts without a message (or not at all): ``num_stages`` in
    [1, 4], ``out_indices`` stage indices below it, ``frozen_stages`` in
    [-1, num_stages], ``base_channels`` / ``stem_channels`` positive.

    Returns:
        num_stages.

    Raises:
        ValueError: naming the key and value.
    """
    num_stages = kwargs.get('num_stages', 4)
    if isinstance(num_stages, bool) or not isinstance(num_stages, int) or \
            not 1 <= num_stages <= 4:
        raise ValueError(f'LAUDResNet: num_stages={num_stages!r} must be an '
                         f'integer in [1, 4]')
    check_stage_options('LAUDResNet', kwargs.get('out_indices', (0, 1, 2, 3)),
                        kwargs.get('frozen_stages', -1), num_stages)
    check_int('LAUDResNet', 'base_channels', kwargs.get('base_channels', 64))
    if kwargs.get('stem_channels') is not None:
        check_int('LAUDResNet', 'stem_channels', kwargs['stem_channels'])
    return num_stages


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


def stage_block_settings(num_blocks: Sequence[int], strides: Sequence[int],
                         dilations: Sequence[int],
                         contract_dilation: bool = False
                         ) -> List[List[Tuple[int, int]]]:
    """(stride, dilation) of conv2 in every block, per stage.

    The first block of a stage carries the stage's stride; every block the
    stage's dilation, except that with ``contract_dilation`` the first block
    of a stage whose dilation d > 1 uses d // 2 (mmseg's ``ResLayer``:
    DeepLab's output-stride-8 ResNet has dilations 1-1-2-4 with the first
    blocks of stages 3 and 4 at 1 and 2).

    Args:
        num_blocks: blocks per stage.
        strides, dilations: one per stage (mmdet / mmseg ``ResNet``).
        contract_dilation: halve the first block's dilation where d > 1.

    Returns:
        per stage, a list of (stride, dilation) per block.

    Raises:
        ValueError: naming ``strides``, ``dilations`` or
            ``contract_dilation`` and the value (lengths other than the
            number of stages, values < 1, a non-bool flag).
    """
    n = len(num_blocks)
    for key, val in (('strides', strides), ('dilations', dilations)):
        if isinstance(val, (int, str)) or len(tuple(val)) != n or any(
                isinstance(v, bool) or not isinstance(v, int) or v < 1
                for v in val):
            raise ValueError(f'LAUDResNet: {key}={val!r} must give one '
                             f'positive integer per stage ({n} entries)')
    if not isinstance(contract_dilation, bool):
        raise ValueError(f'LAUDResNet: contract_dilation='
                         f'{contract_dilation!r} must be True or False')
    out = []
    for blocks, stride, d in zip(num_blocks, strides, dilations):
        first = d // 2 if contract_dilation and d > 1 else d
        out.append([(stride, first)] + [(1, d)] * (blocks - 1))
    return out


class _StageBlocks:
    """Block factory for mmdet's ``ResLayer`` that gives each block its own
    conv2 dilation (mmdet passes one ``dilation`` to every block of a
    stage; ``contract_dilation`` needs another one for the first block).

    Args:
        dilations: conv2 dilation of each block of the stage, in order.

    Raises:
        RuntimeError: if called for more blocks than ``dilations`` holds.
    """

    expansion = LAUDBottleneck.expansion

    def __init__(self, dilations: Sequence[int]):
        self.dilations = list(dilations)
        self.built = 0

    def __call__(self, **kwargs) -> LAUDBottleneck:
        if self.built >= len(self.dilations):
            raise RuntimeError(f'_StageBlocks: block {self.built} requested, '
                               f'{len(self.dilations)} planned')
        kwargs['dilation'] = self.dilations[self.built]
        self.built += 1
        return LAUDBottleneck(**kwargs)


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
        contract_dilation: mmseg's ``ResNet`` option: the first block of a
            stage with dilation d > 1 uses d // 2 (see
            :func:`stage_block_settings`). With mmdet's ``strides`` /
            ``dilations`` / ``deep_stem`` this builds mmseg's dilated
            ResNets (``ResNetV1c``, DeepLab output stride 8: ``strides=(1,
            2, 1, 1), dilations=(1, 1, 2, 4)``) with the same parameter
            names; geometry, FLOPs and predicted latency follow the blocks
            as built (dilated conv2, larger maps, deep stem).
        group_grad_scale: the channel maskers' gradient scale (default
            True; False: the paper's plain gradient; paradigm 'channel'
            only). See :attr:`LAUDBackboneMixin.group_grad_scale`.
        **kwargs: mmdet ``ResNet`` arguments (see the table).

    Shapes:
        forward: (N, 3, H, W) float, finite -> tuple of (N, 256 * 2^i,
        ~H / r_i, ...) for i in ``out_indices``, r_i = 4 x the product of
        ``strides[:i + 1]`` (4, 8, 16, 32 by default; 4, 8, 8, 8 at output
        stride 8). Any H, W >= 32 pixels works.

    Raises:
        TypeError: an unknown config key (named with its value and the
            closest known key).
        ValueError: bad ``depth``, ``paradigm``, ``granularity``,
            ``strides``, ``dilations``, ``contract_dilation``,
            ``num_stages``, ``out_indices``, ``frozen_stages``,
            ``base_channels``, ``stem_channels`` or
            ``group_grad_scale`` (the message
            names the key and value), G not dividing a stage width, an
            option the paradigm does not support (the table), or
            ``dynamic_inference=True`` with a masked-dense-only option; in
            forward, an input that is not a finite floating-point (N,
            in_channels, H, W) batch.
        RuntimeError: dynamic inference called with gradients enabled.
    """

    arch_settings = {k: v for k, v in ResNet.arch_settings.items() if k >= 50}

    def __init__(self, depth: int, paradigm: Optional[str] = None,
                 granularity: Optional[Sequence[int]] = None,
                 dynamic_inference: bool = False,
                 contract_dilation: bool = False,
                 group_grad_scale: bool = True, **kwargs):
        reject_unknown_keys('LAUDResNet', kwargs, ResNet, own=(
            'depth', 'paradigm', 'granularity', 'dynamic_inference',
            'contract_dilation', 'group_grad_scale'))
        _check_options(paradigm, kwargs)
        num_stages = _check_stage_options(kwargs)
        granularity = _validate(depth, paradigm, granularity, num_stages,
                                kwargs.get('base_channels', 64))
        self.paradigm = paradigm
        self.granularity = granularity
        self.contract_dilation = contract_dilation
        self._block_settings = stage_block_settings(
            RESNET_ARCHS[depth][:num_stages],
            kwargs.get('strides', (1, 2, 2, 2)),
            kwargs.get('dilations', (1, 1, 1, 1)),
            contract_dilation)
        self._stage_counter = 0
        super().__init__(depth, **kwargs)
        self.blocks: List[LAUDBottleneck] = []
        for s, name in enumerate(self.res_layers):
            for i, block in enumerate(getattr(self, name)):
                block.stage, block.index = s, i
                self.blocks.append(block)
        self.dynamic_inference = dynamic_inference
        self.group_grad_scale = group_grad_scale
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
        """mmdet's stem, with the max-pool on the compiled kernel at
        inference (:class:`laud_mm.ops.max_pool.MaxPool2d`: same values,
        2.3 ms of CPU time instead of PyTorch's 50.8 ms for 8 x 64 x 112 x
        112 on one CPU thread, 4.0 instead of 124.4 ms for one 800 x 1216
        image, ``tools/analysis_tools/benchmark_kernels.py`` 'max_pool'
        rows)."""
        super()._make_stem_layer(in_channels, stem_channels)
        self.maxpool = MaxPool2d(kernel_size=3, stride=2, padding=1)

    def make_res_layer(self, **kwargs):
        """Build one stage of :class:`LAUDBottleneck` (mmdet hook method),
        each block with its conv2 dilation of :func:`stage_block_settings`
        (``contract_dilation``)."""
        stage = self._stage_counter
        self._stage_counter += 1
        kwargs['block'] = _StageBlocks(
            [d for _, d in self._block_settings[stage]])
        kwargs['paradigm'] = self.paradigm
        kwargs['granularity'] = None if self.granularity is None \
            else self.granularity[stage]
        layer = super().make_res_layer(**kwargs)
        layer.block = LAUDBottleneck  # ResLayer's record of its block type
        return layer

    # ------------------------------------------------------------- forward
    def dynamic_memory_format(self, x: torch.Tensor) -> torch.memory_format:
        """The memory format in which to feed input like ``x`` for the
        fastest dynamic inference
        (:func:`~laud_mm.models.resnet.dynamic.dynamic_memory_format`:
        channels_last where the blocks run the fused CPU kernels, else
        NCHW). ``forward`` itself runs in its input's format and returns
        its features in it (same values either way): it does not convert,
        since a consumer may read NCHW only (mmcv's CPU RoIAlign reads a
        channels_last map wrongly) and converting the features back costs
        more than the format saves. Callers that can take channels_last
        features (the benchmarks, ``laud_mm.BackboneSpeedHook``, a
        pipeline of PyTorch operators) convert the input."""
        return dynamic_memory_format(self.paradigm, x, self.blocks)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        self.check_input(x, self.stem[0].in_channels if self.deep_stem
                         else self.conv1.in_channels)
        self._input_hw = (int(x.shape[-2]), int(x.shape[-1]))
        self._batch = int(x.shape[0])
        with self.planned_blocks():
            return self._forward(x)

    def _forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """mmdet's ``ResNet.forward``, with the stem BN-folded where this
        forward folds BN (:meth:`inference_stem`)."""
        stem = self.inference_stem(self._stem_layers())
        if stem is None:
            return super().forward(x)
        return self.stage_outputs(self.maxpool(stem(x)))

    def _stem_layers(self) -> List[tuple]:
        """The stem's (conv, norm) pairs, each followed by a ReLU: mmdet's
        7 x 7 conv and ``norm1``, or the deep stem's three (an empty list,
        so no folding, for a deep stem of another structure)."""
        if not self.deep_stem:
            return [(self.conv1, self.norm1)]
        mods = list(self.stem)
        if len(mods) % 3 or not all(
                isinstance(r, nn.ReLU) for r in mods[2::3]):
            return []
        return list(zip(mods[0::3], mods[1::3]))

    # --------------------------------------------------------------- stats
    def stem_geometry(self, in_hw: Tuple[int, int]) -> StemGeometry:
        """Geometry of the stem for an image size (H, W): the 7x7 stem
        (:class:`StemGeometry`) or, with ``deep_stem=True``, the three 3x3
        convolutions of ResNetV1c (:class:`DeepStemGeometry`)."""
        if self.deep_stem:
            return DeepStemGeometry(self.stem[0].in_channels,
                                    self.stem_channels, tuple(in_hw))
        return StemGeometry(self.conv1.in_channels, self.stem_channels,
                            tuple(in_hw))


@MODELS.register_module()
class LAUDResNetV1c(LAUDResNet):
    """LAUD-ResNetV1c: :class:`LAUDResNet` with mmseg's ``ResNetV1c``
    preset (``deep_stem=True``: three 3x3 convolutions replace the 7x7 stem;
    ``avg_down=False``), so that mmseg's configs (and their ResNetV1c
    checkpoints, e.g. ``open-mmlab://resnet50_v1c``) take a LAUD backbone
    by changing ``type`` only.

    Args:
        **kwargs: as :class:`LAUDResNet` (``deep_stem`` and ``avg_down`` are
            set by the preset).

    Raises:
        ValueError: ``deep_stem`` or ``avg_down`` given (names the key), or
            any error of :class:`LAUDResNet`.

    Source: mmseg ``ResNetV1c`` (Bag of Tricks, He et al. 2019, ResNet-C).
    """

    def __init__(self, **kwargs):
        for key in ('deep_stem', 'avg_down'):
            if key in kwargs:
                raise ValueError(
                    f'LAUDResNetV1c: {key}={kwargs[key]!r} is set by the '
                    f"preset (deep_stem=True, avg_down=False); use type="
                    f"'laud_mm.LAUDResNet' to choose it")
        super().__init__(deep_stem=True, avg_down=False, **kwargs)


def resnet_geometries(depth: int, in_hw: Tuple[int, int],
                      paradigm: Optional[str] = None,
                      granularity: Optional[Sequence[int]] = None,
                      strides: Sequence[int] = (1, 2, 2, 2),
                      dilations: Sequence[int] = (1, 1, 1, 1),
                      contract_dilation: bool = False,
                      deep_stem: bool = False,
                      ) -> Tuple[List[BlockGeometry], StemGeometry]:
    """Block and stem geometry of a bottleneck ResNet without building it
    (the same numbers as ``LAUDResNet.block_geometries`` /
    ``stem_geometry`` with ``style='pytorch'``: the stride on conv2).

    Args:
        depth: 50, 101 or 152.
        in_hw: image size (H, W), pixels.
        paradigm: 'spatial', 'channel', 'layer' or None.
        granularity: S or G per stage (4 values) for spatial / channel.
        strides, dilations, contract_dilation, deep_stem: as
            :class:`LAUDResNet` (defaults: the classification ResNet;
            DeepLab's output stride 8 is ``strides=(1, 2, 1, 1),
            dilations=(1, 1, 2, 4), contract_dilation=True``).

    Returns:
        (list of :class:`BlockGeometry`, :class:`StemGeometry` or
        :class:`DeepStemGeometry`).

    Raises:
        ValueError: naming ``depth``, ``paradigm``, ``granularity``,
            ``strides``, ``dilations`` or ``contract_dilation``.
    """
    gran = _validate(depth, paradigm, granularity, 4)
    settings = stage_block_settings(RESNET_ARCHS[depth], strides, dilations,
                                    contract_dilation)
    stem = (DeepStemGeometry if deep_stem else StemGeometry)(
        3, 64, tuple(in_hw))
    hw, cin, out = stem.out_hw, 64, []
    for s, blocks in enumerate(settings):
        width = 64 * 2 ** s
        for i, (stride, dil) in enumerate(blocks):
            ohw = block_out_hw(hw, stride, dil)
            out.append(BlockGeometry(
                s, i, cin, width, width * 4, stride, tuple(hw), ohw,
                i == 0 and (stride != 1 or cin != width * 4),
                paradigm, None if gran is None else gran[s], dilation=dil))
            cin, hw = width * 4, ohw
    return out, stem
