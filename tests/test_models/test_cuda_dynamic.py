"""The CUDA dynamic paths on a GPU: every family and paradigm equals the
masked-dense model (fp32: 1e-4 relative, the CPU contract), under autocast
(float16, bfloat16: forced gates, loose bounds: the masked-dense model runs
BN unfolded), the dynamic blocks make no host synchronisation beyond
their one documented wait (``torch.cuda.set_sync_debug_mode('error')``),
and they launch per batch, not per sample: a batch four times larger
dispatches no more operators and launches laud_mm's kernels as often.

Skipped without a CUDA GPU or without the CUDA kernels
(``FORCE_CUDA=1`` build); ``tools/gpu_check.sh`` runs this module. The same
paths' logic runs on CPU in every CI run (test_family_contract.py,
``cuda-path-on-cpu``).

Source: paper sec. 3.4; docs/method.md sec. 1.
"""
import re
from collections import Counter

import pytest
import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

from laud_mm import ops

HAS_GPU = torch.cuda.is_available() and ops.has_cuda_kernels()
pytestmark = pytest.mark.skipif(
    not HAS_GPU, reason='needs a CUDA GPU and laud_mm._ext built with CUDA '
    '(FORCE_CUDA=1; tools/gpu_check.sh builds it and runs this module)')

from test_family_contract import (EXACT_CASES, FAMILIES, PARADIGMS,  # noqa
                                  build, force, images, randomize, rel_diff)

TOL = 1e-4
AMP_TOL = {torch.float16: 5e-2, torch.bfloat16: 1.5e-1}


@pytest.fixture(autouse=True)
def no_tf32():
    """fp32 means fp32: cuDNN's default TF32 convolutions (10-bit
    mantissa) would differ from the masked-dense model by ~1e-3."""
    prev = (torch.backends.cudnn.allow_tf32,
            torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, \
        torch.backends.cuda.matmul.allow_tf32 = prev


def _to_cuda_gates(net):
    for b in net.blocks:
        f = b.masker.forced_gate
        if isinstance(f, torch.Tensor):
            b.masker.forced_gate = f.cuda()


def _pair(net, x, dtype=None):
    """(masked-dense outputs, dynamic outputs) of net on x, autocast in
    ``dtype`` when given."""
    ctx = torch.autocast('cuda', dtype=dtype, enabled=dtype is not None)
    with torch.no_grad(), ctx:
        net.dynamic_inference = False
        ref = net(x)
        ref_gates = [b.last_stats['gate'] for b in net.blocks]
        net.dynamic_inference = True
        out = net(x)
    return ref, out, ref_gates


@pytest.mark.parametrize('fam,paradigm,overrides', EXACT_CASES)
def test_cuda_dynamic_equals_masked_dense_fp32(fam, paradigm, overrides):
    net = build(fam, paradigm, **overrides)
    randomize(net, 1)
    net.eval().cuda()
    for k, (n, hw) in enumerate(fam.exact_inputs()):
        x = images(fam, hw, n, seed=k).cuda()
        for pattern in (None, 'off', 'on', 'random', 'equal'):
            force(net, pattern, seed=k)
            _to_cuda_gates(net)
            ref, out, ref_gates = _pair(net, x)
            for a, b in zip(out, ref):
                assert a.shape == b.shape
                assert rel_diff(a, b) <= TOL, (n, hw, pattern, rel_diff(a, b))
            for blk, g in zip(net.blocks, ref_gates):
                assert torch.equal(blk.last_stats['gate'], g), pattern
        force(net, None)


def _random_gated(fam, paradigm):
    """(net on the GPU with random forced gates, its input batch, the gates
    as forced on CPU)."""
    net = build(fam, paradigm)
    randomize(net, 1)
    net.eval().cuda()
    x = images(fam).cuda()
    with torch.no_grad():
        net(x)  # gate shapes
    force(net, 'random', seed=3)
    gates = [b.masker.forced_gate for b in net.blocks]
    _to_cuda_gates(net)
    return net, x, gates


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('fam', FAMILIES, ids=lambda f: f.name)
@pytest.mark.parametrize('paradigm', PARADIGMS)
def test_cuda_dynamic_autocast(fam, paradigm, dtype):
    net, x, _ = _random_gated(fam, paradigm)
    ref, out, _ = _pair(net, x, dtype)
    for a, b in zip(out, ref):
        assert a.shape == b.shape
        assert torch.isfinite(a).all()
        assert rel_diff(a.float(), b.float()) <= AMP_TOL[dtype], \
            rel_diff(a.float(), b.float())
    force(net, None)


@pytest.mark.parametrize('fam', FAMILIES, ids=lambda f: f.name)
@pytest.mark.parametrize('paradigm', PARADIGMS)
def test_cuda_dynamic_blocks_do_not_synchronise(fam, paradigm):
    """Each dynamic block's path, with learned gates, under
    set_sync_debug_mode('error'): a hidden .item() / nonzero() / blocking
    copy raises; the one deferred read (HostRead: a non-blocking copy to
    pinned memory and an event wait) does not. One call before: the BN
    fold is made once per block and cached (it reads the spatial masker's
    logit bias to the host)."""
    net = build(fam, paradigm)
    randomize(net, 1)
    net.eval().cuda()
    x = images(fam).cuda()
    inputs = []
    hooks = [b.register_forward_pre_hook(
        lambda m, a: inputs.append((m, a[0].clone()))) for b in net.blocks]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    torch.cuda.synchronize()
    for blk, xin in inputs:
        geom = blk.geometry(tuple(xin.shape[2:])) if xin.dim() == 4 \
            else blk.geometry(xin.shape[1])
        fn = _dynamic_fn(fam)
        with torch.no_grad():
            fn(blk, xin.clone(), geom)  # the cached fold
        torch.cuda.synchronize()
        prev = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode('error')
        try:
            with torch.no_grad():
                fn(blk, xin, geom)
        finally:
            torch.cuda.set_sync_debug_mode(prev)


def _dynamic_fn(fam):
    if fam.name.startswith('resnet'):
        from laud_mm.models.resnet.dynamic import dynamic_bottleneck_forward
        return dynamic_bottleneck_forward
    if fam.name.startswith('regnet'):
        from laud_mm.models.regnet.dynamic import dynamic_regnety_forward
        return dynamic_regnety_forward
    from laud_mm.models.t2t_vit.dynamic import dynamic_t2t_layer_forward
    return dynamic_t2t_layer_forward


class _OpCounter(TorchDispatchMode):
    """Counts the ATen / laud_mm operators dispatched inside it."""

    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))


