// C++ CPU kernel for LAUDNet channel skipping: the whole sparse branch of a
// channel-skipping bottleneck (conv1 -> ReLU -> conv2 -> ReLU -> conv3, BN
// folded), accumulated into the shortcut with the final ReLU, computing only
// each sample's kept channels.
//
// channel_branch_add_relu_cpu(out, x, chs, counts, w1t, b1, w2t, b2, w3t, b3,
//                             stride, padding, dilation):
//   for every sample n with kept channels K_n = chs[n, :counts[n]]:
//     h1 = relu(W1[K_n] x_n + b1[K_n])                       (1x1)
//     h2 = relu(W2[K_n, K_n] * h1 + b2[K_n])                 (3x3)
//     out_n = relu(out_n + W3[:, K_n] h2 + b3)               (1x1, in place)
//   which is the masked-dense block (a dropped channel's activations are 0).
//
// Why a kernel: the per-sample products are thin. At 7 x 7 (ResNet stage 4)
// a sample's conv1 is a (k x C_in) x (C_in x 49) GEMM, which MKL runs far
// below the efficiency of the static network's batched GEMMs, so channel
// skipping barely pays there with batched GEMMs (1.06 - 1.08x for the 7 x 7
// blocks at r = 0.5: docs/benchmarks.md, "Per block" table, channel
// column, tools/analysis_tools/benchmark_latency.py --per-block). This
// kernel puts the *output channels* on the vector lanes: a
// tile is 7 output pixels x 64 kept output channels (28 AVX-512
// accumulators); the pixels' input values are broadcast, so any pixel set
// and input layout (NCHW input for conv1, the zero-bordered pixel-major
// conv1 output for conv2's nine taps, stride and dilation included) costs
// the same, and 49 pixels are exactly seven tiles. The kept weights of
// conv1 and conv2 are first gathered into per-sample panels (64 output
// channels wide, contiguous for the tiles) in one pass over the weights
// shared by all samples (gather_all; a pass per sample would read the
// weights once per sample). conv3 runs per 64-channel panel over all pixels
// into a pixel-major buffer, then one pass adds it into out's channel rows
// with 8 x 8 in-register transposes (add_relu_transposed_avx2; a scalar
// epilogue per tile is memory- and branch-bound). The kernel is used on
// every map size; the R50 backbone at channel r = 0.5 runs 1.68x faster
// than static in CPU time (docs/benchmarks.md, "LAUD-ResNet-50,
// 8 x 3 x 224 x 224" table, tools/analysis_tools/benchmark_latency.py).
//
// The AVX-512 tile kernel is compiled with a target attribute and chosen at
// run time; without AVX-512F the same loops run on plain arrays (the
// compiler's vectorisation; correct, not tuned): laud_mm.ops reports which
// (channel_branch_isa) and laud_mm/models/resnet/dynamic.py uses this kernel only
// where it is the fast one.
//
// Source: LAUDNet paper sec. 3.2 (channel skipping), sec. 3.4 (scheduling:
// weights gathered per sample, conv3 fused with the residual add); Python API
// and reference in laud_mm/ops/channel_conv.py.
#include "relu.h"
#include "tile.h"

#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace laud_mm {

