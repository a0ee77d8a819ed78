"""laud_mm.ops.kept_columns: the kept channels moved between compact rows
and the columns of a channel-row map (LAUD-RegNetY's batched channel
path), the compiled kernels against the PyTorch reference.

Source: paper sec. 3.2 (channel skipping), sec. 3.4 (fused gather /
scatter)."""
import pytest
import torch

from laud_mm import ops
from laud_mm.ops.indexing import channel_kept_lists

from conftest import load_coco_images

HAS_EXT = ops.extension() is not None and \
    hasattr(ops.extension(), 'scatter_kept_columns')


def _lists(n, groups, g2, seed):
    """Kept lists as the channel path makes them: a random gate (with three
    samples or more, sample 0 keeping none and sample 1 all), padded with
    the width."""
    g = torch.Generator().manual_seed(seed)
    gate = (torch.rand(n, groups, generator=g) < 0.6).float()
    if n >= 3:
        gate[0] = 0.
        gate[1] = 1.
    chs, counts, _ = channel_kept_lists(gate, g2, 1)
    return chs, counts


def _values(n, p, k, seed):
    """Real activations (COCO pixels, centred: both signs) as (N, P, K)."""
    img = load_coco_images(n=n, size=(8, 8)).reshape(n, -1)
    g = torch.Generator().manual_seed(seed)
    cols = torch.randint(img.shape[1], (p * k,), generator=g)
    return (img[:, cols] - 0.5).view(n, p, k).contiguous()


@pytest.mark.parametrize('n,groups,g2,p', [(4, 16, 2, 13), (1, 8, 4, 49),
                                           (3, 5, 1, 1), (3, 16, 2, 700)])
@pytest.mark.parametrize('threads', [1, 2])
def test_kept_columns_compiled_equal_reference(n, groups, g2, p, threads):
    """Scatter (with and without bias, ReLU) and gather: the compiled
    kernels equal the reference element for element at 1 and 2 threads
    (3 x 700 rows: the scatter's rows and the gather's chunks split over
    both threads);
    the dropped channels are exact zeros, padding slots are skipped when
    scattering and read as 0 when gathering, and NaN passes the ReLU as in
    torch; gathering what was scattered gives the values back."""
    width = groups * g2
    chs, counts = _lists(n, groups, g2, seed=groups)
    k = chs.shape[1]
    src = _values(n, p, k, seed=p)
    src[0, 0, 0] = float('nan')  # (n >= 3: sample 0 keeps none, unused)
    src[-1, -1, 0] = float('nan')
    bias = torch.linspace(-0.2, 0.2, width)
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for b, relu in ((None, False), (bias, True), (bias, False)):
            ref = ops.scatter_kept_columns_reference(src, chs, width, b, relu)
            got = ops.scatter_kept_columns(src, chs, width, b, relu)
            assert got.shape == (n, p, width)
            assert torch.equal(got.isnan(), ref.isnan())
            assert torch.equal(got.nan_to_num(), ref.nan_to_num())
            if HAS_EXT:
                ext = ops.extension().scatter_kept_columns(src, chs, width,
                                                           b, relu)
                assert torch.equal(ext.nan_to_num(), ref.nan_to_num())
            for i in range(n):
                kept = chs[i, :counts[i]]
                dropped = torch.ones(width, dtype=torch.bool)
                dropped[kept] = False
                assert (got[i][:, dropped] == 0).all()
            back = ops.gather_kept_columns(got, chs)
            refg = ops.gather_kept_columns_reference(got, chs)
            assert torch.equal(back.nan_to_num(), refg.nan_to_num())
            assert (back[chs[:, None, :].expand_as(back) == width] == 0).all()
            # gathered with a ReLU and the columns' sums, from a map with
            # both signs
            signed = got - 0.1
            sums, sums_ref = torch.empty(n, k), torch.empty(n, k)
            gr = ops.gather_kept_columns(signed, chs, relu=True, sums=sums)
            grr = ops.gather_kept_columns_reference(signed, chs, True,
                                                    sums_ref)
            assert torch.equal(gr.nan_to_num(), grr.nan_to_num())
            assert torch.equal(sums.isnan(), sums_ref.isnan())
            assert torch.allclose(sums.nan_to_num(), sums_ref.nan_to_num(),
                                  rtol=1e-5, atol=1e-5)
            assert (gr.nan_to_num() >= 0).all()
            if b is None and not relu:
                live = chs[:, None, :].expand_as(src) < width
                assert torch.equal(back[live].nan_to_num(),
                                   src[live].nan_to_num())
    finally:
        torch.set_num_threads(prev)


@pytest.mark.skipif(not HAS_EXT, reason='laud_mm._ext not built')
def test_kept_columns_sums_same_at_any_thread_count():
    """The gather's column sums (fixed chunks of 64 pixels, added in chunk
    order) are bit-identical at 1, 2 and 3 threads, over more than one
    chunk per sample."""
    chs, _ = _lists(3, 16, 2, seed=4)
    src = torch.randn(3, 200, 32, generator=torch.Generator().manual_seed(5))
    prev = torch.get_num_threads()
    res = []
    try:
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            sums = torch.empty(3, chs.shape[1])
            out = ops.gather_kept_columns(src, chs, relu=True, sums=sums)
            res.append((out, sums))
    finally:
        torch.set_num_threads(prev)
    for out, sums in res[1:]:
        assert torch.equal(out, res[0][0]) and torch.equal(sums, res[0][1])
    assert torch.allclose(res[0][1], res[0][0].sum(dim=1), rtol=1e-5)


