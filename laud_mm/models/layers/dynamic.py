"""What every family's dynamic-inference path shares: the call check and
no-grad wrapper, the eval gate (learned or forced), the autocast test, the
dtype of the residual add, and the owned-input protocol that lets identity
blocks write into their input.

A family's dynamic path (``laud_mm.models.<family>.dynamic``) provides one
function per paradigm, ``fn(block, x, geom) -> (out, gate)``, and calls
:func:`run_dynamic_path` with them.

Source: paper sec. 3.4 (gather -> compute -> scatter-add scheduling) and
appendix B.1 (operator fusion).
"""
import contextlib
from typing import Optional, Tuple

import torch
import torch.nn as nn

from ...ops.allocator import tune_cpu_allocator
from ...ops.dispatch import is_autocast, same_layout
from ...ops.epilogue import _add_relu_mean_, _relu_mean_rows_
from .channel_mean import record_channel_mean
from .folding import LayoutWeight
from .forward_plan import SEQUENCE_ATTR, SequencePlan


#: input layouts of the families' blocks: convolutional maps, token sequences
LAYOUTS = {4: '(N, C, H, W)', 3: '(N, L, D)'}


def run_dynamic_path(block, x: torch.Tensor, geom, paths: dict,
                     rank: int = 4):
    """Check the call and run ``paths[block.paradigm](block, x, geom)``
    without autograd. On CPU it first tunes the heap once
    (:func:`~laud_mm.ops.allocator.tune_cpu_allocator`: gate-dependent
    tensor sizes otherwise pay an mmap and page faults per tensor).

    Args:
        block: an eval-mode LAUD block.
        x: (N, C, H, W) block input (a transformer layer: (N, L, D)).
        geom: the block's geometry for ``x``.
        paths: paradigm name -> function(block, x, geom) -> (out, gate).
        rank: x's number of dimensions, 4 (N, C, H, W) or 3 (N, L, D).

    Returns:
        ``(out, gate)`` of the paradigm's path.

    Raises:
        ValueError: a block in training mode, x of the wrong rank, or a
            paradigm without a dynamic path.
        RuntimeError: called with gradients enabled and a tensor that
            requires them (x or a parameter of the block): dynamic
            inference computes no gradients (it runs under ``no_grad``, on
            BN-folded weights), so its outputs would silently carry none.
    """
    if block.training:
        raise ValueError('dynamic inference needs block.eval()')
    if torch.is_grad_enabled() and (x.requires_grad or any(
            p.requires_grad for p in block.parameters())):
        raise RuntimeError(
            'dynamic inference computes no gradients (BN-folded weights, '
            'no autograd graph): call it under torch.no_grad() or '
            'torch.inference_mode(), as mmengine\'s val / test loops do, or '
            'set dynamic_inference=False (masked-dense evaluation) for '
            'gradients')
    if x.dim() != rank:
        raise ValueError(f'x must be {LAYOUTS[rank]}, got {tuple(x.shape)}')
    fn = paths.get(block.paradigm)
    if fn is None:
        raise ValueError(
            f'block.paradigm={block.paradigm!r} has no dynamic path')
    if x.device.type == 'cpu':  # gate-dependent sizes: no mmap per tensor
        tune_cpu_allocator()
    with torch.no_grad():
        return fn(block, x, geom)


def forced_gate(masker: nn.Module, shape: Tuple[int, ...],
                x: torch.Tensor) -> torch.Tensor:
    """The masker's forced gate (``masker.forced_gate``) for gates of
    ``shape``, in x's dtype, validated by the masker itself.

    Raises:
        ValueError: a forced gate tensor of another shape.
    """
    return masker._gate(x.new_zeros(*shape, 2))


def sample_gate(block, x: torch.Tensor) -> torch.Tensor:
    """Eval gate of ``block`` for input x: the masker's deterministic
    decision (``logit_keep >= logit_skip``), or its forced gate when set.

    A forced gate replaces the masker's decision, not its cost: the masker
    runs either way (global pool and MLP of a channel / layer masker, the
    token masker's linear layer), so that benchmarks and the latency
    predictor's validation, which impose gates, time what a trained model
    runs. Source: paper sec. 3.2 (maskers), sec. 3.4 (the masker is part
    of every dynamic block's latency).

    Args:
        block: a LAUD block with a ``masker``.
        x: the block input (the masker's input).

    Returns:
        gate in {0, 1}, the masker's gate shape ((N, n_groups) channel,
        (N,) layer, (N, L) tokens, (N, heads) heads).

    Raises:
        ValueError: a forced gate tensor of another shape (the masker's
            check).
    """
    return block.masker(x)


