"""Maskers: the small networks that decide, per sample, what a block computes
(the gate-to-mask expansion is :mod:`laud_mm.models.layers.masks`).

Source: paper sec. 3.2 and fig. 2; docs/method.md sec. 1 (masker inputs and
architectures, keep-biased initialisation).
"""
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...ops.masker_gate import _masker_gate, fast_masker_gate
from ...structures.geometry import ceil_div, is_granularity
from .channel_mean import channel_mean
from .gates import gumbel_gate, init_keep_bias

GateOverride = Optional[Union[float, torch.Tensor]]


class MaskerBase(nn.Module):
    """Common part: Gumbel temperature, gate override, the gate call.

    Attributes:
        tau: Gumbel temperature used in training (set by
            :class:`laud_mm.GumbelTemperatureHook`).
        noise_scale: factor on the training gates' Gumbel noise (1: the
            paper's; set by :class:`laud_mm.GumbelNoiseHook`; see
            :func:`~laud_mm.models.layers.gates.gumbel_gate`).
        forced_gate: None (gates come from the logits), 0 or 1 broadcast to
            every gate, or a tensor of the gate shape holding 0s and 1s.
            Used by tests and benchmarks to impose activation patterns.
            Other values are refused (ValueError): masked-dense evaluation
            multiplies the block's output by the gate while dynamic
            inference keeps or skips the work (gate > 0.5), so a gate of
            0.5 or 0.7 would make the two modes differ.
    """

    def __init__(self):
        super().__init__()
        self.tau = 1.0
        self.noise_scale = 1.0
        self.forced_gate = None

    @property
    def forced_gate(self) -> GateOverride:
        """The imposed gate (see the class attributes), validated when set.

        Raises:
            ValueError: a value other than None, 0, 1 or a tensor of 0s and
                1s.
        """
        return self._forced_gate

    @forced_gate.setter
    def forced_gate(self, value: GateOverride) -> None:
        if value is None:
            self._forced_gate = None
            return
        if isinstance(value, torch.Tensor):
            if value.is_complex() or not bool(((value == 0) |
                                               (value == 1)).all()):
                bad = value[(value != 0) & (value != 1)].flatten()[:3]
                raise ValueError(
                    f'forced_gate: a tensor of gates must hold 0s and 1s '
                    f'(keep / skip), got values {bad.tolist()}: masked-dense '
                    f'evaluation multiplies by a gate and dynamic inference '
                    f'thresholds it at 0.5, so other values make them differ')
            # a copy: a later in-place write to the caller's tensor would
            # bypass this check
            self._forced_gate = value.detach().clone()
            return
        if not isinstance(value, (int, float)) or value not in (0, 1):
            raise ValueError(
                f'forced_gate={value!r} must be None, 0 or 1 (or a tensor of '
                f'0s and 1s): masked-dense evaluation multiplies by a gate '
                f'and dynamic inference thresholds it at 0.5, so other '
                f'values make them differ')
        self._forced_gate = float(value)

    def _gate(self, logits: torch.Tensor) -> torch.Tensor:
        if self.forced_gate is None:
            return gumbel_gate(logits, self.tau, self.training,
                               noise_scale=self.noise_scale)
        shape = logits.shape[:-1]
        f = self.forced_gate
        # the "+ 0 * logits" below only keeps the masker in the autograd
        # graph (zero even for inf / NaN logits: the gate is the forced one
        # either way): without a graph, the forced gate alone (one
        # operator, not four: dynamic inference is host-bound on small
        # inputs and GPUs)
        graph = torch.is_grad_enabled() and logits.requires_grad
        if isinstance(f, torch.Tensor):
            if tuple(f.shape) != tuple(shape):
                raise ValueError(f'forced_gate has shape {tuple(f.shape)}, '
                                 f'the gates have shape {tuple(shape)}')
            if not graph:
                return f.to(logits, copy=True)
            # + 0 * logits: keep the masker in the graph (DDP with
            # find_unused_parameters=False needs every parameter used)
            return f.to(logits) + _zero_like_gate(logits)
        if not graph:
            return logits.new_full(shape, float(f))
        # keep the graph connected so that DDP sees the masker as used
        return logits.new_full(shape, float(f)) + _zero_like_gate(logits)