def test_kept_columns_other_dtypes_take_the_reference():
    """float64 (the reference) equals the float32 kernels' result cast."""
    chs, _ = _lists(2, 6, 2, seed=1)
    src = _values(2, 5, chs.shape[1], seed=2)
    bias = torch.linspace(-0.1, 0.1, 12)
    got64 = ops.scatter_kept_columns(src.double(), chs, 12, bias.double(),
                                     True)
    got32 = ops.scatter_kept_columns(src, chs, 12, bias, True)
    assert got64.dtype == torch.float64
    assert torch.allclose(got64.float(), got32, atol=1e-7)
    assert torch.equal(ops.gather_kept_columns(got64, chs).float(),
                       ops.gather_kept_columns(got64.float(), chs))


def test_kept_columns_sums_in_float32_of_a_half_map():
    """float32 sums of a float16 map (the reference path) stay finite
    where a float16 sum overflows (65504), and equal the float32 sums."""
    chs, _ = _lists(2, 6, 2, seed=6)
    src = torch.full((2, 10000, 12), 10.)
    sums32 = torch.empty(chs.shape)
    sums16 = torch.empty(chs.shape)
    ops.gather_kept_columns(src, chs, sums=sums32)
    ops.gather_kept_columns(src.half(), chs, sums=sums16)
    half = torch.empty(chs.shape, dtype=torch.float16)
    ops.gather_kept_columns(src.half(), chs, sums=half)
    assert torch.isfinite(sums16).all() and torch.equal(sums16, sums32)
    assert torch.isinf(half[chs < 12]).all()  # what float16 sums give


def test_kept_columns_stale_extension_takes_the_reference(monkeypatch):
    """An extension of another signature generation (built from older
    sources) is not called: the reference runs, with the same result."""
    from laud_mm.ops import kept_columns
    chs, _ = _lists(2, 6, 2, seed=7)
    src = _values(2, 5, chs.shape[1], seed=8)
    want = ops.scatter_kept_columns(src, chs, 12, None, True)
    monkeypatch.setattr(kept_columns, 'KEPT_COLUMNS_API', -1)
    assert not kept_columns._fast(src, 'scatter_kept_columns')
    assert torch.equal(ops.scatter_kept_columns(src, chs, 12, None, True),
                       want)


def test_kept_columns_errors_name_the_argument():
    chs, _ = _lists(2, 4, 2, seed=3)
    src = torch.zeros(2, 3, chs.shape[1])
    with pytest.raises(ValueError, match='src must be a 3-D'):
        ops.scatter_kept_columns(src[0], chs, 8)
    with pytest.raises(ValueError, match='width must be'):
        ops.scatter_kept_columns(src, chs, -1)
    with pytest.raises(ValueError, match='width must be'):
        ops.scatter_kept_columns(src, chs, True)
    with pytest.raises(ValueError, match='kept must be an int64'):
        ops.scatter_kept_columns(src, chs.int(), 8)
    with pytest.raises(ValueError, match='kept must be an int64'):
        ops.scatter_kept_columns(src, chs[:1], 8)
    with pytest.raises(ValueError, match=r'kept must lie in \[0, W = 8\]'):
        ops.scatter_kept_columns(src, chs + 9, 8)
    with pytest.raises(ValueError, match='bias must be a'):
        ops.scatter_kept_columns(src, chs, 8, torch.zeros(7))
    with pytest.raises(ValueError, match='relu must be a bool'):
        ops.scatter_kept_columns(src, chs, 8, relu=1)
    with pytest.raises(ValueError, match='relu must be a bool'):
        ops.gather_kept_columns(torch.zeros(2, 3, 8), chs, relu='yes')
    with pytest.raises(ValueError, match='src must be a 3-D'):
        ops.gather_kept_columns(src[0], chs)
    with pytest.raises(ValueError, match=r'kept must lie in \[0, W = 3\]'):
        ops.gather_kept_columns(torch.zeros(2, 3, 3), chs)
    with pytest.raises(ValueError, match='sums must be a contiguous'):
        ops.gather_kept_columns(torch.zeros(2, 3, 8), chs,
                                sums=torch.zeros(2, 1))
    with pytest.raises(ValueError, match='sums must be a contiguous'):
        ops.gather_kept_columns(torch.zeros(2, 3, 8), chs,
                                sums=torch.zeros(chs.shape, dtype=torch.int64))
    if HAS_EXT:  # the kernels' own guards (the internal path skips ours)
        with pytest.raises(RuntimeError, match='kept entries must lie'):
            ops.extension().scatter_kept_columns(src, chs + 9, 8, None,
                                                 False)
        with pytest.raises(RuntimeError, match='kept entries must lie'):
            ops.extension().gather_kept_columns(torch.zeros(2, 3, 3), chs,
                                                False, None)
        with pytest.raises(RuntimeError, match='float32'):
            ops.extension().gather_kept_columns(src.double(), chs, False,
                                                None)
