"""LAUD-RegNetY: RegNetY-400MF / 800MF with mask-and-compute blocks.

Neither mmdet nor mmpretrain has RegNetY (they have RegNetX only), so the
network is built here, op for op as torchvision's ``regnet_y_400mf`` /
``regnet_y_800mf`` (same results bit for bit with the same weights, tested):

- stem: 3x3 stride-2 conv (3 -> 32) + BN + ReLU (``conv1``, ``bn1``);
- four stages ``layer1`` .. ``layer4`` of :class:`LAUDRegNetYBlock`, stride 2
  in the first block of every stage (output strides 4, 8, 16, 32);
- 400MF: widths [48, 104, 208, 440], depths [1, 3, 6, 6], group width 8;
  800MF: widths [64, 144, 320, 784], depths [1, 3, 8, 2], group width 16;
  bottleneck ratio 1; SE squeeze = round(0.25 x block input width).

Checkpoint keys and the ``torchvision-regnety://`` scheme:
:mod:`laud_mm.models.regnet.convert`.

Source: paper sec. 4.3.2 (LAUD-RegNetY-400MF / 800MF; layer skipping skips the
SE too); docs/method.md sec. 1 (widths, depths, group widths, SE ratio,
granularities S = 4-4-2-1 / 4-4-7-1, G = 2-2-2-2, layer); Radosavovic et al.
2020; torchvision ``models/regnet.py``.
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm

from ...registry import MODELS
from ...structures.checks import (check_int, check_number,
                                  check_stage_options)
from ...structures.geometry import (BlockGeometry, RegNetStemGeometry,
                                    block_out_hw, check_paradigm)
from ..layers.backbone import LAUDBackboneMixin
from ..layers.checkpoint import record_paradigm
from . import convert  # noqa: F401  (registers torchvision-regnety://)
from .block import LAUDRegNetYBlock
from .dynamic import dynamic_memory_format

#: architecture settings (torchvision's regnet_y_400mf / regnet_y_800mf)
REGNETY_ARCHS: Dict[str, dict] = {
    'regnety_400mf': dict(widths=(48, 104, 208, 440), depths=(1, 3, 6, 6),
                          group_width=8, stem_channels=32, se_ratio=0.25),
    'regnety_800mf': dict(widths=(64, 144, 320, 784), depths=(1, 3, 8, 2),
                          group_width=16, stem_channels=32, se_ratio=0.25),
}
_ARCH_KEYS = ('widths', 'depths', 'group_width', 'stem_channels', 'se_ratio')


def _arch(arch: Union[str, dict]) -> dict:
    """Resolve ``arch`` (name or dict) to a validated settings dict.

    Raises:
        ValueError: unknown name, missing / unknown keys, widths / depths
            / group_width / stem_channels not positive integers, se_ratio
            not a finite number >= 0 (0: no SE), or inconsistent values
            (the message names the key and value).
    """
    if isinstance(arch, str):
        if arch not in REGNETY_ARCHS:
            raise ValueError(f'LAUDRegNetY: arch={arch!r} is not one of '
                             f'{sorted(REGNETY_ARCHS)} (or a dict with keys '
                             f'{_ARCH_KEYS})')
        return dict(REGNETY_ARCHS[arch])
    if not isinstance(arch, dict):
        raise ValueError(f'LAUDRegNetY: arch={arch!r} must be a name or a '
                         f'dict')
    arch = dict(arch)
    arch.setdefault('stem_channels', 32)
    arch.setdefault('se_ratio', 0.25)
    missing = [k for k in _ARCH_KEYS if k not in arch]
    unknown = sorted(set(arch) - set(_ARCH_KEYS))
    if missing or unknown:
        raise ValueError(f'LAUDRegNetY: arch={arch!r}: missing keys {missing},'
                         f' unknown keys {unknown}')
    for key in ('widths', 'depths'):
        v = arch[key]
        if not isinstance(v, (tuple, list)) or any(
                isinstance(e, bool) or not isinstance(e, int) or e < 1
                for e in v):
            raise ValueError(f'LAUDRegNetY: arch {key}={v!r} must hold '
                             f'positive integers')
    for key in ('group_width', 'stem_channels'):
        check_int('LAUDRegNetY', f'arch {key}', arch[key])
    check_number('LAUDRegNetY', 'arch se_ratio', arch['se_ratio'],
                 allow_zero=True)
    widths, depths = tuple(arch['widths']), tuple(arch['depths'])
    if len(widths) != len(depths) or not widths:
        raise ValueError(f'LAUDRegNetY: arch widths={widths!r} and depths='
                         f'{depths!r} must have the same (non-zero) length')
    for w in widths:
        if w % arch['group_width']:
            raise ValueError(f"LAUDRegNetY: arch group_width="
                             f"{arch['group_width']!r} does not divide the "
                             f'width {w}')
    arch['widths'], arch['depths'] = widths, depths
    return arch


def _check_checkpoint_shapes(module, state_dict, prefix, *args) -> None:
    """load_state_dict pre-hook of :class:`LAUDRegNetY`: refuse checkpoint
    tensors whose shapes differ from the model's (another arch, e.g. a
    400MF checkpoint into an 800MF model, or a raw torchvision state dict
    whose keys were not converted is only reported as missing keys).

    Raises:
        ValueError: naming the first offending key and both shapes.
    """
    own = module.state_dict()
    for k, v in state_dict.items():
        if not k.startswith(prefix):
            continue
        name = k[len(prefix):]
        if name in own and hasattr(v, 'shape') and \
                tuple(v.shape) != tuple(own[name].shape):
            raise ValueError(
                f'LAUDRegNetY(arch={module.arch_name!r}): checkpoint tensor '
                f'{k} has shape {tuple(v.shape)}, the model '
                f'{tuple(own[name].shape)}: a checkpoint of another '
                f'architecture')


@MODELS.register_module()
class LAUDRegNetY(LAUDBackboneMixin, BaseModule):
    """Latency-aware unified dynamic RegNetY (400MF / 800MF), for mmpretrain
    (classification) and mmdet (detection; ``out_channels`` feeds FPN).

    Args:
        arch: 'regnety_400mf', 'regnety_800mf', or a dict with ``widths``,
            ``depths``, ``group_width`` (and optional ``stem_channels`` 32,
            ``se_ratio`` 0.25).
        paradigm: 'spatial', 'channel', 'layer' or None (static RegNetY).
        granularity: per stage, S (spatial, patch side in output pixels,
            e.g. (4, 4, 2, 1) or (4, 4, 7, 1)) or G (channel, channels per
            gate, e.g. (2, 2, 2, 2)); None for 'layer' and static.
        out_indices: stages whose outputs are returned (0-based).
        frozen_stages: stages (and the stem) to freeze, -1: none.
        norm_eval: keep BN layers in eval mode during training.
        with_cp: gradient checkpointing of the residual branches.
        dynamic_inference: in eval mode, skip the masked-out work
            (:mod:`laud_mm.models.regnet.dynamic`, same function as the
            masked-dense model). Default False: masked-dense evaluation.
        in_channels: image channels (3).
        init_cfg: mmengine init config, e.g. ``dict(type='Pretrained',
            checkpoint='torchvision-regnety:///path/regnet_y_800mf.pth',
            prefix='backbone.')``. None: torchvision's initialisation
            (Kaiming normal fan-out convs, BN 1/0), maskers keep-biased.
        group_grad_scale: the channel maskers' gradient scale (default
            True; False: the paper's plain gradient; paradigm 'channel'
            only). See :attr:`LAUDBackboneMixin.group_grad_scale`.

    Attributes:
        blocks: all :class:`LAUDRegNetYBlock` in forward order.
        stage_widths: output channels of each stage.
        out_channels: output channels of the returned stages (FPN
            ``in_channels``).

    Shapes:
        forward: (N, 3, H, W) -> tuple of (N, widths[i], ~H / 2^(i+2),
        ~W / 2^(i+2)) for i in ``out_indices``. Any H, W >= 1 works.

    Raises:
        ValueError: bad ``arch``, ``paradigm``, ``granularity``,
            ``out_indices``, ``frozen_stages`` or ``group_grad_scale``
            (names the key and value);
            in forward, an input that is not a finite floating-point (N, 3,
            H, W) batch (``LAUDBackboneMixin.check_input``).
    """

    def __init__(self, arch: Union[str, dict] = 'regnety_800mf',
                 paradigm: Optional[str] = None,
                 granularity: Optional[Sequence[int]] = None,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1, norm_eval: bool = False,
                 with_cp: bool = False, dynamic_inference: bool = False,
                 in_channels: int = 3, init_cfg=None,
                 group_grad_scale: bool = True):
        super().__init__(init_cfg=init_cfg)
        self.arch_name = arch if isinstance(arch, str) else 'custom'
        self.arch = _arch(arch)
        n_stages = len(self.arch['widths'])
        self.paradigm = paradigm
        self.granularity = check_paradigm('LAUDRegNetY', paradigm,
                                          granularity, n_stages,
                                          self.arch['widths'])
        if isinstance(out_indices, int) and \
                not isinstance(out_indices, bool):
            out_indices = (out_indices,)
        out_indices = check_stage_options('LAUDRegNetY', out_indices,
                                          frozen_stages, n_stages)
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        stem = self.arch['stem_channels']
        self.conv1 = nn.Conv2d(in_channels, stem, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem, eps=1e-5, momentum=0.1)
        self.relu = nn.ReLU(inplace=True)
        self.res_layers: List[str] = []
        self.blocks: List[LAUDRegNetYBlock] = []
        cin = stem
        for s, (w, d) in enumerate(zip(self.arch['widths'],
                                       self.arch['depths'])):
            layer = []
            for i in range(d):
                blk = LAUDRegNetYBlock(
                    cin, w, stride=2 if i == 0 else 1,
                    group_width=self.arch['group_width'],
                    se_ratio=self.arch['se_ratio'], paradigm=self.paradigm,
                    granularity=None if self.granularity is None
                    else self.granularity[s], with_cp=with_cp)
                blk.stage, blk.index = s, i
                layer.append(blk)
                self.blocks.append(blk)
                cin = w
            name = f'layer{s + 1}'
            self.add_module(name, nn.Sequential(*layer))
            self.res_layers.append(name)
        self.stage_widths = tuple(self.arch['widths'])
        self.out_channels = tuple(self.stage_widths[i] for i in out_indices)
        self.dynamic_inference = dynamic_inference
        self.group_grad_scale = group_grad_scale
        self._input_hw: Optional[Tuple[int, int]] = None
        self._freeze_stages()
        # another paradigm / granularity is refused by name (before the
        # shape checks; a spatial masker has the same tensors for every S)
        record_paradigm(self, 'LAUDRegNetY', self.paradigm, self.granularity,
                        n_stages)
        # a checkpoint of another arch must not half-load silently
        # (mmengine's Pretrained init and load_from use strict=False)
        self._register_load_state_dict_pre_hook(_check_checkpoint_shapes,
                                                with_module=True)

    # -------------------------------------------------------------- init
    def init_weights(self) -> None:
        """torchvision's RegNet initialisation (conv: normal with std
        sqrt(2 / (k * k * C_out)); BN: weight 1, bias 0; conv biases: PyTorch
        default) and keep-biased maskers, then mmengine's ``init_cfg`` (e.g.
        a pretrained checkpoint)."""
        pretrained = isinstance(self.init_cfg, dict) and \
            self.init_cfg.get('type') == 'Pretrained'
        if not pretrained:
            for name, m in self.named_modules():
                if 'masker' in name:
                    continue
                if isinstance(m, nn.Conv2d):
                    fan_out = m.kernel_size[0] * m.kernel_size[1] * \
                        m.out_channels
                    nn.init.normal_(m.weight, 0., (2. / fan_out) ** 0.5)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
            for m in self.maskers():
                m.init_weights()
        super().init_weights()

    def _freeze_stages(self) -> None:
        if self.frozen_stages >= 0:
            for m in (self.conv1, self.bn1):
                m.eval()
                for p in m.parameters():
                    p.requires_grad = False
        for i in range(1, self.frozen_stages + 1):
            m = getattr(self, f'layer{i}')
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True) -> 'LAUDRegNetY':
        """``nn.Module.train`` keeping frozen stages in eval (their maskers
        too, unless :attr:`train_frozen_maskers`) and, with ``norm_eval``,
        every BN layer in eval mode."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        self.release_frozen_maskers()
        return self

    # ----------------------------------------------------------- forward
    def dynamic_memory_format(self, x: torch.Tensor) -> torch.memory_format:
        """The memory format in which to feed input like ``x`` for the
        fastest dynamic inference
        (:func:`~laud_mm.models.regnet.dynamic.dynamic_memory_format`:
        channels_last on the CPU, else NCHW).
        ``forward`` runs in its input's format and returns its features in
        it (same values either way), as LAUD-ResNet's: a consumer may read
        NCHW only (mmcv's CPU RoIAlign reads a channels_last map wrongly),
        so callers that can take channels_last features (the benchmarks,
        ``laud_mm.BackboneSpeedHook``) convert the input."""
        return dynamic_memory_format(self.paradigm, x)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        self.check_input(x, self.conv1.in_channels)
        self._input_hw = (int(x.shape[-2]), int(x.shape[-1]))
        with self.planned_blocks():
            return self._forward(x)

    def _forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        stem = self.inference_stem([(self.conv1, self.bn1)])
        if stem is None:
            x = self.relu(self.bn1(self.conv1(x)))
        else:
            # the first block's layer / channel masker pools the stem
            # output: its means come from the stem's ReLU pass
            x = stem(x, pooled=self.paradigm in ('layer', 'channel') and
                     not self.blocks[0].static_mode)
        return self.stage_outputs(x)

    # ------------------------------------------------------------- stats
    def stem_geometry(self, in_hw: Tuple[int, int]) -> RegNetStemGeometry:
        """Geometry of the stem for an image size (H, W)."""
        return RegNetStemGeometry(self.conv1.in_channels,
                                  self.conv1.out_channels, tuple(in_hw))