def _zero_like_gate(logits: torch.Tensor) -> torch.Tensor:
    """Zeros of the gate shape (logits (..., 2) -> (...)) connected to the
    logits in the autograd graph (zero gradient), also where a logit is inf
    or NaN (``0 * inf`` is NaN)."""
    return torch.nan_to_num(0 * logits[..., 0], nan=0., posinf=0.,
                            neginf=0.)


class SpatialMasker(MaskerBase):
    """Patch-level spatial masker: adaptive average pool of the block input to
    a grid of ceil(H_out/S) x ceil(W_out/S) cells, then a 1x1 conv to
    (keep, skip) logits per cell.

    Args:
        in_channels: C_in of the block input.
        granularity: S, patch side in output pixels (>= 1).

    Shapes:
        forward(x (N, C_in, H_in, W_in), out_hw) -> gate (N, gh, gw), gh =
        ceil(H_out / S), gw = ceil(W_out / S).
    """

    def __init__(self, in_channels: int, granularity: int):
        super().__init__()
        self.granularity = granularity
        self.conv = nn.Conv2d(in_channels, 2, 1)
        self.init_weights()

    def init_weights(self) -> None:
        """Keep-biased init (keep +5, skip 0). Called again by mmengine's
        ``init_weights`` after the backbone's Kaiming init of all convs."""
        init_keep_bias(self.conv, keep=5., skip=0.)

    def grid(self, out_hw: Tuple[int, int]) -> Tuple[int, int]:
        """Patch grid (gh, gw) for an output size."""
        s = self.granularity
        return ceil_div(out_hw[0], s), ceil_div(out_hw[1], s)

    def logits(self, x: torch.Tensor, out_hw: Tuple[int, int]) -> torch.Tensor:
        """(N, gh, gw, 2) keep/skip logits."""
        pooled = F.adaptive_avg_pool2d(x, self.grid(out_hw))
        return self.conv(pooled).permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor, out_hw: Tuple[int, int]) -> torch.Tensor:
        return self._gate(self.logits(x, out_hw))


class _ScaleGrad(torch.autograd.Function):

    @staticmethod
    def forward(ctx, p, scale):
        ctx.scale = scale
        return p.view_as(p)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


def scale_grad(p: torch.Tensor, scale: float) -> torch.Tensor:
    """``p`` itself in the forward pass (bit for bit), ``scale * dL/dp`` in
    the backward pass: an optimizer step on a parameter used through it is
    ``scale`` times larger, while the gradient flowing to the tensors it
    multiplies is unchanged."""
    if scale == 1:
        return p
    return _ScaleGrad.apply(p, float(scale))


def compiled_gate(pooled: torch.Tensor, layers: Tuple[nn.Module, ...]
                  ) -> bool:
    """Whether an eval layer / channel masker decides with the compiled
    call (:func:`laud_mm.ops.masker_gate`, whose checks this replaces on
    the masker's path) rather than its modules: its
    linear layers have biases and no forward hooks (pruning, weight norm or
    a hook-based counter read or rewrite them in their forward, which the
    call would bypass), their weight and bias are registered parameters
    (a parametrized weight, computed on access, keeps the modules), and
    the tensors qualify
    (:func:`laud_mm.ops.fast_masker_gate`: float32 CPU, no autograd, no
    autocast). A subclass that overrides ``logits`` keeps its operators
    (the maskers' ``forward`` checks that); one that only changes the
    pooled input overrides ``masker_input``.

    Args:
        pooled: (N, C_in) the masker's input; layers: its nn.Linear layers
            in order.

    Returns:
        True for the compiled call. Source: paper sec. 3.2 (maskers),
        sec. 3.4 (scheduling).
    """
    params = []
    for m in layers:
        # the modules' own tables (nn.Module.__getattr__ is a slow path); a
        # weight that is not a parameter there (torch's parametrizations
        # compute it on access) takes the modules' path
        w, b = m._parameters.get('weight'), m._parameters.get('bias')
        if w is None or b is None or m._forward_hooks or \
                m._forward_pre_hooks:
            return False
        params += (w, b)
    return fast_masker_gate(pooled, *params)


