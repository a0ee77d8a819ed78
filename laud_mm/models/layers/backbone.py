"""The backbone API shared by every LAUD backbone (ResNet, RegNetY,
T2T-ViT): gate switches, Gumbel temperature, geometry and activation
statistics.

A backbone using :class:`LAUDBackboneMixin` provides ``self.blocks`` (its
mask-and-compute blocks in forward order, each with ``masker``,
``dynamic_inference``, ``last_stats`` and ``geometry(in_hw)``),
``stem_geometry(in_hw)`` and sets ``self._input_hw`` in ``forward``.

Source: paper sec. 3.2 (mask-and-compute blocks), docs/method.md sec. 2
(FLOPs-based activation rates incl. the static stem).
"""
import contextlib
import difflib
import inspect
from typing import Dict, Iterable, Iterator, List, Tuple

import torch

from ...structures import flops as flops_lib
from ...structures.checks import check_bool
from ...structures.geometry import BlockGeometry
from .dynamic import owned_block_inputs
from .maskers import ChannelMasker
from .stem import folded_stem

#: memory formats the static network (:meth:`LAUDBackboneMixin.
#: static_forward`) is timed in, by name; the faster one is the baseline
#: dynamic inference is compared with (a user deploying the static network
#: picks it): PyTorch's default NCHW and channels_last (NHWC), which oneDNN
#: runs faster on large maps with several threads (docs/benchmarks.md,
#: "Static baseline")
STATIC_LAYOUTS = {'NCHW': torch.contiguous_format,
                  'channels_last': torch.channels_last}


def layout_name(fmt: torch.memory_format) -> str:
    """The key of :data:`STATIC_LAYOUTS` of a memory format (the name the
    benchmark tables print).

    Args:
        fmt: ``torch.contiguous_format`` (NCHW) or ``torch.channels_last``.

    Returns:
        'NCHW' or 'channels_last'.

    Raises:
        ValueError: a format that is not one of them (naming it).
    """
    for name, f in STATIC_LAYOUTS.items():
        if f == fmt:
            return name
    raise ValueError(f'memory format {fmt} is not one of '
                     f'{list(STATIC_LAYOUTS)}')


def reject_unknown_keys(owner: str, kwargs: Dict[str, object],
                        upstream, own: Iterable[str] = ()) -> None:
    """Refuse config keys that neither a LAUD backbone nor the upstream
    class it passes ``**kwargs`` to takes, before any other check (a typo
    such as ``paradim=`` would otherwise surface as a complaint about
    another key, or be swallowed).

    Args:
        owner: the class named in the message (e.g. ``'LAUDResNet'``).
        kwargs: the keyword arguments passed on to ``upstream``.
        upstream: the class whose ``__init__`` receives them.
        own: the LAUD backbone's own keys (suggested for typos too).

    Raises:
        TypeError: naming the unknown key, its value and the closest known
            key (as Python does for an unexpected keyword argument).
    """
    params = inspect.signature(upstream.__init__).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    known = sorted(set(k for k in params if k != 'self') | set(own))
    for key, value in kwargs.items():
        if key not in params:
            near = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ''
            raise TypeError(f'{owner}: unknown config key {key}={value!r}'
                            f'{hint} (keys: {known})')