def residual_add_relu_(branch: torch.Tensor,
                       identity: torch.Tensor) -> torch.Tensor:
    """``relu(branch + identity)`` in the dtype of the masked-dense block's
    ``relu(identity + out)`` (torch's type promotion of the two: under CPU
    autocast a block called on a float32 input adds its low-precision
    branch to a float32 shortcut), in place into ``branch`` when it has
    that dtype.

    Args:
        branch: (N, C, H, W) the residual branch's output (no ReLU).
        identity: the shortcut, same shape.

    Returns:
        the block output (``branch`` itself when computed in place).
    """
    if torch.promote_types(branch.dtype, identity.dtype) == branch.dtype:
        return branch.add_(identity).relu_()
    return torch.add(identity, branch).relu_()


def residual_add_relu_pooled_(branch: torch.Tensor,
                              identity: torch.Tensor) -> torch.Tensor:
    """:func:`residual_add_relu_` that also records the output's channel
    means for the next block's layer / channel masker
    (:mod:`~laud_mm.models.layers.channel_mean`), in the same pass
    (:func:`laud_mm.ops.add_relu_mean_`) when both are float32 CPU
    tensors outside autocast, both contiguous or both channels_last;
    otherwise exactly :func:`residual_add_relu_` (nothing recorded).

    Args:
        branch: (N, C, H, W) the residual branch's output (no ReLU).
        identity: the shortcut, same shape, another tensor.

    Returns:
        the block output (``branch`` itself when computed in place).
    """
    if branch.device.type == 'cpu' and not is_autocast(branch) and \
            branch.dtype == identity.dtype == torch.float32 and \
            branch is not identity and branch.dim() == 4 and \
            branch.shape == identity.shape and same_layout(branch, identity):
        record_channel_mean(branch, _add_relu_mean_(branch, identity))
        return branch
    return residual_add_relu_(branch, identity)


def relu_pooled_(x: torch.Tensor) -> torch.Tensor:
    """``x.relu_()`` that also records the output's channel means for the
    next block's layer / channel masker
    (:mod:`~laud_mm.models.layers.channel_mean`), in the same pass
    (:func:`laud_mm.ops.relu_mean_rows_` over every sample) when x is a
    float32 CPU tensor outside autocast and not an inference tensor
    (``torch.inference_mode`` keeps no record), contiguous or
    channels_last; otherwise exactly ``x.relu_()`` (nothing recorded). The
    producer of a stem whose output feeds such a masker
    (:class:`~.stem.FoldedStem`).

    Args:
        x: (N, C, H, W), rectified in place.

    Returns:
        x.

    Source: paper sec. 3.2 (masker input) and sec. 3.4 (fused operators).
    """
    if x.device.type == 'cpu' and not is_autocast(x) and \
            not x.is_inference() and \
            x.dtype == torch.float32 and x.dim() == 4 and \
            (x.is_contiguous() or
             x.is_contiguous(memory_format=torch.channels_last)):
        rows = torch.arange(x.shape[0], device=x.device)
        record_channel_mean(x, _relu_mean_rows_(x, rows))
        return x
    return x.relu_()