def write_forced_gate(gate: torch.Tensor, forced: GateOverride) -> bool:
    """Write a forced gate (``masker.forced_gate``, not None) in place into
    a gate-shaped tensor the dynamic path owns and reads no more (the gate
    a compiled masker call returned, or a spatial block's logits of this
    call, on any device and float dtype; without autograd): one operator
    instead of a new tensor and a copy. The benchmarks impose gates, and
    what they time should be what a trained masker runs.

    Args:
        gate: float tensor of the gates' shape ((N, n_groups) channel, (N,)
            layer, (N, gh, gw) spatial), overwritten.
        forced: a tensor of 0s and 1s (converted to ``gate``'s dtype and
            device), or 0 / 1.

    Returns:
        True when written; False for a forced tensor of another shape
        (``gate`` untouched: the masker's ``_gate`` then refuses it, naming
        both shapes). Raises nothing itself.

    Source: paper sec. 3.2 (the inference gate).
    """
    if isinstance(forced, torch.Tensor):
        if forced.shape != gate.shape:
            return False
        gate.copy_(forced)
        return True
    gate.fill_(forced)
    return True


class ChannelMasker(MaskerBase):
    """Channel-group masker: global average pool, Linear(C_in, h), ReLU,
    Linear(h, 2 * n_groups), h = max(n_groups // 16, 16).

    **Gradient per gate.** The spatial and layer maskers apply shared weights
    to every gate of a block, so a block's sparsity (and task) gradient
    reaches their parameters whole. Here each group has its own row of
    ``fc2`` (weight and bias), and a group is ~1/n_groups of the block's
    FLOPs, so its row receives ~1/n_groups of the gradient a spatial or
    layer masker's parameters receive (measured: 6e-4 against 1e-2 on the
    first block of LAUD-R50): with one learning rate for all paradigms the
    channel gates barely move. ``fc2``'s parameters are therefore used with
    their gradient multiplied by n_groups (:func:`scale_grad`; the
    forward pass and the gradient to ``fc1`` are unchanged), which puts a
    group's gate on the footing of a spatial cell or a layer gate.

    Args:
        in_channels: C_in of the block input.
        num_groups: number of channel groups of the bottleneck width.
        group_grad_scale: multiply fc2's gradient by ``num_groups`` (see
            above); False: plain Linear layers.

    Shapes:
        forward(x (N, C_in, H, W)) -> gate (N, n_groups).

    Source: paper sec. 3.2 and appendix C.1 (the 2-layer channel masker);
    docs/method.md sec. 1-2.
    """

    def __init__(self, in_channels: int, num_groups: int,
                 group_grad_scale: bool = True):
        super().__init__()
        self.num_groups = num_groups
        self.group_grad_scale = bool(group_grad_scale)
        hidden = max(num_groups // 16, 16)
        self.fc1 = nn.Linear(in_channels, hidden)
        self.fc2 = nn.Linear(hidden, 2 * num_groups)
        self.init_weights()

    def init_weights(self) -> None:
        """Keep-biased init of the last layer (keep +2, skip -2)."""
        init_keep_bias(self.fc2, keep=2., skip=-2.)

    def _fc2(self, h: torch.Tensor) -> torch.Tensor:
        """``fc2(h)`` with the per-group gradient scale in training."""
        if not (self.training and self.group_grad_scale and
                torch.is_grad_enabled()):
            return self.fc2(h)
        n = float(self.num_groups)
        return F.linear(h, scale_grad(self.fc2.weight, n),
                        scale_grad(self.fc2.bias, n))

    def masker_input(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in) the global average pool of x (N, C_in, H, W)
        (:func:`~laud_mm.models.layers.channel_mean.channel_mean`: the
        previous block's record when valid). The input a subclass changes
        (paper sec. 3.2: the masker's pooled input)."""
        return channel_mean(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, n_groups, 2) keep/skip logits."""
        return self._logits_of(self.masker_input(x))

    def _logits_of(self, pooled: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc1(pooled))
        return self._fc2(h).view(pooled.shape[0], self.num_groups, 2)

    def forward(self, x: torch.Tensor, out_hw=None) -> torch.Tensor:
        if self.training or _replaced(self, ChannelMasker, 'logits'):
            return self._gate(self.logits(x))
        pooled = self.masker_input(x)
        if not compiled_gate(pooled, (self.fc1, self.fc2)):
            return self._gate(self._logits_of(pooled))
        # the MLP and the decision (keep >= skip) in one call; a forced
        # gate replaces the decision, not the cost
        gate, logits = _masker_gate(pooled, self.fc1.weight, self.fc1.bias,
                                    self.fc2.weight, self.fc2.bias)
        forced = self.forced_gate
        if forced is None or write_forced_gate(gate, forced):
            return gate
        return self._gate(logits.view(x.shape[0], self.num_groups, 2))


class LayerMasker(MaskerBase):
    """Layer-skipping masker: global average pool, Linear(C_in, 2).

    Args:
        in_channels: C_in of the block input.

    Shapes:
        forward(x (N, C_in, H, W)) -> gate (N,).
    """

    def __init__(self, in_channels: int):
        super().__init__()
        self.fc = nn.Linear(in_channels, 2)
        self.init_weights()

    def init_weights(self) -> None:
        """Keep-biased init (keep +5, skip 0)."""
        init_keep_bias(self.fc, keep=5., skip=0.)

    def masker_input(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in) the global average pool of x (N, C_in, H, W)
        (:func:`~laud_mm.models.layers.channel_mean.channel_mean`). The
        input a subclass changes (paper sec. 3.2)."""
        return channel_mean(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 2) keep/skip logits."""
        return self.fc(self.masker_input(x))

    def forward(self, x: torch.Tensor, out_hw=None) -> torch.Tensor:
        if self.training or _replaced(self, LayerMasker, 'logits'):
            return self._gate(self.logits(x))
        pooled = self.masker_input(x)
        if not compiled_gate(pooled, (self.fc,)):
            return self._gate(self.fc(pooled))
        # the linear layer and the decision in one call (as
        # ChannelMasker.forward)
        gate, logits = _masker_gate(pooled, self.fc.weight, self.fc.bias)
        gate, forced = gate.view(-1), self.forced_gate
        if forced is None or write_forced_gate(gate, forced):
            return gate
        return self._gate(logits)


def _module_hooks(module: nn.Module) -> bool:
    """Whether a call of ``module`` runs forward (pre-)hooks: its own or
    torch's global ones (``nn.modules.module.register_module_forward_hook``
    and ``..._pre_hook``)."""
    glob = nn.modules.module
    return bool(module._forward_hooks or module._forward_pre_hooks or
                getattr(glob, '_global_forward_hooks', None) or
                getattr(glob, '_global_forward_pre_hooks', None))


#: the methods a planned masker call stands for, as defined here (a
#: subclass or a later patch that replaces one keeps the module's call)
_STOCK_METHODS = ('forward', 'logits', 'masker_input')
_STOCK = {cls: dict((name, getattr(cls, name)) for name in _STOCK_METHODS)
          for cls in (LayerMasker, ChannelMasker)}


def _replaced(masker: nn.Module, cls: type, name: str) -> bool:
    """Whether ``masker``'s method ``name`` is not ``cls``'s as defined in
    this module: overridden by a subclass, patched on the class or set on
    the instance (its eval ``forward`` then runs that method, not the
    compiled call)."""
    return name in masker.__dict__ or \
        getattr(type(masker), name) is not _STOCK[cls][name]


def planned_masker(masker: nn.Module, like: torch.Tensor):
    """An eval layer / channel masker's forward as a function of the block
    input, its per-call checks made now, for a planned forward
    (:mod:`~.forward_plan`): the compiled call's eligibility
    (:func:`compiled_gate`), that the masker is a stock
    :class:`LayerMasker` / :class:`ChannelMasker` (no override of
    ``forward``, ``logits`` or ``masker_input`` by a subclass, a patch of
    the class or an instance attribute) in eval mode, and that no forward
    hook would run on it.

    Between a block's convolutions every operator and check runs with its
    code and data evicted, several times slower than in a loop
    (docs/regnety.md, "Host time between the convolutions"); the returned
    function is the call's remaining work: the pooled input
    (:func:`~.channel_mean.channel_mean`), the compiled MLP and decision,
    and the forced gate when set.

    Args:
        masker: the block's masker.
        like: a tensor with the block input's dtype and device.

    Returns:
        ``fn(x (N, C_in, H, W)) -> gate`` ((N,) layer, (N, n_groups)
        channel), the same gate as ``masker(x)`` (the same kernel on the
        same pooled input), a forced gate of another shape raising the
        masker's ValueError; or ``masker`` itself where a check fails (the
        call then makes its own checks). Parameters replaced after this
        call are not seen by ``fn``; in-place changes are.

    Source: paper sec. 3.2 (maskers) and sec. 3.4 (the host side of the
    dynamic operators).
    """
    cls = LayerMasker if isinstance(masker, LayerMasker) else \
        ChannelMasker if isinstance(masker, ChannelMasker) else None
    if cls is None or masker.training or _module_hooks(masker) or \
            any(_replaced(masker, cls, name) for name in _STOCK_METHODS):
        return masker
    layers = (masker.fc,) if cls is LayerMasker else \
        (masker.fc1, masker.fc2)
    # (compiled_gate first: it reads the layers' own parameter tables, so
    # a layer replaced by a module without them keeps the module's call)
    if not compiled_gate(like, layers):
        return masker
    params = tuple(m._parameters[name] for m in layers
                   for name in ('weight', 'bias'))
    if not all(p.is_contiguous() for p in params):
        return masker
    if cls is LayerMasker:
        w, b = params

        def layer_gate(x: torch.Tensor) -> torch.Tensor:
            gate, logits = _masker_gate(channel_mean(x), w, b)
            gate, forced = gate.view(-1), masker.forced_gate
            if forced is None or write_forced_gate(gate, forced):
                return gate
            return masker._gate(logits)
        return layer_gate
    w1, b1, w2, b2 = params
    groups = masker.num_groups

    def channel_gate(x: torch.Tensor) -> torch.Tensor:
        gate, logits = _masker_gate(channel_mean(x), w1, b1, w2, b2)
        forced = masker.forced_gate
        if forced is None or write_forced_gate(gate, forced):
            return gate
        return masker._gate(logits.view(x.shape[0], groups, 2))
    return channel_gate


def build_masker(paradigm: str, in_channels: int, width: int,
                 granularity: Optional[int]) -> nn.Module:
    """Masker for a paradigm.

    Args:
        paradigm: 'spatial', 'channel' or 'layer'.
        in_channels: C_in of the block input.
        width: bottleneck width (channel paradigm: split into groups of G).
        granularity: S (spatial) or G (channel); ignored for 'layer'.

    Raises:
        ValueError: unknown paradigm, S or G that is not a positive
            integer (``granularity``), or G that does not divide the width.
    """
    if paradigm in ('spatial', 'channel') and \
            not is_granularity(granularity):
        name = 'S' if paradigm == 'spatial' else 'G'
        raise ValueError(f'granularity={granularity!r}: paradigm='
                         f'{paradigm!r} needs the granularity {name} as a '
                         f'positive integer')
    if paradigm == 'spatial':
        return SpatialMasker(in_channels, granularity)
    if paradigm == 'channel':
        if width % granularity:
            raise ValueError(f'granularity G={granularity} must divide the '
                             f'bottleneck width {width}')
        return ChannelMasker(in_channels, width // granularity)
    if paradigm == 'layer':
        return LayerMasker(in_channels)
    raise ValueError(f'unknown paradigm {paradigm!r}')


# ------------------------------------------------------------ token maskers
class TokenMasker(MaskerBase):
    """Token-skipping masker (the spatial paradigm of a vision transformer):
    a Linear(D, 2) on every patch token gives its (keep, skip) logits. The
    leading extra tokens (the class token) are never gated.

    Args:
        embed_dims: D, the token width.
        num_extra_tokens: leading tokens that are always kept (1 with a class
            token).

    Shapes:
        forward(x (N, L, D)) -> gate (N, L - num_extra_tokens), one gate per
        patch token.

    Source: paper sec. 3.2 (token skipping = spatial-wise dynamic computation
    in vision Transformers, after AdaViT); docs/method.md sec. 1
    (keep-biased init: keep +5, skip 0, as the spatial masker).
    """

    def __init__(self, embed_dims: int, num_extra_tokens: int = 1):
        super().__init__()
        self.num_extra_tokens = num_extra_tokens
        self.fc = nn.Linear(embed_dims, 2)
        self.init_weights()

    def init_weights(self) -> None:
        """Keep-biased init (keep +5, skip 0)."""
        init_keep_bias(self.fc, keep=5., skip=0.)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L - extra, 2) keep/skip logits of the patch tokens."""
        return self.fc(x[:, self.num_extra_tokens:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._gate(self.logits(x))


class HeadMasker(ChannelMasker):
    """Head-skipping masker (the channel paradigm of a vision transformer):
    the channel masker's MLP (Linear(D, h), ReLU, Linear(h, 2H), h =
    max(H // 16, 16)) on the mean of all tokens, one gate per attention head.

    Args:
        embed_dims: D, the token width.
        num_heads: H, attention heads of the layer.

    Shapes:
        forward(x (N, L, D)) -> gate (N, H).

    Source: paper sec. 3.2 (head skipping = channel skipping, after AdaViT);
    docs/method.md sec. 1 (channel masker, keep +2 / skip -2).
    """

    def __init__(self, embed_dims: int, num_heads: int):
        super().__init__(embed_dims, num_heads)

    def masker_input(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) the mean of the tokens of x (N, L, D)."""
        return x.mean(dim=1)


class TokenLayerMasker(LayerMasker):
    """Layer-skipping masker of a transformer layer: Linear(D, 2) on the
    mean of all tokens, one gate per sample.

    Args:
        embed_dims: D, the token width.

    Shapes:
        forward(x (N, L, D)) -> gate (N,).

    Source: paper sec. 3.2 (layer skipping), docs/method.md sec. 1
    (keep +5, skip 0).
    """

    def masker_input(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) the mean of the tokens of x (N, L, D)."""
        return x.mean(dim=1)


def build_token_masker(paradigm: str, embed_dims: int, num_heads: int,
                       num_extra_tokens: int = 1) -> MaskerBase:
    """Masker of a transformer layer for a paradigm.

    Args:
        paradigm: 'spatial' (tokens), 'channel' (heads) or 'layer'.
        embed_dims: D.
        num_heads: H (channel paradigm).
        num_extra_tokens: tokens never gated (spatial paradigm).

    Raises:
        ValueError: for an unknown paradigm.
    """
    if paradigm == 'spatial':
        return TokenMasker(embed_dims, num_extra_tokens)
    if paradigm == 'channel':
        return HeadMasker(embed_dims, num_heads)
    if paradigm == 'layer':
        return TokenLayerMasker(embed_dims)
    raise ValueError(f'unknown paradigm {paradigm!r}')
