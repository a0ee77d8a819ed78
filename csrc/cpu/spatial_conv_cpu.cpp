// C++ CPU kernel for LAUDNet spatial skipping: the whole sparse branch of a
// spatially masked bottleneck (conv1 -> ReLU -> conv2 -> ReLU -> conv3, BN
// folded), added into the shortcut with the final ReLU, computing only what
// the active S x S output patches need.
//
// spatial_branch_add_relu_cpu(out, x, identity, idx, w1p, b1, w2p, b2, w3p,
//                             b3, S, stride, dilation, identity_nonneg):
//   for every sample n with active patches A_n = {(gi, gj)} (rows of idx):
//     D_n = the conv2 input pixels of A_n's output pixels (the mask dilated
//           by conv2's 3 x 3 window, at the input resolution)
//     h1  = relu(W1 x_n + b1)           at the pixels of D_n    (1x1)
//     h2  = relu(W2 * h1 + b2)          at A_n's output pixels  (3x3,
//           stride, dilation; zero outside the image as conv2's padding)
//     out_n = relu(identity_n + W3 h2 + b3) at A_n's output pixels,
//             relu(identity_n) elsewhere
//   which is the masked-dense block: a skipped pixel's branch output is 0.
//
// Why a kernel: the gather / convolution / scatter path
// (laud_mm/models/resnet/dynamic.py) runs the convolutions at the static
// network's efficiency but pays for the data movement around them: conv1
// on the whole map (the paper's FLOPs count it on the dilated mask only), a
// copy of every active patch's K x K conv1 window, conv3's output written
// to a patch buffer and read back by the scatter. On that path, perf of the
// R50 backbone at r = 0.5 (8 x 224 px) puts gather and scatter at 10 % of
// the time, with the convolutions alone 1.73x faster than static but the
// whole backbone 1.45x (docs/benchmarks.md, "What the profile showed").
// Here the register tiles
// of tile.h (7 pixels x 64 output channels, inputs broadcast) read any
// pixel set in place: conv1 reads the NCHW input at D_n's pixels and writes
// a zero-bordered pixel-major buffer; conv2 reads its nine taps from that
// buffer; conv3 writes a 64-channel panel of A_n's pixels to a small
// pixel-major buffer that one pass adds into out's channel rows (8 x 8
// in-register transposes, runs of 8 / 4 adjacent pixels as 256- / 128-bit
// moves, shorter runs (S = 1, 2) per pixel). One thread per sample; the
// caller (laud_mm/models/resnet/dynamic.py) uses the kernel when
// batch >= threads.
//
// Source: LAUDNet paper sec. 3.1 (spatial masker, granularity S), sec. 3.4
// and appendix B.1 (gather / scatter-add fused with the convolutions),
// docs/method.md sec. 2 (conv1 FLOPs on the dilated mask); Python API and
// reference in laud_mm/ops/spatial_conv.py.
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

struct SpatialGeometry {
  int64_t c_in, h, w, width, c_out, ho, wo, stride, dil, S, gh, gw;
};

// Run kind of 8 consecutive output pixels of the pixel list (offsets poff
// in the output plane): kRun8 one run of 8 adjacent pixels, kRun4 two runs
// of 4, kScalar anything else (and the list's tail): per pixel.
enum RunKind : uint8_t { kScalar = 0, kRun4 = 4, kRun8 = 8 };

bool runs_of(const int64_t* poff, int len) {
  for (int k = 1; k < len; ++k)
    if (poff[k] != poff[0] + k) return false;
  return true;
}

RunKind run_kind(const int64_t* poff, int64_t count) {
  if (count < 8) return kScalar;
  if (runs_of(poff, 8)) return kRun8;
  if (runs_of(poff, 4) && runs_of(poff + 4, 4)) return kRun4;
  return kScalar;
}