namespace {

using namespace tile;

#ifdef LAUD_X86
// conv3's epilogue, vectorised: o[l][p] = relu(o[l][p] + tmp[p][l] +
// bias[l]) for pixels p < p_out and channels l < wdt (a multiple of 8),
// o[l] = out + l * p_out; tmp has p_out rows of kPanel, rounded up to 8.
// Blocks of 8 pixels x 8 channels of tmp are transposed in registers, so
// each channel row of out is read and written in 8-float runs; a pass per
// panel, not per 7-pixel tile, keeps 8 sequential streams (a scalar loop
// per tile costs about a fifth of an R50 stage-3 block at r = 0.25, by
// perf).
LAUD_TARGET("avx2") void add_relu_transposed_avx2(
    const float* tmp, int64_t p_out, int wdt, const float* bias, float* out) {
  const int64_t tail = p_out % 8;
  alignas(32) int32_t lanes[8];
  for (int i = 0; i < 8; ++i) lanes[i] = i < tail ? -1 : 0;
  const __m256i mask = _mm256_load_si256(reinterpret_cast<const __m256i*>(lanes));
  const __m256 zero = _mm256_setzero_ps();
  for (int l0 = 0; l0 < wdt; l0 += 8) {
    __m256 b[8];
    for (int l = 0; l < 8; ++l) b[l] = _mm256_set1_ps(bias[l0 + l]);
    for (int64_t p0 = 0; p0 < p_out; p0 += 8) {
      __m256 col[8];
      for (int i = 0; i < 8; ++i)
        col[i] = _mm256_loadu_ps(tmp + (p0 + i) * kPanel + l0);
      transpose8x8(col);
      const bool full = p0 + 8 <= p_out;
      for (int l = 0; l < 8; ++l) {
        float* o = out + (l0 + l) * p_out + p0;
        const __m256 v0 = full ? _mm256_loadu_ps(o) : _mm256_maskload_ps(o, mask);
        // max(0, v): NaN stays NaN, as relu_of
        const __m256 v = _mm256_max_ps(
            zero, _mm256_add_ps(_mm256_add_ps(v0, col[l]), b[l]));
        if (full)
          _mm256_storeu_ps(o, v);
        else
          _mm256_maskstore_ps(o, mask, v);
      }
    }
  }
}
#endif


struct Geometry {
  int64_t c_in, h, w, width, c_out, ho, wo, stride, pad, dil;
};

// Gathers the kept columns of K weight rows into the panel layout of the
// tile kernel: panel[j][q][l] = src[row(q) + cols[64 j + l]] for q < K and
// l < 64 (the last panel kp - 64 j wide), in one pass over the rows (a pass
// per panel re-read the whole matrix). Columns from k on are
// padding: zero weights, written as zeros. With pairs (every cols[2i + 1] ==
// cols[2i] + 1 below k: kept channels come in runs of the gate's G = 2, 4,
// ... channels) a pair is one 8-byte move. The rows two ahead (row_len
// floats each) are prefetched: the kept rows are increasing but irregular,
// which the hardware prefetcher misses. (A 16-lane AVX-512 gather
// instruction instead made the block slower on this CPU.)
template <typename RowFn>
void gather_panels(const float* src, int64_t K, int64_t q_begin,
                   int64_t q_end, RowFn row, const int32_t* cols, int64_t k,
                   int64_t kp, int64_t row_len, bool pairs, float* panel) {
  for (int64_t q = q_begin; q < q_end; ++q) {
    const float* s = src + row(q);
#ifdef LAUD_X86
    if (q + 2 < q_end) {
      const char* nx = reinterpret_cast<const char*>(src + row(q + 2));
      for (int64_t b = 0; b < row_len * 4; b += 64)
        _mm_prefetch(nx + b, _MM_HINT_T0);
    }
#endif
    for (int64_t j0 = 0; j0 < kp; j0 += kPanel) {
      const int64_t wdt = std::min<int64_t>(kPanel, kp - j0);
      const int64_t kv = std::max<int64_t>(0, std::min(wdt, k - j0));
      float* d = panel + K * j0 + q * wdt;
      const int32_t* cj = cols + j0;
      if (pairs) {
        for (int64_t l = 0; l < kv; l += 2) {
          uint64_t v;
          std::memcpy(&v, s + cj[l], 8);
          std::memcpy(d + l, &v, 8);
        }
      } else {
        for (int64_t l = 0; l < kv; ++l) d[l] = s[cj[l]];
      }
      for (int64_t l = kv; l < wdt; ++l) d[l] = 0.f;
    }
  }
}

// A sample's kept channels: cols[m] = kept[m] for m < k, then the padding
// channel (width) up to kp = k rounded up to 16; pairs: see gather_panels.
struct SamplePlan {
  const int64_t* kept;
  int64_t k, kp;
  std::vector<int32_t> cols;
  bool pairs;
  float* w1p;  // (c_in, kp) conv1 panels
  float* w2p;  // (9 k, kp) conv2 panels
};

// Phase 1: every sample's conv1 and conv2 weight panels, gathered in blocks
// of source rows shared by all samples (a row block stays in L2 while each
// sample takes its columns): the weights are read once per block call, not
// once per sample (R50 stage 4, 8 x 7 x 7, r = 0.5: 28 ms a block, 30 ms
// with a pass per sample).
void gather_all(const Geometry& g, std::vector<SamplePlan>& plans,
                const float* w1t, const float* w2t) {
  const int64_t wp1 = g.width + 1;
  constexpr int64_t kBlock = 16;
  const int64_t nb1 = (g.c_in + kBlock - 1) / kBlock;
  at::parallel_for(0, nb1, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t q0 = b * kBlock, q1 = std::min(g.c_in, q0 + kBlock);
      for (auto& pl : plans)
        if (pl.k > 0)
          gather_panels(w1t, g.c_in, q0, q1,
                        [&](int64_t q) { return q * wp1; }, pl.cols.data(),
                        pl.k, pl.kp, wp1, pl.pairs, pl.w1p);
    }
  });
  at::parallel_for(0, 9, 1, [&](int64_t t0, int64_t t1) {
    std::vector<int64_t> lo(plans.size());
    for (int64_t t = t0; t < t1; ++t) {
      std::fill(lo.begin(), lo.end(), 0);
      for (int64_t ch0 = 0; ch0 < g.width; ch0 += kBlock) {
        for (size_t i = 0; i < plans.size(); ++i) {
          SamplePlan& pl = plans[i];
          int64_t hi = lo[i];
          while (hi < pl.k && pl.kept[hi] < ch0 + kBlock) ++hi;
          if (hi > lo[i]) {
            const int64_t k = pl.k;
            const int64_t* kept = pl.kept;
            gather_panels(
                w2t, 9 * k, t * k + lo[i], t * k + hi,
                [&](int64_t q) { return (q / k * wp1 + kept[q % k]) * wp1; },
                pl.cols.data(), k, pl.kp, wp1, pl.pairs, pl.w2p);
          }
          lo[i] = hi;
        }
      }
    }
  });
}