def regnety_geometries(arch: Union[str, dict], in_hw: Tuple[int, int],
                       paradigm: Optional[str] = None,
                       granularity: Optional[Sequence[int]] = None,
                       ) -> Tuple[List[BlockGeometry], RegNetStemGeometry]:
    """Block and stem geometry of a RegNetY without building it (the same
    numbers as ``LAUDRegNetY.block_geometries`` / ``stem_geometry``).

    Args:
        arch: a key of :data:`REGNETY_ARCHS` or an arch dict.
        in_hw: image size (H, W), pixels.
        paradigm: 'spatial', 'channel', 'layer' or None.
        granularity: S or G per stage for spatial / channel.

    Returns:
        (list of :class:`BlockGeometry` with ``kind='regnety'``,
        :class:`RegNetStemGeometry`).

    Raises:
        ValueError: naming ``arch``, ``paradigm`` or ``granularity``.
    """
    a = _arch(arch)
    gran = check_paradigm('regnety_geometries', paradigm, granularity,
                          len(a['widths']), a['widths'])
    stem = RegNetStemGeometry(3, a['stem_channels'], tuple(in_hw))
    hw, cin, out = stem.out_hw, a['stem_channels'], []
    for s, (w, n) in enumerate(zip(a['widths'], a['depths'])):
        for i in range(n):
            stride = 2 if i == 0 else 1
            ohw = block_out_hw(hw, stride)
            out.append(BlockGeometry(
                s, i, cin, w, w, stride, tuple(hw), ohw,
                stride != 1 or cin != w, paradigm,
                None if gran is None else gran[s], kind='regnety',
                groups=w // a['group_width'],
                se_channels=int(round(a['se_ratio'] * cin))))
            cin, hw = w, ohw
    return out, stem