// o[q] = relu(a[q]) for q < n (vectorised; o may alias a).
void relu_copy(float* o, const float* a, int64_t n) {
  int64_t q = 0;
#if defined(__SSE2__)
  const __m128 z = _mm_setzero_ps();
  for (; q + 4 <= n; q += 4)
    _mm_storeu_ps(o + q, _mm_max_ps(z, _mm_loadu_ps(a + q)));
#endif
  for (; q < n; ++q) o[q] = relu_of(a[q]);
}

// conv3's epilogue at scattered pixels: out[l][poff[p]] = relu(ident[l]
// [poff[p]] + tmp[p][l] + bias[l]) for p < count, l < wdt (a multiple of 8);
// out[l] = out + l * plane, likewise ident (may alias out). tmp has count
// rows of kPanel, rounded up to 8.
void add_relu_scattered_generic(const float* tmp, const int64_t* poff,
                                int64_t count, int wdt, const float* bias,
                                const float* ident, float* out,
                                int64_t plane) {
  for (int l = 0; l < wdt; ++l) {
    const float* id = ident + l * plane;
    float* o = out + l * plane;
    for (int64_t p = 0; p < count; ++p)
      o[poff[p]] = relu_of(id[poff[p]] + tmp[p * kPanel + l] + bias[l]);
  }
}

#ifdef LAUD_X86
LAUD_TARGET("avx2") void add_relu_scattered_avx2(
    const float* tmp, const int64_t* poff, const uint8_t* kinds,
    int64_t count, int wdt, const float* bias, const float* ident,
    float* out, int64_t plane) {
  const __m256 zero = _mm256_setzero_ps();
  const __m128 zero4 = _mm_setzero_ps();
  alignas(32) float v8[8];
  for (int l0 = 0; l0 < wdt; l0 += 8) {
    __m256 b[8];
    for (int l = 0; l < 8; ++l) b[l] = _mm256_set1_ps(bias[l0 + l]);
    for (int64_t p0 = 0; p0 < count; p0 += 8) {
      __m256 col[8];
      for (int i = 0; i < 8; ++i)
        col[i] = _mm256_loadu_ps(tmp + (p0 + i) * kPanel + l0);
      transpose8x8(col);
      const int64_t* po = poff + p0;
      const uint8_t kind = kinds[p0 / 8];
      for (int l = 0; l < 8; ++l) {
        const float* id = ident + (l0 + l) * plane;
        float* o = out + (l0 + l) * plane;
        const __m256 c = _mm256_add_ps(col[l], b[l]);
        if (kind == kRun8) {
          _mm256_storeu_ps(o + po[0],
                           _mm256_max_ps(zero, _mm256_add_ps(
                               _mm256_loadu_ps(id + po[0]), c)));
        } else if (kind == kRun4) {
          const __m128 lo = _mm256_castps256_ps128(c);
          const __m128 hi = _mm256_extractf128_ps(c, 1);
          _mm_storeu_ps(o + po[0], _mm_max_ps(zero4, _mm_add_ps(
                                       _mm_loadu_ps(id + po[0]), lo)));
          _mm_storeu_ps(o + po[4], _mm_max_ps(zero4, _mm_add_ps(
                                       _mm_loadu_ps(id + po[4]), hi)));
        } else {
          _mm256_store_ps(v8, c);
          const int64_t m = std::min<int64_t>(8, count - p0);
          for (int64_t i = 0; i < m; ++i)
            o[po[i]] = relu_of(id[po[i]] + v8[i]);
        }
      }
    }
  }
}
#endif

struct Weights {
  const float *w1p, *b1, *w2p, *b2, *w3p, *b3;
};

