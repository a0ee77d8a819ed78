"""Block geometry of LAUD backbones: widths, strides and feature-map sizes.

One place computes the shape of every block for a given input size, so that the
sparsity loss (via :mod:`laud_mm.structures.flops`), the latency predictor
(:mod:`laud_mm.latency`) and the dynamic-inference path agree exactly.

Source: the ResNet bottleneck (He et al. 2016) as used by LAUDNet (paper sec. 3.2,
docs/method.md sec. 1), torchvision / mmdet ``style='pytorch'``: the 3x3 conv2
carries the stride, conv1 runs at the input resolution.
"""
import dataclasses
from dataclasses import dataclass, field
from typing import Optional, Sequence, Tuple

PARADIGMS = ('spatial', 'channel', 'layer')


def is_granularity(value) -> bool:
    """Whether ``value`` is a valid S or G: a positive ``int`` (not a
    bool). Source: paper sec. 3.1 (S x S patches), sec. 3.2 (groups of G
    channels)."""
    return isinstance(value, int) and not isinstance(value, bool) and \
        value >= 1


def check_paradigm(owner: str, paradigm: Optional[str], granularity,
                   num_stages: int,
                   widths: Optional[Sequence[int]] = None
                   ) -> Optional[Tuple[int, ...]]:
    """Validate a backbone's ``paradigm`` / ``granularity`` config keys.

    Args:
        owner: the class named in the messages (e.g. ``'LAUDResNet'``).
        paradigm: 'spatial', 'channel', 'layer' or None (static network).
        granularity: one S (spatial) or G (channel) per stage; None for
            'layer' and static.
        num_stages: stages of the backbone.
        widths: per-stage channel widths a channel-group size G must divide
            (checked when given).

    Returns:
        ``granularity`` as a tuple of ints, or None.

    Raises:
        ValueError: naming the offending key and value.
    """
    if paradigm is not None and paradigm not in PARADIGMS:
        raise ValueError(f'{owner}: paradigm={paradigm!r} is unknown; use '
                         f'one of {PARADIGMS} or None for the static network')
    if paradigm in ('spatial', 'channel'):
        if granularity is None or isinstance(granularity, (int, str)) or \
                len(tuple(granularity)) != num_stages:
            raise ValueError(
                f'{owner}: granularity={granularity!r} must give one '
                f'{"S" if paradigm == "spatial" else "G"} per stage '
                f'({num_stages} entries) for paradigm={paradigm!r}')
        granularity = tuple(granularity)
        for g in granularity:
            if not is_granularity(g):
                raise ValueError(f'{owner}: granularity={granularity!r} '
                                 f'must hold positive integers')
        if paradigm == 'channel' and widths is not None:
            for i, (g, width) in enumerate(zip(granularity, widths)):
                if width % g:
                    raise ValueError(
                        f'{owner}: granularity={granularity!r}: G={g} does '
                        f'not divide the stage-{i} bottleneck width {width}')
        return granularity
    if granularity is not None:
        raise ValueError(f'{owner}: granularity={granularity!r} is only used '
                         f"with paradigm 'spatial' or 'channel', not "
                         f'paradigm={paradigm!r}; leave it None')
    return None


def conv_out_size(size: int, kernel: int, stride: int, padding: int,
                  dilation: int = 1) -> int:
    """Output length of a convolution or pooling window along one axis.

    Args:
        size: input length in pixels (>= 1).
        kernel, stride, padding, dilation: the window's hyper-parameters.

    Returns:
        ``floor((size + 2 * padding - dilation * (kernel - 1) - 1) / stride) + 1``.

    Raises:
        ValueError: if the window does not fit (the result would be < 1).
    """
    out = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    if out < 1:
        raise ValueError(
            f'input length {size} is too small for a window of kernel {kernel}, '
            f'stride {stride}, padding {padding}')
    return out


