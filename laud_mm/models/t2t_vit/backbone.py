"""LAUD-T2T-ViT: mmpretrain's T2T-ViT with a Gumbel-gated masker in every
transformer encoder layer (token, head or layer skipping).

The network is mmpretrain's ``T2T_ViT`` (Tokens-to-Token module, class token,
sinusoid position embedding, encoder, final LayerNorm, output formats); only
the encoder layers are :class:`~laud_mm.models.t2t_vit.block.LAUDT2TLayer`
(mmpretrain's ``T2TTransformerLayer`` plus ``masker.*``), so

- state-dict keys are mmpretrain's (``tokens_to_token.*``, ``cls_token``,
  ``pos_embed``, ``encoder.{i}.ln1 / attn.qkv / attn.proj / ln2 /
  ffn.layers.*``, ``norm.*``) plus ``encoder.{i}.masker.*``: an mmpretrain
  T2T-ViT checkpoint (``backbone.*`` of a classifier, or a bare backbone)
  loads unchanged, the maskers stay at their keep-biased initialisation
  (reported as missing keys);
- with ``paradigm=None`` the forward *is* mmpretrain's (bit for bit, tested).

The Tokens-to-Token module (the ViT's "stem", about a quarter of T2T-ViT-t-14's
FLOPs at 224 px) is always dense; its geometry is
:class:`~laud_mm.structures.geometry.T2TStemGeometry`.

Source: paper sec. 3.2 and "Experiments on vision Transformers" (LAUD-T2T-ViT,
token / head / layer skipping after AdaViT, Gumbel gates); docs/method.md
sec. 1-2; T2T-ViT (Yuan et al. 2021); mmpretrain ``t2t_vit.py``.
"""
import contextlib
import re
from collections.abc import Sequence as SequenceABC
from copy import deepcopy
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
from mmengine.model import ModuleList
from mmpretrain.models.backbones.t2t_vit import T2T_ViT

from ...registry import MODELS
from ...structures.geometry import (PARADIGMS, T2TStemGeometry,
                                    TokenLayerGeometry)
from ..layers.backbone import LAUDBackboneMixin
from ..layers.checkpoint import record_paradigm
from .attention import fused_attention
from .block import LAUDT2TLayer
from .soft_split import token_major_soft_split

#: mmpretrain's T2T-ViT-t variants: embed_dims, num_layers, num_heads, FFN
#: ratio, T2T token_dims
T2T_VIT_ARCHS = {
    't2t-vit-t-14': dict(embed_dims=384, num_layers=14, num_heads=6,
                         ffn_ratio=3, token_dims=64),
    't2t-vit-t-19': dict(embed_dims=448, num_layers=19, num_heads=7,
                         ffn_ratio=3, token_dims=64),
    't2t-vit-t-24': dict(embed_dims=512, num_layers=24, num_heads=8,
                         ffn_ratio=3, token_dims=64),
}


def t2t_vit_arch_kwargs(arch: str) -> dict:
    """:class:`LAUDT2TViT` keyword arguments of a :data:`T2T_VIT_ARCHS`
    entry (``embed_dims``, ``num_layers``, ``layer_cfgs``, ``t2t_cfg``).

    Raises:
        ValueError: for an unknown ``arch``.
    """
    if arch not in T2T_VIT_ARCHS:
        raise ValueError(f'arch={arch!r} is not one of '
                         f'{sorted(T2T_VIT_ARCHS)}')
    a = T2T_VIT_ARCHS[arch]
    return dict(embed_dims=a['embed_dims'], num_layers=a['num_layers'],
                layer_cfgs=dict(num_heads=a['num_heads'],
                                feedforward_channels=a['ffn_ratio'] *
                                a['embed_dims']),
                t2t_cfg=dict(token_dims=a['token_dims']))


_ENCODER_KEY = re.compile(r'^encoder\.(\d+)\.')


def _check_checkpoint_shapes(module, state_dict, prefix, *args) -> None:
    """load_state_dict pre-hook of :class:`LAUDT2TViT` (runs after
    mmpretrain's ``pos_embed`` resizing hook): refuse a checkpoint of another
    architecture - another number of encoder layers or other tensor shapes -
    instead of half-loading it (mmengine's loaders are not strict).

    Raises:
        ValueError: naming the offending key and both values.
    """
    own = module.state_dict()
    layers = set()
    for k, v in state_dict.items():
        if not k.startswith(prefix):
            continue
        name = k[len(prefix):]
        m = _ENCODER_KEY.match(name)
        if m:
            layers.add(int(m.group(1)))
        if name in own and hasattr(v, 'shape') and \
                tuple(v.shape) != tuple(own[name].shape):
            raise ValueError(
                f'LAUDT2TViT: checkpoint tensor {k} has shape '
                f'{tuple(v.shape)}, the model {tuple(own[name].shape)}: a '
                f'checkpoint of another architecture')
    if layers and len(layers) != len(module.encoder):
        raise ValueError(
            f'LAUDT2TViT: the checkpoint has {len(layers)} encoder layers '
            f'(encoder.0 .. encoder.{max(layers)}), the model num_layers='
            f'{len(module.encoder)}')