// One sample. patches: its active patches as (gi, gj) pairs, count np.
void sample_spatial(const SpatialGeometry& g, const float* x,
                    const float* ident, float* out, const int64_t* patches,
                    int64_t np, const Weights& wt, bool relu_before,
                    bool relu_after, bool avx512) {
  const int64_t plane_in = g.h * g.w, plane_out = g.ho * g.wo;
  if (relu_before) relu_copy(out, ident, g.c_out * plane_out);
  if (np > 0) {
    thread_local std::vector<float> h1_buf, h2_buf, tmp_buf;
    thread_local std::vector<int64_t> opix_buf, ipix_buf, aoff_buf;
    thread_local std::vector<uint8_t> need_buf, kind_buf;
    const int64_t S = g.S, d = g.dil, st = g.stride, width = g.width;
    const int64_t hp = g.h + 2 * d, wpx = g.w + 2 * d;

    // output pixels of the active patches (offsets in the output plane),
    // patch by patch and row by row; the conv2 input pixels they need
    std::vector<int64_t>& opix = opix_buf;
    opix.clear();
    if (need_buf.size() < static_cast<size_t>(plane_in))
      need_buf.resize(plane_in);
    uint8_t* need = need_buf.data();
    std::memset(need, 0, plane_in);
    for (int64_t a = 0; a < np; ++a) {
      const int64_t gi = patches[2 * a], gj = patches[2 * a + 1];
      const int64_t y0 = gi * S, y1 = std::min(g.ho, y0 + S);
      const int64_t x0 = gj * S, x1 = std::min(g.wo, x0 + S);
      for (int64_t yo = y0; yo < y1; ++yo)
        for (int64_t xo = x0; xo < x1; ++xo) opix.push_back(yo * g.wo + xo);
      const int64_t iy0 = std::max<int64_t>(0, y0 * st - d);
      const int64_t iy1 = std::min<int64_t>(g.h, (y1 - 1) * st + d + 1);
      const int64_t ix0 = std::max<int64_t>(0, x0 * st - d);
      const int64_t ix1 = std::min<int64_t>(g.w, (x1 - 1) * st + d + 1);
      for (int64_t iy = iy0; iy < iy1; ++iy)
        std::memset(need + iy * g.w + ix0, 1, ix1 - ix0);
    }
    std::vector<int64_t>& ipix = ipix_buf;
    ipix.clear();
    for (int64_t p = 0; p < plane_in; ++p)
      if (need[p]) ipix.push_back(p);
    const int64_t p_in = static_cast<int64_t>(ipix.size());
    const int64_t p_out = static_cast<int64_t>(opix.size());
    const int64_t p_out8 = (p_out + 7) / 8 * 8;

    // conv1 output, pixel-major (hp x wpx, width), zero on the border of
    // conv2's padding; pixels outside D_n are never read
    float* h1 = scratch(h1_buf, static_cast<size_t>(hp * wpx * width));
    for (int64_t r = 0; r < hp; ++r) {
      float* row = h1 + r * wpx * width;
      if (r < d || r >= hp - d) {
        std::memset(row, 0, sizeof(float) * wpx * width);
      } else {
        std::memset(row, 0, sizeof(float) * d * width);
        std::memset(row + (wpx - d) * width, 0, sizeof(float) * d * width);
      }
    }
    float* h2 = scratch(h2_buf, static_cast<size_t>(p_out * width));
    float* tmp = scratch(tmp_buf, static_cast<size_t>(p_out8 * kPanel));
    const int64_t kmax = std::max<int64_t>(g.c_in, 9 * width);
    if (aoff_buf.size() < static_cast<size_t>(kmax)) aoff_buf.resize(kmax);
    int64_t* aoff = aoff_buf.data();
    const float* a[kRows];
    float* y[kRows];

    // ---- conv1 at D_n: rows = input pixels, A = x (NCHW), K = c_in
    for (int64_t c = 0; c < g.c_in; ++c) aoff[c] = c * plane_in;
    for (int64_t j0 = 0; j0 < width; j0 += kPanel) {
      const int nv =
          static_cast<int>(std::min<int64_t>(kPanel, width - j0) / kLanes);
      const float* pj = wt.w1p + g.c_in * j0;
      for (int64_t p0 = 0; p0 < p_in; p0 += kRows) {
        const int r = static_cast<int>(std::min<int64_t>(kRows, p_in - p0));
        for (int i = 0; i < r; ++i) {
          const int64_t p = ipix[p0 + i], yy = p / g.w, xx = p - yy * g.w;
          a[i] = x + p;
          y[i] = h1 + ((yy + d) * wpx + xx + d) * width + j0;
        }
        pick<kStoreRelu>(r, nv, avx512)(a, aoff, pj, g.c_in, wt.b1 + j0, y,
                                        tmp);
      }
    }
    // ---- conv2 at A_n's pixels: A = h1 (nine shifted taps), K = 9 width
    int64_t q = 0;
    for (int64_t dy = 0; dy < 3; ++dy)
      for (int64_t dx = 0; dx < 3; ++dx)
        for (int64_t c = 0; c < width; ++c)
          aoff[q++] = ((dy * d) * wpx + dx * d) * width + c;
    for (int64_t j0 = 0; j0 < width; j0 += kPanel) {
      const int nv =
          static_cast<int>(std::min<int64_t>(kPanel, width - j0) / kLanes);
      const float* pj = wt.w2p + 9 * width * j0;
      for (int64_t p0 = 0; p0 < p_out; p0 += kRows) {
        const int r = static_cast<int>(std::min<int64_t>(kRows, p_out - p0));
        for (int i = 0; i < r; ++i) {
          const int64_t p = opix[p0 + i], yo = p / g.wo, xo = p - yo * g.wo;
          a[i] = h1 + ((yo * st) * wpx + xo * st) * width;
          y[i] = h2 + (p0 + i) * width + j0;
        }
        pick<kStoreRelu>(r, nv, avx512)(a, aoff, pj, 9 * width, wt.b2 + j0,
                                        y, tmp);
      }
    }
    // ---- conv3 at A_n's pixels, per 64-channel panel into tmp, then added
    // into out at the scattered pixels
    if (kind_buf.size() < static_cast<size_t>(p_out8 / 8))
      kind_buf.resize(p_out8 / 8);
    uint8_t* kinds = kind_buf.data();
    for (int64_t p0 = 0; p0 < p_out; p0 += 8)
      kinds[p0 / 8] = run_kind(opix.data() + p0, p_out - p0);
    for (int64_t c = 0; c < width; ++c) aoff[c] = c;
    for (int64_t j0 = 0; j0 < g.c_out; j0 += kPanel) {
      const int wdt =
          static_cast<int>(std::min<int64_t>(kPanel, g.c_out - j0));
      const int nv = wdt / kLanes;
      const float* pj = wt.w3p + width * j0;
      for (int64_t p0 = 0; p0 < p_out; p0 += kRows) {
        const int r = static_cast<int>(std::min<int64_t>(kRows, p_out - p0));
        for (int i = 0; i < r; ++i) a[i] = h2 + (p0 + i) * width;
        pick<kTile>(r, nv, avx512)(a, aoff, pj, width, nullptr, y,
                                   tmp + p0 * kPanel);
      }
#ifdef LAUD_X86
      if (avx512) {  // AVX-512F implies AVX2
        add_relu_scattered_avx2(tmp, opix.data(), kinds, p_out, wdt,
                                wt.b3 + j0, ident + j0 * plane_out,
                                out + j0 * plane_out, plane_out);
        continue;
      }
#endif
      add_relu_scattered_generic(tmp, opix.data(), p_out, wdt, wt.b3 + j0,
                                 ident + j0 * plane_out,
                                 out + j0 * plane_out, plane_out);
    }
  }
  if (relu_after) relu_copy(out, out, g.c_out * plane_out);
}

}  // namespace