class LAUDBackboneMixin:
    """Gate switches and statistics over ``self.blocks`` (see module doc)."""

    @property
    def dynamic_inference(self) -> bool:
        """Whether eval-mode forward runs the dynamic (skip-the-work) path.

        Setting it True checks that every block has a dynamic path
        (:meth:`check_dynamic_inference`); a value other than True / False
        raises ValueError naming it."""
        return self._dynamic_inference

    @dynamic_inference.setter
    def dynamic_inference(self, value: bool) -> None:
        check_bool(type(self).__name__, 'dynamic_inference', value)
        if value:
            self.check_dynamic_inference()
        self._dynamic_inference = value
        for b in self.blocks:
            b.dynamic_inference = value

    def check_input(self, x, in_channels: int) -> None:
        """Refuse an input batch the backbone cannot take, naming what is
        wrong (called first by every LAUD backbone's ``forward``).

        Args:
            x: the image batch, expected (N, in_channels, H, W) floating
                point and finite.
            in_channels: the image channels of the stem.

        Raises:
            ValueError: not a 4-D tensor of ``in_channels`` channels (e.g. a
                grayscale image), an integer dtype (uint8 pixels not
                normalised), or NaN / inf values: a masked-out NaN is 0 in
                dynamic inference and NaN in masked-dense evaluation (0 x
                NaN), so the two modes would differ for that sample. Each
                sample is screened by its float32 sum (NaN and inf make it
                non-finite; one pass); only a non-finite sum, which finite
                values may also reach by overflow, is checked element by
                element.
        """
        owner = type(self).__name__
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or \
                x.shape[1] != in_channels:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else \
                type(x).__name__
            raise ValueError(
                f'{owner}: input of shape {shape}, expected (N, '
                f'{in_channels}, H, W) (in_channels={in_channels}); load '
                f"grayscale images as color (LoadImageFromFile "
                f"color_type='color')")
        if not x.is_floating_point():
            raise ValueError(
                f'{owner}: input of dtype {x.dtype}, expected floating point: '
                f'normalise the pixels first (the data preprocessor\'s mean / '
                f'std, or x.float())')
        # a sample holding NaN / inf has a non-finite sum (NaN and inf
        # propagate); a finite sum clears the sample in one cheap pass,
        # a non-finite one (also reached by overflow of huge finite values)
        # is settled element by element
        with torch.no_grad():
            sums = x.sum(dim=(1, 2, 3), dtype=torch.float32)
        if bool(torch.isfinite(sums).all()):
            return
        finite = torch.isfinite(x).flatten(1).all(1)
        if not bool(finite.all()):
            bad = (~finite).nonzero()[:, 0].tolist()
            raise ValueError(
                f'{owner}: input samples {bad[:8]} hold NaN / inf values; '
                f'the backbone refuses them (a masked-out NaN is 0 in '
                f'dynamic inference and NaN in masked-dense evaluation)')

    def check_dynamic_inference(self) -> None:
        """Raise if a block cannot run dynamic inference (family method;
        default: every block can).

        Raises:
            ValueError: naming the config key and value that prevent it.
        """

    def train(self, mode: bool = True):
        """The upstream backbone's ``train`` (mmdet's frozen stages and
        ``norm_eval``, mmpretrain's ``BaseBackbone.train``), then the
        maskers released from frozen stages with
        :attr:`train_frozen_maskers`; returns the backbone as
        ``nn.Module.train`` does (those return None), so that
        ``model = MODELS.build(cfg).eval()`` works for every family."""
        super().train(mode)
        self.release_frozen_maskers()
        return self

    @property
    def train_frozen_maskers(self) -> bool:
        """Whether the maskers of frozen stages (``frozen_stages``) train:
        frozen stages keep their convolutions and norms fixed, as mmdet's
        option does, but their maskers get gradients and run in the
        backbone's mode (Gumbel gates in training). Set by the static
        weights route (:func:`~laud_mm.models.layers.weights.
        apply_weights_route`): the maskers are new there and would stay at
        their keep-biased initialisation, so that a frozen stage never
        skipped. False (default, and the LAUD checkpoint route): a frozen
        stage's maskers stay frozen with it, as in the authors' release.

        Raises:
            ValueError: a value other than True / False (on setting).
        """
        return getattr(self, '_train_frozen_maskers', False)

    @train_frozen_maskers.setter
    def train_frozen_maskers(self, value: bool) -> None:
        self._train_frozen_maskers = check_bool(
            type(self).__name__, 'train_frozen_maskers', value)
        self.train(self.training)

    def release_frozen_maskers(self) -> None:
        """With :attr:`train_frozen_maskers`, every masker's parameters
        require gradients and every masker is in the backbone's mode again
        (after a family's ``_freeze_stages`` froze those of its frozen
        stages); otherwise nothing."""
        if not self.train_frozen_maskers:
            return
        for m in self.maskers():
            m.train(self.training)
            for p in m.parameters():
                p.requires_grad_(True)

    @property
    def group_grad_scale(self) -> bool:
        """Whether the channel maskers (``ChannelMasker``, T2T-ViT's
        ``HeadMasker``) multiply their last layer's gradient by their group
        count in training (a laud_mm addition, the forward pass unchanged:
        docs/method.md sec. 2, "Channel maskers' gradient scale"); False
        gives the paper's plain gradient. The config key of the same name
        of every LAUD backbone (default True).

        Raises:
            ValueError: on setting, a value other than True / False, or
                False for a backbone without channel maskers (a spatial,
                layer or static one: the option would do nothing), naming
                the key and the paradigm.

        Source: a laud_mm addition to the paper's training (sec. 3.5);
        docs/method.md sec. 2.
        """
        return getattr(self, '_group_grad_scale', True)

    @group_grad_scale.setter
    def group_grad_scale(self, value: bool) -> None:
        owner = type(self).__name__
        check_bool(owner, 'group_grad_scale', value)
        grouped = [m for m in self.maskers()
                   if isinstance(m, ChannelMasker)]
        if not value and not grouped:
            raise ValueError(
                f'{owner}: group_grad_scale=False applies to the channel '
                f'maskers of paradigm=\'channel\' only; paradigm='
                f'{getattr(self, "paradigm", None)!r} has none')
        self._group_grad_scale = value
        for m in grouped:
            m.group_grad_scale = value

    def maskers(self) -> List[torch.nn.Module]:
        """The maskers of all dynamic blocks, in forward order."""
        return [b.masker for b in self.blocks if b.masker is not None]

    def set_tau(self, tau: float) -> None:
        """Set the Gumbel temperature of every masker.

        Raises:
            ValueError: if ``tau <= 0``.
        """
        if not tau > 0:
            raise ValueError(f'Gumbel temperature tau must be > 0, got {tau}')
        for m in self.maskers():
            m.tau = float(tau)

    def force_gates(self, value) -> None:
        """Impose every gate: None (learned gates), 1.0 (all on), 0.0 (all
        off); a tensor of 0s and 1s is applied to every masker and must fit
        each.

        Raises:
            ValueError: any other value (see
                :attr:`~laud_mm.models.layers.maskers.MaskerBase.forced_gate`:
                a gate of 0.5 would make masked-dense evaluation and
                dynamic inference differ).
        """
        for m in self.maskers():
            m.forced_gate = value

    @contextlib.contextmanager
    def static_blocks(self) -> Iterator[None]:
        """Within the context every block runs its static forward (dense, no
        masker, BN folded) and leaves its statistics of the last dynamic or
        masked-dense forward untouched."""
        for b in self.blocks:
            b.static_mode = True
        try:
            yield
        finally:
            for b in self.blocks:
                b.static_mode = False

    def planned_blocks(self) -> contextlib.AbstractContextManager:
        """The context a CNN backbone's forward runs its blocks in: in
        dynamic inference (eval, a paradigm set) the blocks own their
        inputs (an identity block may write into the previous block's
        output, read by nobody else) and plan their host work once per
        forward (:func:`~.dynamic.owned_block_inputs`); otherwise no
        context.

        Source: paper sec. 3.4 (the dynamic operators' scheduling).
        """
        if self.paradigm is not None and self.dynamic_inference and \
                not self.training:
            return owned_block_inputs(self.blocks)
        return contextlib.nullcontext()

    def stage_outputs(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Run the stages ``self.res_layers`` (mmdet / mmpretrain CNN
        backbones) on the stem output x (N, C, H, W).

        Returns:
            the outputs of the stages in ``self.out_indices``, in order.
        """
        outs = []
        for i, name in enumerate(self.res_layers):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def inference_stem(self, layers: List[tuple]):
        """The stem as BN-folded convolutions when this forward folds BN,
        else None (the upstream stem runs).

        BN is folded in eval mode without gradients, in dynamic inference
        (a paradigm set) and inside :meth:`static_forward`; masked-dense
        evaluation and training run the upstream modules bit for bit.

        Args:
            layers: the stem's (conv, norm) pairs in order, each followed
                by a ReLU.

        Returns:
            a callable (N, C_in, H, W) -> (N, C_out, H', W') (a
            :class:`~.stem.FoldedStem`), or None also when a pair cannot be
            folded (a norm other than BatchNorm, a non-plain convolution).

        Source: paper sec. 3.4 (convolution + BN + ReLU as one operator).
        """
        if self.training or torch.is_grad_enabled():
            return None
        static = bool(self.blocks) and self.blocks[0].static_mode
        if not (static or (
                self.paradigm is not None and self.dynamic_inference)):
            return None
        return folded_stem(self, layers)

    def static_forward(self, x: torch.Tensor):
        """The static network of the same weights on ``x`` (eval mode, no
        autograd): the backbone's own forward with every block dense and its
        masker ignored, BN folded into the convolutions as dynamic inference
        does: the reference dynamic inference is timed against.

        Args:
            x: (N, C, H, W) images.

        Returns:
            what ``forward`` returns.

        Raises:
            ValueError: in training mode (BN cannot be folded).
        """
        if self.training:
            raise ValueError('static_forward needs the backbone in eval mode '
                             '(BN is folded)')
        input_hw = getattr(self, '_input_hw', None)
        with torch.no_grad(), self.static_blocks():
            out = self.forward(x)
        self._input_hw = input_hw  # the statistics stay the last forward's
        return out

    def block_geometries(self, in_hw: Tuple[int, int]) -> List[BlockGeometry]:
        """Geometry of every block for an image size (H, W), forward order.

        Raises:
            ValueError: if the image is too small for the stem.
        """
        hw = self.stem_geometry(in_hw).out_hw
        out = []
        for b in self.blocks:
            g = b.geometry(hw)
            out.append(g)
            hw = g.out_hw
        return out

    def activation_stats(self) -> Dict[str, object]:
        """Statistics of the last forward pass.

        Returns:
            dict with
            'block_flops': list of (N,) FLOPs per block and sample;
            'block_dense_flops': list of floats, dense FLOPs per block;
            'block_density': list of (N,) mask densities per block;
            'stem_flops': float; 'flops': (N,) backbone FLOPs per sample;
            'dense_flops': float; 'activation_rate': (N,) flops / dense;
            'geometries': list of :class:`BlockGeometry`;
            'input_hw': (H, W) of the batch.

        Raises:
            RuntimeError: if called before any forward.
        """
        if getattr(self, '_input_hw', None) is None or \
                any(b.last_stats is None for b in self.blocks):
            raise RuntimeError('activation_stats() needs a forward pass first')
        stem = float(flops_lib.stem_flops(self.stem_geometry(self._input_hw)))
        block_flops = [b.last_stats['flops'] for b in self.blocks]
        dense = [b.last_stats['dense'] for b in self.blocks]
        total = stem + sum(block_flops)
        dense_total = stem + sum(dense)
        return dict(
            block_flops=block_flops, block_dense_flops=dense,
            block_density=[b.last_stats['density'] for b in self.blocks],
            stem_flops=stem, flops=total, dense_flops=dense_total,
            activation_rate=total / dense_total,
            geometries=[b.last_stats['geometry'] for b in self.blocks],
            input_hw=self._input_hw)
