"""Per-forward plans of a block sequence: the host-side decisions of every
block's dynamic path, made once per backbone forward, before the first
block's convolutions.

A dynamic block decides, besides its gates, which kernels run: whether its
folded weights are current (a walk over its parameters' version counters),
whether the compiled kernels take its input's dtype and device at the
current thread count, whether its dense epilogue computes the next block's
masker logits, whether its layer / channel masker's compiled call can run
without the module's per-call checks (:func:`~.maskers.planned_masker`).
Made between the convolutions, this host code runs with its
code and data evicted by them, several times slower than in a loop
(docs/benchmark_history.md, fourteenth round). Inside
:func:`~laud_mm.models.layers.dynamic.owned_block_inputs` the first
block's call plans the whole sequence in one loop: the input shapes follow
from the block geometries, the dtype and device from the first input.
Each block then checks its input against its plan (shape, dtype, device,
gradient mode) and runs the plan, once: a plan serves one call, so a pass
that does not start at the first block (whose call makes the plans) runs
unplanned. Where a block has no plan it plans its own call, as outside
the context.

Parameters, buffers, hooks and the autocast state are read when the first
block is called: a change made during the forward (by a hook of an earlier
block) takes effect from the next forward.
``laud_mm.ops.policy.FORWARD_PLAN = False`` turns the plans off (each block
then plans its own call).

A family opts in with a block method ``sequence_plan(in_shape, like,
nxt, nxt_plan)`` (``nxt`` the next block and ``nxt_plan`` its plan, or
None) returning its plan (an object with ``in_shape``, ``dtype`` and
``device``) or None where the block runs unplanned, a ``geometry(in_hw)``
whose result has ``out_channels`` and ``out_hw``, and a forward that
calls :func:`block_plan` first on its dynamic path (the first block's
call makes the pass's plans). The sequences are of (N, C, H, W) maps.

Source: paper sec. 3.4 (latency-aware scheduling of the dynamic
operators; the host side of the fused block).
"""
from typing import List, Optional, Sequence

import torch

from ...ops import policy
from ...ops.allocator import tune_cpu_allocator

#: the attribute a block in a planned sequence holds (sequence, index) in
SEQUENCE_ATTR = '_dynamic_sequence'


class SequencePlan:
    """The plans of one pass through a block sequence (see module doc).

    Args:
        blocks: the blocks in forward order, each run on the previous
            block's output.

    Attributes:
        blocks: that list.
        enabled: whether the sequence is planned at all
            (``policy.FORWARD_PLAN`` when the context was entered, and every
            block has a ``sequence_plan`` method).
        plans: one plan (or None) per block, made by :meth:`build` when the
            first block is called; a block's entry is cleared when handed
            out (:func:`block_plan`); None before the first build.
    """

    def __init__(self, blocks: Sequence[torch.nn.Module]):
        self.blocks = list(blocks)
        self.plans: Optional[List] = None
        # every block must plan, and its geometry give the next input
        self.enabled = policy.FORWARD_PLAN and all(
            callable(getattr(b, 'sequence_plan', None)) for b in self.blocks)

    def build(self, x: torch.Tensor) -> None:
        """Plan every block for the first block's input ``x`` (N, C, H, W):
        block i + 1's input shape is (N, out_channels, *out_hw) of block
        i's geometry, its dtype and device x's. The blocks are planned
        last to first, so that a block's plan can take what it needs of
        its successor from the successor's plan (a fold validated once).
        On CPU it tunes the heap once first
        (:func:`~laud_mm.ops.allocator.tune_cpu_allocator`). An x that is
        not 4-D plans nothing (its blocks' own checks refuse it)."""
        self.plans = None
        if x.dim() != 4:
            return
        if x.device.type == 'cpu':  # gate-dependent sizes: no mmap each
            tune_cpu_allocator()
        blocks = self.blocks
        shapes = [tuple(x.shape)]
        for block in blocks[:-1]:
            shape = shapes[-1]
            geom = block.geometry(shape[2:])
            shapes.append((shape[0], geom.out_channels) + tuple(geom.out_hw))
        plans = [None] * len(blocks)
        nxt = nxt_plan = None
        for i in range(len(blocks) - 1, -1, -1):
            plans[i] = blocks[i].sequence_plan(shapes[i], x, nxt, nxt_plan)
            nxt, nxt_plan = blocks[i], plans[i]
        self.plans = plans


def plannable(block: torch.nn.Module, in_shape, like: torch.Tensor,
              paths: dict) -> bool:
    """Whether a block's forward on inputs of ``in_shape`` (``like``'s dtype
    and device) takes a CPU dynamic path of ``paths`` that a plan can make
    in advance: eval, dynamic inference on, a paradigm in ``paths``, not in
    static mode, gradients off, not ``policy.device_path``, a 4-D input.
    The check every family's ``sequence_plan`` starts with.

    Args:
        block: a LAUD block; in_shape: (N, C, H, W) of its input; like: a
            tensor with the input's dtype and device; paths: the family's
            CPU paths by paradigm.

    Source: paper sec. 3.4 (the host side of the dynamic operators).
    """
    return block.paradigm in paths and not block.static_mode and \
        not block.training and block.dynamic_inference and \
        not torch.is_grad_enabled() and not policy.device_path(like) and \
        len(in_shape) == 4


def block_plan(block: torch.nn.Module, x: torch.Tensor):
    """The plan of ``block`` for its input ``x`` inside a planned sequence,
    or None (outside one, a block without a plan, a plan already used, or
    x not the input it was planned for: another shape, dtype or device,
    or gradients enabled). The sequence's first block plans the sequence
    on every call; each plan is handed out once.

    Args:
        block: a LAUD block; x: its input.

    Returns:
        the block's plan, or None.
    """
    entry = block.__dict__.get(SEQUENCE_ATTR)
    if entry is None:
        return None
    seq, i = entry
    if i == 0 and seq.enabled:
        seq.build(x)
    plans = seq.plans
    if plans is None:
        return None
    plan, plans[i] = plans[i], None
    if plan is None or x.shape != plan.in_shape or \
            x.dtype != plan.dtype or x.device != plan.device or \
            torch.is_grad_enabled():
        return None
    return plan
