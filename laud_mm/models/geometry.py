"""Block geometry of LAUD backbones: widths, strides and feature-map sizes.

One place computes the shape of every block for a given input size, so that the
sparsity loss (via :mod:`laud_mm.models.flops`), the latency predictor
(:mod:`laud_mm.latency`) and the dynamic-inference path agree exactly.

Source: the ResNet bottleneck (He et al. 2016) as used by LAUDNet (paper sec. 3.2,
METHOD_NOTES section 1), torchvision / mmdet ``style='pytorch'``: the 3x3 conv2
carries the stride, conv1 runs at the input resolution.
"""
import dataclasses
from dataclasses import dataclass, field
from typing import Optional, Tuple

PARADIGMS = ('spatial', 'channel', 'layer')


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
            RegNetY block (:mod:`laud_mm.models.regnet_blocks`: grouped 3x3
            conv2, squeeze-and-excitation before conv3, expansion 1).
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
    """
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
class RegNetStemGeometry(StemGeometry):
    """Shape of the RegNet stem (per sample): one 3x3 stride-2 conv (padding
    1) + BN + ReLU, no max-pool (torchvision ``SimpleStemIN``).

    Attributes: as :class:`StemGeometry`; ``out_hw == conv_hw``;
    ``kind == 'regnet'`` and ``kernel == 3`` (class attributes).

    Source: Radosavovic et al. 2020 (RegNet), torchvision
    ``models/regnet.py``; METHOD_NOTES section 1.
    """
    kind = 'regnet'
    kernel = 3

    def __post_init__(self):
        self.conv_hw = (conv_out_size(self.in_hw[0], 3, 2, 1),
                        conv_out_size(self.in_hw[1], 3, 2, 1))
        self.out_hw = self.conv_hw