// Phase 2: one sample's branch from its panels; out_n (c_out, ho, wo)
// updated in place.
void sample_branch(const Geometry& g, const float* x, const SamplePlan& pl,
                   const float* b1, const float* b2, const float* w3t,
                   const float* b3, float* out, bool avx512) {
  const int64_t* kept = pl.kept;
  const int64_t k = pl.k;
  thread_local std::vector<float> h1_buf, h2_buf, panel_buf, tmp_buf;
  thread_local std::vector<int64_t> aoff_buf;
  const int64_t kp = pl.kp;
  const int64_t hp = g.h + 2 * g.pad, wpx = g.w + 2 * g.pad;
  const int64_t p_in = g.h * g.w, p_out = g.ho * g.wo;
  // conv1 output, zero border of conv2's padding, pixel-major (hp*wpx, kp)
  float* h1 = scratch(h1_buf, static_cast<size_t>(hp * wpx * kp));
  std::memset(h1, 0, sizeof(float) * hp * wpx * kp);
  float* h2 = scratch(h2_buf, static_cast<size_t>(p_out * kp));
  const int64_t kmax = std::max<int64_t>({g.c_in, 9 * k, k});
  float* panel = scratch(panel_buf, static_cast<size_t>(k * kPanel));
  const int32_t* cols = pl.cols.data();
  // conv3 results of a panel, pixel-major, rows rounded up to 8 (the
  // transposed epilogue reads blocks of 8 rows)
  float* tmp = scratch(tmp_buf, static_cast<size_t>((p_out + 7) / 8 * 8 * kPanel));
  int64_t* aoff = aoff_buf.size() < static_cast<size_t>(kmax)
                      ? (aoff_buf.resize(kmax), aoff_buf.data())
                      : aoff_buf.data();
  float bias[kPanel];
  const float* a[kRows];
  float* y[kRows];

  // ---- conv1: rows = input pixels, A = x (channel-major), K = c_in.
  // All panels are gathered in one pass over the kept weights (a pass per
  // panel re-read the whole matrix).
  for (int64_t c = 0; c < g.c_in; ++c) aoff[c] = c * p_in;
  for (int64_t j0 = 0; j0 < kp; j0 += kPanel) {
    const int nv = static_cast<int>(std::min<int64_t>(kPanel, kp - j0) / kLanes);
    for (int l = 0; l < nv * kLanes; ++l) bias[l] = b1[cols[j0 + l]];
    const float* pj = pl.w1p + g.c_in * j0;
    for (int64_t p0 = 0; p0 < p_in; p0 += kRows) {
      const int r = static_cast<int>(std::min<int64_t>(kRows, p_in - p0));
      for (int i = 0; i < r; ++i) {
        const int64_t p = p0 + i, yy = p / g.w, xx = p - yy * g.w;
        a[i] = x + p;
        y[i] = h1 + ((yy + g.pad) * wpx + xx + g.pad) * kp + j0;
      }
      pick<kStoreRelu>(r, nv, avx512)(a, aoff, pj, g.c_in, bias, y, tmp);
    }
  }
  if (k > 0) {
    // ---- conv2: rows = output pixels, A = h1 (nine shifted taps), K = 9 k
    int64_t q = 0;
    for (int64_t dy = 0; dy < 3; ++dy)
      for (int64_t dx = 0; dx < 3; ++dx)
        for (int64_t c = 0; c < k; ++c)
          aoff[q++] = ((dy * g.dil) * wpx + dx * g.dil) * kp + c;
    for (int64_t j0 = 0; j0 < kp; j0 += kPanel) {
      const int nv =
          static_cast<int>(std::min<int64_t>(kPanel, kp - j0) / kLanes);
      const int wdt = nv * kLanes;
      const float* pj = pl.w2p + 9 * k * j0;
      for (int l = 0; l < wdt; ++l) bias[l] = b2[cols[j0 + l]];
      for (int64_t p0 = 0; p0 < p_out; p0 += kRows) {
        const int r = static_cast<int>(std::min<int64_t>(kRows, p_out - p0));
        for (int i = 0; i < r; ++i) {
          const int64_t p = p0 + i, yo = p / g.wo, xo = p - yo * g.wo;
          a[i] = h1 + ((yo * g.stride) * wpx + xo * g.stride) * kp;
          y[i] = h2 + p * kp + j0;
        }
        pick<kStoreRelu>(r, nv, avx512)(a, aoff, pj, 9 * k, bias, y, tmp);
      }
    }
  }
  // ---- conv3: rows = output pixels, A = h2, K = k; accumulated into out
  for (int64_t c = 0; c < k; ++c) aoff[c] = c;
  for (int64_t j0 = 0; j0 < g.c_out; j0 += kPanel) {
    const int wdt = static_cast<int>(std::min<int64_t>(kPanel, g.c_out - j0));
    const int nv = wdt / kLanes;
    for (int64_t c = 0; c < k; ++c)
      std::memcpy(panel + c * wdt, w3t + kept[c] * g.c_out + j0,
                  sizeof(float) * wdt);
    // the panel's conv3 for every pixel into tmp (pixel-major, p_out x 64),
    // then one add + ReLU pass into out's channel rows
    if (k > 0) {
      for (int64_t p0 = 0; p0 < p_out; p0 += kRows) {
        const int r = static_cast<int>(std::min<int64_t>(kRows, p_out - p0));
        for (int i = 0; i < r; ++i) a[i] = h2 + (p0 + i) * kp;
        pick<kTile>(r, nv, avx512)(a, aoff, panel, k, nullptr, y,
                                   tmp + p0 * kPanel);
      }
    } else {
      std::fill(tmp, tmp + p_out * kPanel, 0.f);
    }
#ifdef LAUD_X86
    if (avx512) {  // AVX-512F implies AVX2
      add_relu_transposed_avx2(tmp, p_out, wdt, b3 + j0, out + j0 * p_out);
      continue;
    }
#endif
    for (int l = 0; l < wdt; ++l) {
      float* o = out + (j0 + l) * p_out;
      const float bl = b3[j0 + l];
      for (int64_t p = 0; p < p_out; ++p)
        o[p] = relu_of(o[p] + tmp[p * kPanel + l] + bl);
    }
  }
}

}  // namespace