@MODELS.register_module()
class LAUDT2TViT(LAUDBackboneMixin, T2T_ViT):
    """Latency-aware unified dynamic T2T-ViT (for mmpretrain classifiers:
    ``type='laud_mm.LAUDT2TViT'``).

    Args:
        img_size, in_channels, embed_dims, num_layers, out_indices,
            drop_rate, drop_path_rate, norm_cfg, final_norm, out_type,
            with_cls_token, interpolate_mode, t2t_cfg, layer_cfgs, init_cfg:
            as mmpretrain's ``T2T_ViT`` (T2T-ViT-t-14: embed_dims 384,
            num_layers 14, ``layer_cfgs=dict(num_heads=6,
            feedforward_channels=1152)``, ``t2t_cfg=dict(token_dims=64)``).
        paradigm: 'spatial' (token skipping: a gate per patch token, the
            class token always kept), 'channel' (head skipping: a gate per
            attention head), 'layer' (a gate per layer) or None (static
            T2T-ViT). One Gumbel gate set per encoder layer and sample.
        dynamic_inference: in eval mode, skip the masked work
            (:mod:`laud_mm.models.t2t_vit.dynamic`, same function as the
            masked-dense model). Default False: masked-dense evaluation.
        group_grad_scale: the head maskers' gradient scale (default True;
            False: the paper's plain gradient; paradigm 'channel' only). See
            :attr:`LAUDBackboneMixin.group_grad_scale`.

    Attributes:
        blocks: the :class:`LAUDT2TLayer` encoder layers in forward order
            (the mask-and-compute blocks of :class:`LAUDBackboneMixin`).
        paradigm: as given.

    Shapes:
        forward: (N, 3, H, W) -> tuple of mmpretrain's outputs for
        ``out_indices`` (``out_type='cls_token'``: (N, D)).

    Raises:
        ValueError: bad ``paradigm``, ``num_layers``, ``out_indices``,
            ``layer_cfgs`` (a list of the wrong length, ``num_heads`` not
            dividing the width, ``input_dims`` set), ``group_grad_scale``,
            or ``paradigm='spatial'`` without a class token (messages
            name the key and value); in forward, an input that is not a
            finite floating-point (N, in_channels, H, W) batch
            (``LAUDBackboneMixin.check_input``).
    """

    def __init__(self,
                 img_size: int = 224,
                 in_channels: int = 3,
                 embed_dims: int = 384,
                 num_layers: int = 14,
                 out_indices: Union[int, Sequence[int]] = -1,
                 drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 norm_cfg: dict = dict(type='LN'),
                 final_norm: bool = True,
                 out_type: str = 'cls_token',
                 with_cls_token: bool = True,
                 interpolate_mode: str = 'bicubic',
                 t2t_cfg: dict = dict(),
                 layer_cfgs: Union[dict, Sequence[dict]] = dict(),
                 paradigm: Optional[str] = None,
                 dynamic_inference: bool = False,
                 init_cfg=None,
                 group_grad_scale: bool = True):
        if paradigm is not None and paradigm not in PARADIGMS:
            raise ValueError(f'LAUDT2TViT: paradigm={paradigm!r} is unknown; '
                             f'use one of {PARADIGMS} (token, head, layer '
                             f'skipping) or None for the static network')
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) \
                or num_layers < 1:
            raise ValueError(f'LAUDT2TViT: num_layers={num_layers!r} must be '
                             f'a positive integer')
        if paradigm == 'spatial' and not with_cls_token:
            raise ValueError('LAUDT2TViT: paradigm=spatial needs '
                             'with_cls_token=True (the class token is always '
                             'kept, every sample keeps one attention key)')
        out_indices = self._resolve_out_indices(out_indices, num_layers)
        if isinstance(layer_cfgs, SequenceABC) and \
                not isinstance(layer_cfgs, (str, dict)) and \
                len(layer_cfgs) != num_layers:
            raise ValueError(f'LAUDT2TViT: layer_cfgs has {len(layer_cfgs)} '
                             f'entries, num_layers={num_layers}')
        # mmpretrain builds its T2TTransformerLayer encoder in __init__;
        # build the rest with an empty encoder and add the LAUD layers here
        # (same configuration rule, same state-dict keys and order)
        super().__init__(
            img_size=img_size, in_channels=in_channels,
            embed_dims=embed_dims, num_layers=0, out_indices=[0],
            drop_rate=drop_rate, drop_path_rate=drop_path_rate,
            norm_cfg=norm_cfg, final_norm=final_norm, out_type=out_type,
            with_cls_token=with_cls_token,
            interpolate_mode=interpolate_mode, t2t_cfg=t2t_cfg,
            layer_cfgs=dict(), init_cfg=init_cfg)
        self.out_indices = out_indices
        self.paradigm = paradigm
        dpr = [x for x in np.linspace(0, drop_path_rate, num_layers)]
        self.encoder = ModuleList()
        for i in range(num_layers):
            cfg = deepcopy(layer_cfgs[i]) if isinstance(
                layer_cfgs, SequenceABC) and not isinstance(
                    layer_cfgs, (str, dict)) else deepcopy(dict(layer_cfgs))
            cfg = {'embed_dims': embed_dims, 'num_heads': 6,
                   'feedforward_channels': 3 * embed_dims,
                   'drop_path_rate': dpr[i], 'qkv_bias': False,
                   'norm_cfg': norm_cfg, **cfg}
            try:
                layer = LAUDT2TLayer(**cfg, paradigm=paradigm,
                                     num_extra_tokens=self.num_extra_tokens)
            except ValueError as e:
                raise ValueError(f'LAUDT2TViT: layer_cfgs (layer {i}): {e}'
                                 ) from e
            layer.stage, layer.index = 0, i
            self.encoder.append(layer)
        self.blocks: List[LAUDT2TLayer] = list(self.encoder)
        self.dynamic_inference = dynamic_inference
        self.group_grad_scale = group_grad_scale
        self._input_hw: Optional[Tuple[int, int]] = None
        # another paradigm is refused by name (before the shape checks; the
        # token and layer maskers have the same keys and shapes)
        record_paradigm(self, 'LAUDT2TViT', self.paradigm, None,
                        0)
        self._register_load_state_dict_pre_hook(_check_checkpoint_shapes,
                                                with_module=True)

    @staticmethod
    def _resolve_out_indices(out_indices, num_layers) -> List[int]:
        idx = [out_indices] if isinstance(out_indices, int) and \
            not isinstance(out_indices, bool) else out_indices
        ok = isinstance(idx, SequenceABC) and not isinstance(idx, str) and \
            len(idx) > 0
        res = []
        if ok:
            for i in idx:
                if isinstance(i, bool) or not isinstance(i, int) or \
                        not -num_layers <= i < num_layers:
                    ok = False
                    break
                res.append(i % num_layers)
        if not ok:
            raise ValueError(f'LAUDT2TViT: out_indices={out_indices!r} must '
                             f'be layer indices in [-{num_layers}, '
                             f'{num_layers}) (num_layers={num_layers})')
        return res

    # -------------------------------------------------------------- init
    def init_weights(self) -> None:
        """mmpretrain's initialisation (``init_cfg``, then a truncated-normal
        class token), except that a ``Pretrained`` entry anywhere in a list
        ``init_cfg`` also keeps the loaded class token (mmpretrain only
        checks a dict ``init_cfg`` and re-draws the class token after
        loading a list's checkpoint). The maskers' keep-biased
        initialisation runs after the ``init_cfg`` layer rules (mmengine
        calls the children's ``init_weights``) and before a checkpoint
        (which may hold trained maskers) is loaded."""
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else \
            [self.init_cfg]
        if any(isinstance(c, dict) and c.get('type') == 'Pretrained'
               for c in cfgs):
            super(T2T_ViT, self).init_weights()
            return
        super().init_weights()

    # ----------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """mmpretrain's ``T2T_ViT.forward`` (the LAUD layers record their
        statistics). In dynamic inference of a LAUD model and in
        ``static_forward`` (its baseline), mmpretrain's attention modules
        run fused and the image split writes token rows
        (:meth:`inference_kernels`)."""
        self.check_input(x, self.tokens_to_token.attention1.attn.input_dims
                         // 49)
        self._input_hw = (int(x.shape[-2]), int(x.shape[-1]))
        with self.inference_kernels():
            return super().forward(x)

    def attention_modules(self) -> List[nn.Module]:
        """mmpretrain's ``MultiheadAttention`` modules of the backbone: the
        Tokens-to-Token module's two, then every encoder layer's (a list of
        2 + ``num_layers`` modules). Source: T2T-ViT's architecture
        (mmpretrain 1.2.0 ``T2T_ViT``)."""
        t2t = self.tokens_to_token
        return [t2t.attention1.attn, t2t.attention2.attn] + \
            [b.attn for b in self.blocks]

    def inference_kernels(self) -> contextlib.AbstractContextManager:
        """The context the backbone's forward runs in: in eval mode, with
        ``dynamic_inference`` on a LAUD model (``paradigm`` set) or within
        ``static_forward``,

        - :func:`~laud_mm.models.t2t_vit.attention.fused_attention` over
          :meth:`attention_modules` (the same function up to float
          rounding, within about 1e-6 relative; the T2T module's 3136 x
          3136 logits at 224 px cost about 85 % of the backbone on a CPU,
          and the encoder layers run about 1.2x faster), and
        - :func:`~laud_mm.models.t2t_vit.soft_split.token_major_soft_split`
          of the T2T module's image split (the same values, written as
          token rows in one pass instead of ``im2col`` and a transposing
          copy);

        otherwise (training, masked-dense evaluation, ``paradigm=None``)
        none: mmpretrain's own operators, bit for bit. The dynamic paths'
        own attention is fused anyway
        (:func:`~laud_mm.models.t2t_vit.attention.attend`). Source: paper
        sec. 3.4 (inference scheduled for the hardware); docs/t2t_vit.md,
        "Fused attention in inference" and "The image split, token-major".
        """
        static = bool(self.blocks) and self.blocks[0].static_mode
        if self.training or not (static or (
                self.dynamic_inference and self.paradigm is not None)):
            return contextlib.nullcontext()
        return self._inference_kernels()

    @contextlib.contextmanager
    def _inference_kernels(self) -> Iterator[None]:
        with fused_attention(self.attention_modules()), \
                token_major_soft_split(self.tokens_to_token.soft_split0):
            yield

    # ------------------------------------------------------------- stats
    def stem_geometry(self, in_hw: Tuple[int, int]) -> T2TStemGeometry:
        """Geometry of the Tokens-to-Token module for an image size (H, W).

        Raises:
            ValueError: if the image is too small for its unfolds.
        """
        t2t = self.tokens_to_token
        return T2TStemGeometry(
            t2t.attention1.attn.input_dims // 49,
            t2t.attention1.attn.embed_dims, t2t.embed_dims, tuple(in_hw))

    def block_geometries(self, in_hw: Tuple[int, int]
                         ) -> List[TokenLayerGeometry]:
        """Geometry of every encoder layer for an image size (H, W).

        Raises:
            ValueError: if the image is too small for the T2T module.
        """
        tokens = self.stem_geometry(in_hw).num_patches + \
            self.num_extra_tokens
        return [b.geometry(tokens) for b in self.blocks]


def t2t_vit_geometries(arch: str, in_hw: Tuple[int, int],
                       paradigm: Optional[str] = None,
                       in_channels: int = 3
                       ) -> Tuple[List[TokenLayerGeometry], T2TStemGeometry]:
    """Layer and stem geometry of a T2T-ViT without building it (the same
    numbers as ``LAUDT2TViT.block_geometries`` / ``stem_geometry``).

    Args:
        arch: a key of :data:`T2T_VIT_ARCHS` ('t2t-vit-t-14', ...).
        in_hw: image size (H, W), pixels.
        paradigm: 'spatial', 'channel', 'layer' or None.
        in_channels: image channels.

    Returns:
        (list of :class:`TokenLayerGeometry`, :class:`T2TStemGeometry`).

    Raises:
        ValueError: naming ``arch``, ``paradigm`` or ``in_hw`` (too small).
    """
    if arch not in T2T_VIT_ARCHS:
        raise ValueError(f'arch={arch!r} is not one of '
                         f'{sorted(T2T_VIT_ARCHS)}')
    if paradigm is not None and paradigm not in PARADIGMS:
        raise ValueError(f'paradigm={paradigm!r} is not one of {PARADIGMS} '
                         f'or None')
    a = T2T_VIT_ARCHS[arch]
    d = a['embed_dims']
    stem = T2TStemGeometry(in_channels, a['token_dims'], d, tuple(in_hw))
    tokens = stem.num_patches + 1
    layers = [TokenLayerGeometry(0, i, tokens, d, a['num_heads'],
                                 a['ffn_ratio'] * d, paradigm)
              for i in range(a['num_layers'])]
    return layers, stem