#: (family, paradigm) whose CUDA path launches laud_mm kernels; the others
#: (RegNetY channel, T2T-ViT) run on torch's operators alone
LAUD_KERNEL_PATHS = {('resnet50', 'spatial'), ('resnet50', 'channel'),
                     ('resnet50', 'layer'), ('regnety_400mf', 'spatial'),
                     ('regnety_400mf', 'layer')}


def _launches(net, x):
    """(operators dispatched, laud_mm kernel launches by name, all CUDA
    kernel launches) of one dynamic forward."""
    with torch.no_grad():
        net(x)  # warm-up: cuDNN / cuBLAS handles, pinned memory
        torch.cuda.synchronize()
        with _OpCounter() as counter:
            net(x)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            net(x)
            torch.cuda.synchronize()
    kernels = [e.name for e in prof.events()
               if e.device_type == torch.autograd.DeviceType.CUDA]
    # csrc/cuda's kernels live in namespace laud_mm::cuda
    ours = Counter(re.search(r'(\w+)<', name[name.index('laud_mm::'):])[1]
                   for name in kernels if 'laud_mm::' in name)
    return counter.ops, ours, len(kernels)


@pytest.mark.parametrize('fam', FAMILIES, ids=lambda f: f.name)
@pytest.mark.parametrize('paradigm', PARADIGMS)
def test_cuda_dynamic_launches_per_batch_not_per_sample(fam, paradigm):
    """Issue 22 item 5: one launch per operator per batch. Random gates
    (half on) for a batch of n, the same gates repeated for the batch of
    the n samples repeated four times: every block takes the same branch,
    so a per-sample loop anywhere would dispatch more operators (and
    launch more laud_mm kernels) for 4n. The operators may differ where
    the path picks its dense routine by size (conv3 of few active patches
    as one GEMM, of many as a convolution: ``spatial_patch_convs``), never
    in number upwards. Kernels that cuDNN / cuBLAS / ATen launch inside an
    operator are printed, not asserted: their algorithms change with the
    batch (RegNetY's own grouped convolutions: 835 vs 1072 kernels per
    forward at n = 2 vs 8 on the H200), and that is where the grouped conv2
    of the channel path used to launch per sample (707 vs 773)."""
    net, x, gates = _random_gated(fam, paradigm)
    net.dynamic_inference = True
    ops_n, ours_n, all_n = _launches(net, x)
    for b, g in zip(net.blocks, gates):
        b.masker.forced_gate = torch.cat([g] * 4).cuda()
    ops_4n, ours_4n, all_4n = _launches(net, torch.cat([x] * 4))
    force(net, None)
    assert sum(ops_4n.values()) <= sum(ops_n.values()), \
        (ops_4n - ops_n, ops_n - ops_4n)
    assert ours_4n == ours_n, (ours_n, ours_4n)
    # the sparse path ran (not a dense fallback) where it has laud_mm kernels
    assert bool(ours_n) == ((fam.name, paradigm) in LAUD_KERNEL_PATHS), ours_n
    print(f'{fam.name}-{paradigm}: {sum(ops_n.values())} operators, '
          f'laud_mm kernels {dict(ours_n)}, CUDA kernels {all_n} (n) / '
          f'{all_4n} (4n)')
