"""The CUDA kernels (torch.ops.laud_mm.*) against the PyTorch references,
in float32 / float64 / float16 / bfloat16, on the current stream, with no
host synchronisation.

Skipped without a CUDA GPU or without the CUDA kernels (``FORCE_CUDA=1``
build); ``tools/gpu_check.sh`` runs this module; on CPU
``tools/check_cuda_build.sh`` checks that each op is built and registered.

Source: paper sec. 3.4 / appendix (fused gather and scatter-add).
"""
import pytest
import torch

from laud_mm import ops
from laud_mm.ops.cuda_ops import CUDA_OPS
from laud_mm.ops.patches import _scatter, _scatter_patches

HAS_GPU = torch.cuda.is_available() and ops.has_cuda_kernels()
pytestmark = pytest.mark.skipif(
    not HAS_GPU, reason='needs a CUDA GPU and laud_mm._ext built with CUDA '
    '(FORCE_CUDA=1; tools/gpu_check.sh builds it and runs this module)')

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _case(dtype, n=3, c=5, h=13, w=11, s=4, p_on=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    feat = torch.randn(n, c + 1, h, w, generator=g)
    gate = torch.rand(n, -(-h // s), -(-w // s), generator=g) < p_on
    return feat.to('cuda', dtype), gate.cuda()


def test_every_cuda_op_is_registered():
    for op in CUDA_OPS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(
            f'laud_mm::{op}', 'CUDA'), op


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('s,stride,dil', [(4, 1, 1), (2, 2, 1), (1, 1, 2)])
def test_gather_matches_reference(dtype, s, stride, dil):
    feat, gate = _case(dtype, s=s)
    idx = gate.nonzero()
    out = ops.gather_patches(feat, idx, s, stride, dil, channels=5,
                             relu=True)
    with ops.use_backend('pytorch'):
        ref = ops.gather_patches(feat, idx, s, stride, dil, channels=5,
                                 relu=True)
    assert out.dtype == dtype
    assert torch.equal(out, ref)  # copies and ReLU: exact


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('inplace', [False, True])
def test_scatter_add_relu_matches_reference(dtype, inplace):
    feat, gate = _case(dtype)
    idx = gate.nonzero()
    ident = feat[:, :5].contiguous()
    patches = torch.randn(idx.shape[0], 5, 4, 4, device='cuda').to(dtype)
    out = ops.scatter_add_relu(ident.clone(), patches, idx, 4,
                               inplace=inplace)
    with ops.use_backend('pytorch'):
        ref = ops.scatter_add_relu(ident.clone(), patches, idx, 4)
    assert torch.equal(out, ref)  # one rounding of (a + b), as torch


@pytest.mark.parametrize('dtype', DTYPES)
def test_scatter_patches_touches_active_patches_only(dtype):
    feat, gate = _case(dtype)
    idx = gate.nonzero()
    ident = feat[:, :5].relu().contiguous()
    patches = torch.randn(idx.shape[0], 5, 4, 4, device='cuda').to(dtype)
    out = ident.clone()
    assert _scatter_patches(out, patches, idx, (4, 4)) is out
    with ops.use_backend('pytorch'):
        ref = _scatter(ident.clone(), patches, idx, (4, 4), True)
    assert torch.equal(out, ref)


@pytest.mark.parametrize('dtype', DTYPES)
def test_gather_kept_weights_matches_reference(dtype):
    w = torch.randn(9, 9, 3, 3, device='cuda').to(dtype)
    chs = torch.tensor([[0, 2, 8], [1, 1, 8]], device='cuda')
    out = ops.gather_kept_weights(w, chs)
    assert torch.equal(out, ops.gather_kept_weights_reference(w, chs))


def test_kernels_run_on_the_current_stream_without_sync():
    """Inputs made on a side stream and the ops queued on it: right results
    after that stream alone is synchronised; no op synchronises the host
    (sync debug mode 'error')."""
    side = torch.cuda.Stream()
    torch.cuda.synchronize()
    with torch.cuda.stream(side):
        feat = torch.randn(8, 65, 56, 56, device='cuda')
        gate = torch.rand(8, 14, 14, device='cuda') < 0.5
        from laud_mm.ops.indexing import active_index
        prev = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode('error')
        try:
            idx_all, pmap, _ = active_index(gate)
            win = torch.ops.laud_mm.gather_patches(feat, idx_all, 4, 1, 1,
                                                   64, True)
            ident = feat[:, :64].contiguous()
            y = torch.randn(idx_all.shape[0], 64, 4, 4, device='cuda')
            torch.ops.laud_mm.scatter_add_relu(ident, ident, y, pmap, 4, 4,
                                               False)
        finally:
            torch.cuda.set_sync_debug_mode(prev)
    side.synchronize()
    n = int(gate.sum())
    with ops.use_backend('pytorch'):
        ref = ops.gather_patches(feat, gate.nonzero(), 4, 1, 1, 64, True)
    assert torch.equal(win[:n], ref)


@pytest.mark.parametrize('shape', [(8, 14, 14), (32,), (4, 64), (3, 0)])
def test_device_index_lists_equal_nonzero_and_are_contiguous(shape):
    """On the GPU the index lists of the CUDA paths (torch.nonzero_static,
    whose CUDA output is column-major, made contiguous once; a stable
    descending sort for the kept lists) are nonzero's rows, zero-padded,
    in the contiguous (P, D) layout the gather / scatter kernels read,
    and building them does not synchronise the host."""
    from laud_mm.ops.indexing import active_index, kept_index
    g = torch.Generator(device='cuda').manual_seed(len(shape))
    mask = torch.rand(shape, generator=g, device='cuda') < 0.4
    prev = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode('error')
    try:
        idx, pos, count = active_index(mask)
        kept = kept_index(mask, shape[-1], -1) if mask.dim() == 2 else None
    finally:
        torch.cuda.set_sync_debug_mode(prev)
    nz = mask.nonzero()
    p = nz.shape[0]
    assert idx.is_contiguous() and idx.shape == (mask.numel(), mask.dim())
    assert int(count) == p and torch.equal(idx[:p], nz)
    assert not idx[p:].any()
    assert torch.equal(pos[mask], torch.arange(p, device='cuda'))
    if kept is not None:
        for row, k in zip(mask, kept):
            cols = row.nonzero().flatten()
            assert torch.equal(k[:len(cols)], cols)
            assert (k[len(cols):] == -1).all()