def ceil_div(a: int, b: int) -> int:
    """``ceil(a / b)`` for positive integers."""
    return -(-a // b)


@dataclass(frozen=True)
class BlockGeometry:
    """Shape of one bottleneck block for one input size (per sample).

    Attributes:
        stage: stage index, 0-based (ResNet ``layer1`` is stage 0).
        index: block index inside its stage, 0-based.
        in_channels: C_in of the block input x.
        width: bottleneck width (output channels of conv1 and conv2).
        out_channels: C_out = width * expansion.
        stride: stride of conv2 (and of the downsample path).
        in_hw: (H_in, W_in) of x, pixels.
        out_hw: (H_out, W_out) of the block output, pixels.
        has_downsample: whether the shortcut is a 1x1 conv + BN (else identity).
        paradigm: 'spatial', 'channel', 'layer' or None (static block).
        granularity: S (spatial, patch side in output pixels) or G (channel,
            channels per group); None for layer skipping and static blocks.
        dilation: dilation of conv2 (1 for standard ResNets).
        kind: block family, 'bottleneck' for ResNet, 'regnety' for the
            RegNetY block (:mod:`laud_mm.models.regnet.block`: grouped 3x3
            conv2, squeeze-and-excitation before conv3, expansion 1); the
            dispatch key of the FLOPs count and the latency predictor.
        groups: number of conv groups of conv2 (1 for ResNet; RegNetY:
            width / group width).
        se_channels: hidden width of the squeeze-and-excitation module (0:
            no SE, ResNet; RegNetY: round(0.25 * in_channels)).
    """
    stage: int
    index: int
    in_channels: int
    width: int
    out_channels: int
    stride: int
    in_hw: Tuple[int, int]
    out_hw: Tuple[int, int]
    has_downsample: bool
    paradigm: Optional[str] = None
    granularity: Optional[int] = None
    dilation: int = 1
    kind: str = 'bottleneck'
    groups: int = 1
    se_channels: int = 0

    @property
    def group_width(self) -> int:
        """Channels per conv group of conv2 (``width // groups``)."""
        return self.width // self.groups

    @property
    def patch_grid(self) -> Tuple[int, int]:
        """Spatial masker grid (ceil(H_out / S), ceil(W_out / S)).

        Raises:
            ValueError: if the block is not spatial.
        """
        if self.paradigm != 'spatial':
            raise ValueError(f'patch_grid is defined for spatial blocks, '
                             f'not paradigm={self.paradigm!r}')
        s = self.granularity
        return ceil_div(self.out_hw[0], s), ceil_div(self.out_hw[1], s)

    @property
    def num_groups(self) -> int:
        """Number of channel groups (width / G) of a channel block.

        Raises:
            ValueError: if the block is not a channel block.
        """
        if self.paradigm != 'channel':
            raise ValueError(f'num_groups is defined for channel blocks, '
                             f'not paradigm={self.paradigm!r}')
        return self.width // self.granularity

    @property
    def channel_masker_hidden(self) -> int:
        """Hidden width h = max(n_groups // 16, 16) of the channel masker MLP."""
        return max(self.num_groups // 16, 16)

    def with_input(self, in_hw: Tuple[int, int]) -> 'BlockGeometry':
        """The same block at another input size (recomputes out_hw)."""
        return dataclasses.replace(
            self, in_hw=tuple(in_hw),
            out_hw=block_out_hw(in_hw, self.stride, self.dilation))


def block_out_hw(in_hw: Tuple[int, int], stride: int,
                 dilation: int = 1) -> Tuple[int, int]:
    """Output size of a bottleneck (3x3 conv2, padding = dilation)."""
    return (conv_out_size(in_hw[0], 3, stride, dilation, dilation),
            conv_out_size(in_hw[1], 3, stride, dilation, dilation))


@dataclass
class StemGeometry:
    """Shape of the ResNet stem (per sample).

    Attributes:
        in_channels: image channels (3).
        out_channels: stem width (64).
        in_hw: image size (H, W) in pixels.
        conv_hw: size after the stride-2 7x7 conv.
        out_hw: size after the max-pool.
        kind: ``'resnet'`` (class attribute; FLOPs / latency dispatch key).
    """
    kind = 'resnet'
    in_channels: int
    out_channels: int
    in_hw: Tuple[int, int]
    conv_hw: Tuple[int, int] = field(init=False)
    out_hw: Tuple[int, int] = field(init=False)

    def __post_init__(self):
        self.conv_hw = (conv_out_size(self.in_hw[0], 7, 2, 3),
                        conv_out_size(self.in_hw[1], 7, 2, 3))
        self.out_hw = (conv_out_size(self.conv_hw[0], 3, 2, 1),
                       conv_out_size(self.conv_hw[1], 3, 2, 1))


@dataclass
class DeepStemGeometry(StemGeometry):
    """Shape of the deep ResNet stem (ResNetV1c, mmdet / mmseg
    ``deep_stem=True``), per sample: three 3x3 convolutions (+ BN + ReLU),
    ``in_channels -> out_channels / 2`` at stride 2, ``out_channels / 2 ->
    out_channels / 2`` and ``out_channels / 2 -> out_channels`` at stride 1
    (padding 1 each), then the 3x3/2 max-pool.

    Attributes: as :class:`StemGeometry` (``conv_hw``: after the three
    convolutions, the same size as after the 7x7/2 conv); ``kind ==
    'resnet_deep'`` (class attribute).

    Source: He et al. 2019 ("Bag of Tricks", ResNet-C), mmdet / mmseg
    ``ResNet._make_stem_layer``.
    """
    kind = 'resnet_deep'

    def __post_init__(self):
        self.conv_hw = (conv_out_size(self.in_hw[0], 3, 2, 1),
                        conv_out_size(self.in_hw[1], 3, 2, 1))
        self.out_hw = (conv_out_size(self.conv_hw[0], 3, 2, 1),
                       conv_out_size(self.conv_hw[1], 3, 2, 1))

    @property
    def mid_channels(self) -> int:
        """Width of the first two convolutions, ``out_channels // 2``."""
        return self.out_channels // 2


@dataclass
class RegNetStemGeometry(StemGeometry):
    """Shape of the RegNet stem (per sample): one 3x3 stride-2 conv (padding
    1) + BN + ReLU, no max-pool (torchvision ``SimpleStemIN``).

    Attributes: as :class:`StemGeometry`; ``out_hw == conv_hw``;
    ``kind == 'regnet'`` and ``kernel == 3`` (class attributes).

    Source: Radosavovic et al. 2020 (RegNet), torchvision
    ``models/regnet.py``; docs/method.md sec. 1.
    """
    kind = 'regnet'
    kernel = 3

    def __post_init__(self):
        self.conv_hw = (conv_out_size(self.in_hw[0], 3, 2, 1),
                        conv_out_size(self.in_hw[1], 3, 2, 1))
        self.out_hw = self.conv_hw


# ------------------------------------------------------------------- T2T-ViT
@dataclass(frozen=True)
class TokenLayerGeometry:
    """Shape of one transformer encoder layer for one token count (per
    sample): the ViT counterpart of :class:`BlockGeometry`.

    The layer is ``x + attn(ln1(x))`` then ``x + ffn(ln2(x))`` on (L, D)
    tokens: qkv Linear(D, 3D), H heads of ``head_dims = D / H``, QK^T,
    softmax, AV, proj Linear(D, D), FFN Linear(D, F) - GELU - Linear(F, D).

    Attributes:
        stage: 0 (the encoder is one stage; kept for the predictor's
            per-stage table).
        index: layer index in the encoder, 0-based.
        num_tokens: L, tokens per sample including the extra (class) tokens.
        embed_dims: D.
        num_heads: H (divides D).
        ffn_channels: F, hidden width of the FFN.
        paradigm: 'spatial' (token skipping), 'channel' (head skipping),
            'layer' or None (static layer).
        granularity: always None: a token, a head and a layer are each one
            gate (kept so that the predictor's ``predict_static`` can reset
            it like a CNN block's).
        num_extra_tokens: leading tokens that are never skipped (1 with a
            class token).
        kind: ``'vit'`` (dispatch key of the FLOPs count and the latency
            predictor).

    Source: paper sec. 3.2 ("Generalization in Transformer architectures":
    token skipping = spatial, head skipping = channel, layer skipping, after
    AdaViT); T2T-ViT (Yuan et al. 2021).
    """
    stage: int
    index: int
    num_tokens: int
    embed_dims: int
    num_heads: int
    ffn_channels: int
    paradigm: Optional[str] = None
    granularity: Optional[int] = None
    num_extra_tokens: int = 1
    kind: str = 'vit'

    @property
    def head_dims(self) -> int:
        """Channels per head, ``embed_dims // num_heads``."""
        return self.embed_dims // self.num_heads

    @property
    def num_patch_tokens(self) -> int:
        """Tokens a token masker gates: ``num_tokens - num_extra_tokens``."""
        return self.num_tokens - self.num_extra_tokens

    @property
    def channel_masker_hidden(self) -> int:
        """Hidden width of the head masker MLP, ``max(H // 16, 16)`` (the
        channel masker's rule with one group per head)."""
        return max(self.num_heads // 16, 16)


@dataclass
class T2TStemGeometry:
    """Shape of the Tokens-to-Token module of T2T-ViT (per sample), the
    ViT's "stem" (always dense).

    soft split 0: unfold 7x7, stride 4, padding 2 of the image
    (C_in * 49-dim tokens on ``hw0``); T2T layer 1 (1 head, ``token_dims``);
    soft split 1: unfold 3x3/2/1 (``token_dims * 9``-dim tokens on ``hw1``);
    T2T layer 2; soft split 2: unfold 3x3/2/1 on ``out_hw``; linear projection
    ``token_dims * 9 -> embed_dims``.

    Attributes:
        in_channels: image channels (3).
        token_dims: width of the T2T layers (64 for T2T-ViT-t-14).
        embed_dims: D of the encoder.
        in_hw: image size (H, W) in pixels.
        hw0, hw1: token grids after soft splits 0 and 1.
        out_hw: the patch-token grid after soft split 2 (stride 16).
        kind: ``'t2t'`` (class attribute).

    Raises:
        ValueError: (on construction) if the image is too small for an
            unfold.

    Source: T2T-ViT (Yuan et al. 2021), mmpretrain ``T2TModule``.
    """
    in_channels: int
    token_dims: int
    embed_dims: int
    in_hw: Tuple[int, int]
    hw0: Tuple[int, int] = field(init=False)
    hw1: Tuple[int, int] = field(init=False)
    out_hw: Tuple[int, int] = field(init=False)
    kind = 't2t'

    def __post_init__(self):
        self.hw0 = tuple(conv_out_size(s, 7, 4, 2) for s in self.in_hw)
        self.hw1 = tuple(conv_out_size(s, 3, 2, 1) for s in self.hw0)
        self.out_hw = tuple(conv_out_size(s, 3, 2, 1) for s in self.hw1)

    @property
    def num_patches(self) -> int:
        """Patch tokens entering the encoder (without the class token)."""
        return self.out_hw[0] * self.out_hw[1]