def promote_residual(identity: torch.Tensor, patches: torch.Tensor
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
    """``identity`` and the branch output ``patches`` in one dtype, the
    promotion of the two (see :func:`residual_add_relu_`), before a fused
    scatter-add, which takes a single dtype. Only the lower-precision one
    is cast (a copy, so a cast identity may be written in place).

    Returns:
        (identity, patches).
    """
    dtype = torch.promote_types(identity.dtype, patches.dtype)
    return identity.to(dtype), patches.to(dtype)


def autocast_dtype(x: torch.Tensor) -> torch.dtype:
    """The low-precision dtype autocast runs x's device type in (call only
    when :func:`is_autocast`)."""
    try:
        return torch.get_autocast_dtype(x.device.type)
    except AttributeError:  # torch < 2.4
        return torch.get_autocast_cpu_dtype() if x.device.type == 'cpu' \
            else torch.get_autocast_gpu_dtype()


OWNED_INPUT_ATTR = '_dynamic_input_owned'
NEXT_BLOCK_ATTR = '_dynamic_next_block'


@contextlib.contextmanager
def owned_block_inputs(blocks):
    """Within the context, the identity-shortcut blocks among ``blocks``
    (``downsample is None``) may overwrite their input in dynamic inference,
    like ``nn.ReLU(inplace=True)``, and every block knows the block after
    it in ``blocks`` (:func:`next_block`).

    The caller guarantees that ``blocks`` run in this order, each on the
    previous block's output, that each identity block's input is
    non-negative (the ReLU output of the previous block) and read by nobody
    after the block: true inside a backbone's forward, where the stage
    outputs are the inputs of downsample blocks only (``LAUDResNet.forward``
    uses this). A layer
    skipping block then adds the branch of its kept samples into its input
    in place and leaves the skipped samples untouched: no row gather, no copy
    of the skipped samples. Spatial and channel blocks write their fused
    scatter-add + ReLU into the input (no output allocation; a spatial
    block's scatter touches its active patches only, ``identity_nonneg``);
    a spatial block with every patch off returns its input. A block that
    computes its output densely may hand the next block's masker its
    decision input (:mod:`~laud_mm.models.layers.spatial_logit_record`).
    Forward hooks that keep a block's output see it updated by the next
    block. Blocks called outside the context never modify their input.

    Each call of the first block plans the pass: every block's host-side
    decisions (folded weights validated, kernel choices, hand-off targets)
    are made then, in one loop (:mod:`~laud_mm.models.layers.forward_plan`;
    a parameter changed during the pass takes effect from the next one).

    Args:
        blocks: sequence of LAUD blocks in forward order.
    """
    blocks = list(blocks)
    seq = SequencePlan(blocks)
    # restored on exit: a nested context leaves the outer one's settings
    saved = [(b, getattr(b, OWNED_INPUT_ATTR, False),
              getattr(b, NEXT_BLOCK_ATTR, None),
              b.__dict__.get(SEQUENCE_ATTR)) for b in blocks]
    for b in blocks:
        if getattr(b, 'downsample', 0) is None:
            object.__setattr__(b, OWNED_INPUT_ATTR, True)
    for i, (b, nxt) in enumerate(zip(blocks, blocks[1:] + [None])):
        object.__setattr__(b, NEXT_BLOCK_ATTR, nxt)
        object.__setattr__(b, SEQUENCE_ATTR, (seq, i))
    try:
        yield
    finally:
        for b, owned, nxt, entry in saved:
            object.__setattr__(b, OWNED_INPUT_ATTR, owned)
            object.__setattr__(b, NEXT_BLOCK_ATTR, nxt)
            object.__setattr__(b, SEQUENCE_ATTR, entry)


def next_block(block) -> Optional[torch.nn.Module]:
    """The block that runs next, on ``block``'s output.

    Args:
        block: a LAUD block.

    Returns:
        the next block of the sequence given to the innermost enclosing
        :func:`owned_block_inputs`; None outside the context or for its
        last block. Source: paper sec. 3.4 (operator fusion across a
        block boundary).
    """
    return getattr(block, NEXT_BLOCK_ATTR, None)


def owns_input(block, x: torch.Tensor,
               fmt: torch.memory_format = torch.contiguous_format) -> bool:
    """Whether ``block`` may write into its input ``x`` (an identity block
    inside :func:`owned_block_inputs`; x contiguous in memory format
    ``fmt``, the layout the block writes)."""
    return getattr(block, OWNED_INPUT_ATTR, False) and \
        x.is_contiguous(memory_format=fmt)


# ------------------------------------------------ CUDA paths: dtype handling
def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a CUDA dynamic path computes in: autocast's (float16 /
    bfloat16) when autocast is on for x's device, else x's dtype."""
    if is_autocast(x):
        try:
            return torch.get_autocast_dtype(x.device.type)
        except AttributeError:  # torch < 2.4
            return torch.get_autocast_gpu_dtype() if x.is_cuda \
                else torch.get_autocast_cpu_dtype()
    return x.dtype


def no_autocast(x: torch.Tensor):
    """Context with autocast off for x's device: the CUDA paths run their
    folded weights explicitly in :func:`compute_dtype`."""
    return torch.autocast(x.device.type, enabled=False)


def cast_folded(folded, dtype: torch.dtype):
    """A copy of a folded-weights object (``FoldedBottleneck``,
    ``FoldedRegNetY``) with every floating tensor attribute in ``dtype``,
    cached on it per dtype (the object itself is refreshed when the block's
    parameters change, and with it the cache). The object itself when its
    weights already have that dtype. A
    :class:`~laud_mm.models.layers.folding.LayoutWeight` attribute is
    rebuilt over the cast copy of its weight (an attribute of the object
    as well), not over a second copy.
    """
    w = getattr(folded, 'w1', None)
    if w is None or w.dtype == dtype:
        return folded
    cache = folded.__dict__.setdefault('_dtype_cache', {})
    if dtype not in cache:
        import copy
        c = copy.copy(folded)
        c.__dict__.pop('_dtype_cache', None)
        for k, v in list(vars(c).items()):
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                setattr(c, k, v.to(dtype))
            elif isinstance(v, tuple) and v and all(
                    isinstance(t, torch.Tensor) for t in v):
                setattr(c, k, tuple(t.to(dtype) if t.is_floating_point()
                                    else t for t in v))
        cast = {id(v): getattr(c, k) for k, v in vars(folded).items()
                if isinstance(v, torch.Tensor)}
        for k, v in list(vars(c).items()):
            if isinstance(v, LayoutWeight):
                w = cast.get(id(v.nchw))
                setattr(c, k, LayoutWeight(
                    v.nchw.to(dtype) if w is None else w))
        cache[dtype] = c
    return cache[dtype]