std::string channel_branch_isa() { return cpu_avx512f() ? "avx512f" : "generic"; }

void channel_branch_add_relu_cpu(at::Tensor& out, const at::Tensor& x,
                                 const at::Tensor& chs,
                                 const at::Tensor& counts,
                                 const at::Tensor& w1t, const at::Tensor& b1,
                                 const at::Tensor& w2t, const at::Tensor& b2,
                                 const at::Tensor& w3t, const at::Tensor& b3,
                                 int64_t stride, int64_t padding,
                                 int64_t dilation, bool force_generic) {
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&out, &x, &w1t, &b1, &w2t, &b2, &w3t, &b3})
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous(),
                "channel_branch_add_relu: float32 contiguous tensors only");
  TORCH_CHECK(chs.scalar_type() == at::kLong && chs.dim() == 2 &&
                  chs.is_contiguous() && counts.scalar_type() == at::kLong &&
                  counts.dim() == 1 && counts.is_contiguous(),
              "chs (N, k) and counts (N,) must be contiguous int64");
  TORCH_CHECK(x.dim() == 4 && out.dim() == 4, "x and out must be 4-D");
  Geometry g;
  const int64_t n = x.size(0);
  g.c_in = x.size(1); g.h = x.size(2); g.w = x.size(3);
  g.width = b1.size(0) - 1;
  g.c_out = out.size(1); g.ho = out.size(2); g.wo = out.size(3);
  g.stride = stride; g.pad = padding; g.dil = dilation;
  TORCH_CHECK(stride >= 1 && dilation >= 1 && padding >= 0,
              "stride, dilation >= 1 and padding >= 0 required");
  TORCH_CHECK(out.size(0) == n && chs.size(0) == n && counts.size(0) == n,
              "out, chs and counts must have x's batch size");
  TORCH_CHECK(w1t.dim() == 2 && w1t.size(0) == g.c_in &&
                  w1t.size(1) == g.width + 1,
              "w1t must be (C_in, width + 1)");
  TORCH_CHECK(w2t.dim() == 3 && w2t.size(0) == 9 &&
                  w2t.size(1) == g.width + 1 && w2t.size(2) == g.width + 1,
              "w2t must be (9, width + 1, width + 1)");
  TORCH_CHECK(w3t.dim() == 2 && w3t.size(0) == g.width + 1 &&
                  w3t.size(1) == g.c_out,
              "w3t must be (width + 1, C_out)");
  TORCH_CHECK(b2.size(0) == g.width + 1 && b3.size(0) == g.c_out,
              "b2 must be (width + 1,), b3 (C_out,)");
  TORCH_CHECK(g.c_out % kLanes == 0, "C_out must be a multiple of 16");
  TORCH_CHECK((g.h + 2 * padding - 2 * dilation - 1) / stride + 1 == g.ho &&
                  (g.w + 2 * padding - 2 * dilation - 1) / stride + 1 == g.wo,
              "out's spatial size does not match conv2's output");
  const int64_t* cnt = counts.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i)
    TORCH_CHECK(cnt[i] >= 0 && cnt[i] <= chs.size(1),
                "counts must lie in [0, chs.size(1)]");
  const int64_t* kept = chs.data_ptr<int64_t>();
  for (int64_t i = 0; i < chs.numel(); ++i)
    TORCH_CHECK(kept[i] >= 0 && kept[i] <= g.width,
                "chs indices must lie in [0, width]");
  if (n == 0) return;
  const bool avx512 = cpu_avx512f() && !force_generic;
  const float* xp = x.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t kk = chs.size(1);
  std::vector<SamplePlan> plans(n);
  int64_t total = 0;
  for (int64_t s = 0; s < n; ++s) {
    SamplePlan& pl = plans[s];
    pl.kept = kept + s * kk;
    pl.k = cnt[s];
    pl.kp = (pl.k + kLanes - 1) / kLanes * kLanes;
    pl.cols.resize(pl.kp);
    for (int64_t m = 0; m < pl.kp; ++m)
      pl.cols[m] = static_cast<int32_t>(m < pl.k ? pl.kept[m] : g.width);
    pl.pairs = pl.k % 2 == 0;  // runs of >= 2 channels: 8-byte moves
    for (int64_t m = 0; pl.pairs && m < pl.k; m += 2)
      pl.pairs = pl.cols[m + 1] == pl.cols[m] + 1;
    total += (g.c_in + 9 * pl.k) * pl.kp;
  }
  at::Tensor buf = at::empty({std::max<int64_t>(total, 1)}, x.options());
  float* bp = buf.data_ptr<float>();
  for (auto& pl : plans) {
    pl.w1p = bp;
    pl.w2p = bp + g.c_in * pl.kp;
    bp += (g.c_in + 9 * pl.k) * pl.kp;
  }
  gather_all(g, plans, w1t.data_ptr<float>(), w2t.data_ptr<float>());
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t s = begin; s < end; ++s)
      sample_branch(g, xp + s * g.c_in * g.h * g.w, plans[s],
                    b1.data_ptr<float>(), b2.data_ptr<float>(),
                    w3t.data_ptr<float>(), b3.data_ptr<float>(),
                    op + s * g.c_out * g.ho * g.wo, avx512);
  });
}

}  // namespace laud_mm