void spatial_branch_add_relu_cpu(at::Tensor& out, const at::Tensor& x,
                                 const at::Tensor& identity,
                                 const at::Tensor& idx, const at::Tensor& w1p,
                                 const at::Tensor& b1, const at::Tensor& w2p,
                                 const at::Tensor& b2, const at::Tensor& w3p,
                                 const at::Tensor& b3, int64_t S,
                                 int64_t stride, int64_t dilation,
                                 bool identity_nonneg, bool force_generic) {
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{
           &out, &x, &identity, &w1p, &b1, &w2p, &b2, &w3p, &b3})
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous(),
                "spatial_branch_add_relu: float32 contiguous tensors only");
  TORCH_CHECK(x.dim() == 4 && out.dim() == 4 && identity.dim() == 4,
              "x, identity and out must be 4-D");
  TORCH_CHECK(identity.sizes() == out.sizes(),
              "identity and out must have the same shape");
  TORCH_CHECK(idx.scalar_type() == at::kLong && idx.dim() == 2 &&
                  idx.size(1) == 3 && idx.is_contiguous(),
              "idx must be a contiguous int64 (P, 3) tensor");
  TORCH_CHECK(S >= 1 && stride >= 1 && dilation >= 1,
              "S, stride and dilation must be >= 1");
  SpatialGeometry g;
  const int64_t n = x.size(0);
  g.c_in = x.size(1); g.h = x.size(2); g.w = x.size(3);
  g.width = b1.size(0); g.c_out = out.size(1);
  g.ho = out.size(2); g.wo = out.size(3);
  g.stride = stride; g.dil = dilation; g.S = S;
  g.gh = (g.ho + S - 1) / S; g.gw = (g.wo + S - 1) / S;
  TORCH_CHECK(out.size(0) == n, "out must have x's batch size");
  TORCH_CHECK(g.width % kLanes == 0 && g.c_out % kLanes == 0,
              "width and C_out must be multiples of 16");
  TORCH_CHECK(w1p.numel() == g.c_in * g.width &&
                  w2p.numel() == 9 * g.width * g.width &&
                  w3p.numel() == g.width * g.c_out && b2.numel() == g.width &&
                  b3.numel() == g.c_out,
              "packed weights must hold C_in x width, 9 width x width and "
              "width x C_out floats, b2 width and b3 C_out");
  TORCH_CHECK((g.h - 1) / stride + 1 == g.ho && (g.w - 1) / stride + 1 == g.wo,
              "out's spatial size does not match conv2's output");
  const int64_t P = idx.size(0);
  const int64_t* ix = idx.data_ptr<int64_t>();
  for (int64_t p = 0; p < P; ++p) {
    TORCH_CHECK(ix[3 * p] >= 0 && ix[3 * p] < n && ix[3 * p + 1] >= 0 &&
                    ix[3 * p + 1] < g.gh && ix[3 * p + 2] >= 0 &&
                    ix[3 * p + 2] < g.gw,
                "idx row ", p, " lies outside the (N, gh, gw) patch grid");
    TORCH_CHECK(p == 0 || ix[3 * p] >= ix[3 * (p - 1)],
                "idx must be sorted by sample (as nonzero() returns it)");
  }
  if (n == 0) return;
  // per sample: its active patches as (gi, gj) pairs
  std::vector<int64_t> pairs(2 * P), start(n + 1, 0);
  for (int64_t p = 0; p < P; ++p) {
    pairs[2 * p] = ix[3 * p + 1];
    pairs[2 * p + 1] = ix[3 * p + 2];
    ++start[ix[3 * p] + 1];
  }
  for (int64_t s = 0; s < n; ++s) start[s + 1] += start[s];
  const bool aliased = out.data_ptr() == identity.data_ptr();
  const bool relu_before = !aliased;
  const bool relu_after = aliased && !identity_nonneg;
  const bool avx512 = cpu_avx512f() && !force_generic;
  const Weights wt{w1p.data_ptr<float>(), b1.data_ptr<float>(),
                   w2p.data_ptr<float>(), b2.data_ptr<float>(),
                   w3p.data_ptr<float>(), b3.data_ptr<float>()};
  const float* xp = x.data_ptr<float>();
  const float* ip = identity.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t out_n = g.c_out * g.ho * g.wo;
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t s = begin; s < end; ++s)
      sample_spatial(g, xp + s * g.c_in * g.h * g.w, ip + s * out_n,
                     op + s * out_n, pairs.data() + 2 * start[s],
                     start[s + 1] - start[s], wt, relu_before, relu_after,
                     avx512);
  });
}

}  // namespace laud_mm
