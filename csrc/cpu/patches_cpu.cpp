// C++ CPU kernels for LAUDNet spatially sparse bottlenecks.
//
// gather_patches: conv2 input windows (3x3 halo, zero outside the image,
//   optional fused ReLU of conv1) of the active S x S output patches.
// scatter_add_relu: out = relu(identity + scatter(patches)) (the fused
//   scatter + residual add + ReLU of the paper): one pass over the output
//   for patches of more than 4 pixels, an L1-blocked two-step kernel for
//   S = 1, 2; patches are Sh x Sw (Sh = Sw = S for spatial skipping, the
//   whole map for layer skipping); out may alias identity, and with a
//   non-negative identity (identity_nonneg) an aliased call touches the
//   active patches only.
//
// Source: LAUDNet paper sec. 3.4 and appendix (operator fusion); the Python
// API and reference implementation are in laud_mm/ops/patches.py.
#include "relu.h"

#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <cstring>
#include <vector>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace laud_mm {

namespace {


// o[q] = relu(a[q] (+ b[q])) for q < n; b may be null.
template <typename scalar_t>
inline void add_relu_row(scalar_t* o, const scalar_t* a, const scalar_t* b,
                         int64_t n) {
  if (b) {
    for (int64_t q = 0; q < n; ++q) o[q] = relu_of(a[q] + b[q]);
  } else {
    for (int64_t q = 0; q < n; ++q) o[q] = relu_of(a[q]);
  }
}
#if defined(__SSE2__)
template <>
inline void add_relu_row<float>(float* o, const float* a, const float* b,
                                int64_t n) {
  const __m128 z = _mm_setzero_ps();
  int64_t q = 0;
  if (b) {
    for (; q + 4 <= n; q += 4)
      _mm_storeu_ps(o + q, _mm_max_ps(z, _mm_add_ps(_mm_loadu_ps(a + q),
                                                    _mm_loadu_ps(b + q))));
    for (; q < n; ++q) o[q] = relu_of(a[q] + b[q]);
  } else {
    for (; q + 4 <= n; q += 4)
      _mm_storeu_ps(o + q, _mm_max_ps(z, _mm_loadu_ps(a + q)));
    for (; q < n; ++q) o[q] = relu_of(a[q]);
  }
}
#endif

// Copy one K x K window (rows W apart in src) to dst (K x K, dense),
// optional ReLU. KC > 0: K known at compile time (unrolled, vectorised);
// KC == 0: runtime K.
template <typename scalar_t, int KC, bool RELU>
inline void copy_window(const scalar_t* src, int64_t W, scalar_t* dst,
                        int64_t Kr) {
  const int64_t K = KC > 0 ? KC : Kr;
  for (int64_t wy = 0; wy < K; ++wy) {
    const scalar_t* s = src + wy * W;
    scalar_t* d = dst + wy * K;
    if (RELU) {
      add_relu_row<scalar_t>(d, s, nullptr, K);
    } else {
      for (int64_t wx = 0; wx < K; ++wx) d[wx] = s[wx];
    }
  }
}

// A window that crosses the image border: zeros outside.
template <typename scalar_t, bool RELU>
inline void copy_window_border(const scalar_t* src, int64_t H, int64_t W,
                               int64_t y0, int64_t x0, scalar_t* dst,
                               int64_t K) {
  const int64_t xlo = std::max<int64_t>(0, -x0);
  const int64_t xhi = std::min<int64_t>(K, W - x0);
  for (int64_t wy = 0; wy < K; ++wy) {
    scalar_t* drow = dst + wy * K;
    const int64_t iy = y0 + wy;
    if (iy < 0 || iy >= H || xhi <= xlo) {
      std::fill(drow, drow + K, scalar_t(0));
      continue;
    }
    const scalar_t* srow = src + iy * W + x0;
    for (int64_t wx = 0; wx < xlo; ++wx) drow[wx] = scalar_t(0);
    for (int64_t wx = xlo; wx < xhi; ++wx) {
      const scalar_t v = srow[wx];
      drow[wx] = RELU ? relu_of(v) : v;
    }
    for (int64_t wx = std::max(xhi, xlo); wx < K; ++wx) drow[wx] = scalar_t(0);
  }
}

template <typename scalar_t, int KC, bool RELU>
void gather_kernel(const scalar_t* feat, const int64_t* idx, scalar_t* out,
                   int64_t P, int64_t C_t, int64_t H, int64_t W,
                   int64_t channels, int64_t S, int64_t stride,
                   int64_t dilation, int64_t K) {
  const int64_t plane = H * W;
  // one task = one patch, all its channel windows (the window position and
  // the border test are computed once per patch)
  const int64_t grain =
      std::max<int64_t>(1, 16384 / std::max<int64_t>(1, channels * K * K));
  at::parallel_for(0, P, grain, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t n = idx[3 * p], gi = idx[3 * p + 1], gj = idx[3 * p + 2];
      const int64_t y0 = gi * S * stride - dilation;
      const int64_t x0 = gj * S * stride - dilation;
      const bool inside = y0 >= 0 && x0 >= 0 && y0 + K <= H && x0 + K <= W;
      const scalar_t* src = feat + n * C_t * plane;
      scalar_t* dst = out + p * channels * K * K;
      if (inside) {
        const scalar_t* s0 = src + y0 * W + x0;
        for (int64_t c = 0; c < channels; ++c)
          copy_window<scalar_t, KC, RELU>(s0 + c * plane, W,
                                          dst + c * K * K, K);
      } else {
        for (int64_t c = 0; c < channels; ++c)
          copy_window_border<scalar_t, RELU>(src + c * plane, H, W, y0, x0,
                                             dst + c * K * K, K);
      }
    }
  });
}

// One pass over the output: out = relu(identity + patch value), where the
// patch value is 0 at pixels of inactive patches. pmap (N, gh, gw) holds the
// row of `patches` for each active patch and -1 elsewhere. One task = one
// (sample, channel) plane; each row is processed patch segment by segment.
template <typename scalar_t>
void scatter_rows_kernel(scalar_t* out, const scalar_t* ident, const scalar_t* y,
                    const int64_t* pmap, int64_t N, int64_t C, int64_t H,
                    int64_t W, int64_t Sh, int64_t Sw, int64_t gh,
                    int64_t gw, bool skip_inactive) {
  const int64_t plane = H * W;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, plane));
  at::parallel_for(0, N * C, grain, [&](int64_t begin, int64_t end) {
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t n = nc / C, c = nc % C;
      for (int64_t gi = 0; gi < gh; ++gi) {
        const int64_t* mrow = pmap + (n * gh + gi) * gw;
        const int64_t rows = std::min<int64_t>(Sh, H - gi * Sh);
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t off = nc * plane + (gi * Sh + r) * W;
          for (int64_t gj = 0; gj < gw; ++gj) {
            const int64_t x0 = gj * Sw, p = mrow[gj];
            if (p < 0 && skip_inactive) continue;
            const scalar_t* s =
                p < 0 ? nullptr : y + ((p * C + c) * Sh + r) * Sw;
            add_relu_row<scalar_t>(out + off + x0, ident + off + x0, s,
                                   std::min<int64_t>(Sw, W - x0));
          }
        }
      }
    }
  });
}

// Patches of at most 4 pixels (S = 1, 2): rows of S floats are too short
// for the one-pass kernel above (its per-segment calls run 7-15x slower
// than a dense add + ReLU of the map at S = 1, 2:
// tools/analysis_tools/benchmark_kernels.py 'scatter' rows). Here a task is
// one sample and a block of channels whose planes fit in L1 (32 KiB),
// handled in two steps: a vectorised ReLU pass over the planes and an add
// over the active patches (each patch's values for the block are one
// contiguous run of `patches`). When out aliases identity the
// add comes first (out = identity + patch; the ReLU pass then covers it),
// else the ReLU pass first (out = relu(identity), then relu(identity +
// patch) on the active pixels). pmap as above.
template <typename scalar_t, int SC>
void scatter_kernel(scalar_t* out, const scalar_t* ident, const scalar_t* y,
                    const int64_t* pmap, int64_t N, int64_t C, int64_t H,
                    int64_t W, int64_t Sh, int64_t Sw, int64_t gh,
                    int64_t gw, bool skip_inactive) {
  const int64_t plane = H * W;
  const bool aliased = out == ident && !skip_inactive;
  // a task = one sample and a block of channels whose planes fit in L1
  // (32 KiB), so the patch values of a block are read as contiguous runs
  const int64_t cb = std::max<int64_t>(
      1, std::min<int64_t>(C, (32768 / int64_t(sizeof(scalar_t))) / plane));
  const int64_t nblk = (C + cb - 1) / cb;
  // per sample, once: (patch row in y, offset in the plane) of its active
  // patches, shared by all its channel blocks
  std::vector<std::vector<int64_t>> acts(N);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t g = 0; g < gh * gw; ++g) {
      const int64_t p = pmap[n * gh * gw + g];
      if (p >= 0) {
        acts[n].push_back(p);
        acts[n].push_back((g / gw) * Sh * W + (g % gw) * Sw);
      }
    }
  at::parallel_for(0, N * nblk, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / nblk, c0 = (t % nblk) * cb;
      const int64_t c1 = std::min<int64_t>(C, c0 + cb);
      const std::vector<int64_t>& act = acts[n];
      scalar_t* ob = out + (n * C + c0) * plane;
      const scalar_t* ib = ident + (n * C + c0) * plane;
      const int64_t len = (c1 - c0) * plane;
      if (!aliased && !skip_inactive)
        add_relu_row<scalar_t>(ob, ib, nullptr, len);
      for (size_t a = 0; a < act.size(); a += 2) {
        const int64_t p = act[a], off = act[a + 1];
        const int64_t y0 = off / W, x0 = off % W;
        const int64_t rows = SC > 0 ? SC : std::min<int64_t>(Sh, H - y0);
        const int64_t cols = SC > 0 ? SC : std::min<int64_t>(Sw, W - x0);
        const scalar_t* yp = y + (p * C + c0) * Sh * Sw;
        for (int64_t c = 0; c < c1 - c0; ++c) {
          const scalar_t* s = yp + c * Sh * Sw;
          scalar_t* o = ob + c * plane + off;
          const scalar_t* id = ib + c * plane + off;
          for (int64_t r = 0; r < rows; ++r) {
            scalar_t* orow = o + r * W;
            const scalar_t* irow = id + r * W;
            const scalar_t* srow = s + r * Sw;
            if (aliased) {
              for (int64_t q = 0; q < cols; ++q) orow[q] = irow[q] + srow[q];
            } else {
              for (int64_t q = 0; q < cols; ++q)
                orow[q] = relu_of(irow[q] + srow[q]);
            }
          }
        }
      }
      if (aliased) add_relu_row<scalar_t>(ob, ob, nullptr, len);
      // skip_inactive: out is identity, already its own ReLU; the active
      // pixels got relu(identity + patch) above
    }
  });
}

template <typename scalar_t>
void scatter_dispatch(scalar_t* out, const scalar_t* ident, const scalar_t* y,
                      const int64_t* pmap, int64_t N, int64_t C, int64_t H,
                      int64_t W, int64_t Sh, int64_t Sw, int64_t gh,
                      int64_t gw, bool skip_inactive) {
  if (Sh * Sw > 4)
    return scatter_rows_kernel<scalar_t>(out, ident, y, pmap, N, C, H, W, Sh,
                                         Sw, gh, gw, skip_inactive);
  const bool tiled = H % Sh == 0 && W % Sw == 0;
  if (tiled && Sh == 1 && Sw == 1)
    return scatter_kernel<scalar_t, 1>(out, ident, y, pmap, N, C, H, W, Sh, Sw, gh, gw, skip_inactive);
  if (tiled && Sh == 2 && Sw == 2)
    return scatter_kernel<scalar_t, 2>(out, ident, y, pmap, N, C, H, W, Sh, Sw, gh, gw, skip_inactive);
  return scatter_kernel<scalar_t, 0>(out, ident, y, pmap, N, C, H, W, Sh, Sw, gh, gw, skip_inactive);
}

// Compile-time window sizes of the common granularities (K = (S - 1) *
// stride + 2 * dilation + 1: S = 1, 2, 4, 7/8 at stride 1 and 2); others
// use the runtime-K kernel.
template <typename scalar_t, bool RELU>
void gather_dispatch_k(const scalar_t* f, const int64_t* ix, scalar_t* o,
                       int64_t P, int64_t C_t, int64_t H, int64_t W,
                       int64_t ch, int64_t S, int64_t st, int64_t d,
                       int64_t K) {
  switch (K) {
    case 3: return gather_kernel<scalar_t, 3, RELU>(f, ix, o, P, C_t, H, W, ch, S, st, d, K);
    case 4: return gather_kernel<scalar_t, 4, RELU>(f, ix, o, P, C_t, H, W, ch, S, st, d, K);
    case 5: return gather_kernel<scalar_t, 5, RELU>(f, ix, o, P, C_t, H, W, ch, S, st, d, K);
    case 6: return gather_kernel<scalar_t, 6, RELU>(f, ix, o, P, C_t, H, W, ch, S, st, d, K);
    case 9: return gather_kernel<scalar_t, 9, RELU>(f, ix, o, P, C_t, H, W, ch, S, st, d, K);
    case 10: return gather_kernel<scalar_t, 10, RELU>(f, ix, o, P, C_t, H, W, ch, S, st, d, K);
    default: return gather_kernel<scalar_t, 0, RELU>(f, ix, o, P, C_t, H, W, ch, S, st, d, K);
  }
}

template <typename scalar_t>
void gather_dispatch(const scalar_t* f, const int64_t* ix, scalar_t* o,
                     int64_t P, int64_t C_t, int64_t H, int64_t W, int64_t ch,
                     int64_t S, int64_t st, int64_t d, int64_t K, bool relu) {
  if (relu)
    gather_dispatch_k<scalar_t, true>(f, ix, o, P, C_t, H, W, ch, S, st, d, K);
  else
    gather_dispatch_k<scalar_t, false>(f, ix, o, P, C_t, H, W, ch, S, st, d, K);
}

}  // namespace

at::Tensor gather_patches_cpu(const at::Tensor& feat, const at::Tensor& idx,
                              int64_t S, int64_t stride, int64_t dilation,
                              int64_t channels, bool relu) {
  TORCH_CHECK(feat.dim() == 4 && feat.is_contiguous(),
              "feat must be a contiguous (N, C, H, W) tensor");
  TORCH_CHECK(idx.dim() == 2 && idx.size(1) == 3 &&
                  idx.scalar_type() == at::kLong && idx.is_contiguous(),
              "idx must be a contiguous int64 (P, 3) tensor");
  TORCH_CHECK(channels >= 0 && channels <= feat.size(1),
              "channels out of range");
  const int64_t K = (S - 1) * stride + 2 * dilation + 1;
  const int64_t P = idx.size(0);
  auto out = at::empty({P, channels, K, K}, feat.options());
  if (P == 0 || channels == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(feat.scalar_type(), "gather_patches_cpu", [&] {
    gather_dispatch<scalar_t>(feat.data_ptr<scalar_t>(),
                              idx.data_ptr<int64_t>(), out.data_ptr<scalar_t>(),
                              P, feat.size(1), feat.size(2), feat.size(3),
                              channels, S, stride, dilation, K, relu);
  });
  return out;
}

void scatter_add_relu_cpu(at::Tensor& out, const at::Tensor& identity,
                          const at::Tensor& patches, const at::Tensor& pmap,
                          int64_t Sh, int64_t Sw, bool identity_nonneg) {
  TORCH_CHECK(out.dim() == 4 && out.is_contiguous() &&
                  identity.is_contiguous() && patches.is_contiguous(),
              "out, identity and patches must be contiguous");
  TORCH_CHECK(out.sizes() == identity.sizes(), "out / identity shape mismatch");
  const int64_t N = out.size(0), C = out.size(1), H = out.size(2),
                W = out.size(3);
  const int64_t gh = (H + Sh - 1) / Sh, gw = (W + Sw - 1) / Sw;
  TORCH_CHECK(pmap.dim() == 3 && pmap.size(0) == N && pmap.size(1) == gh &&
                  pmap.size(2) == gw && pmap.scalar_type() == at::kLong &&
                  pmap.is_contiguous(),
              "pmap must be a contiguous int64 (N, gh, gw) tensor");
  TORCH_CHECK(patches.dim() == 4 && patches.size(1) == C &&
                  patches.size(2) == Sh && patches.size(3) == Sw,
              "patches must be (P, C, Sh, Sw)");
  if (out.numel() == 0) return;
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "scatter_add_relu_cpu", [&] {
    scatter_dispatch<scalar_t>(out.data_ptr<scalar_t>(),
                             identity.data_ptr<scalar_t>(),
                             patches.data_ptr<scalar_t>(),
                             pmap.data_ptr<int64_t>(), N, C, H, W, Sh, Sw, gh,
                             gw,
                             identity_nonneg && out.data_ptr() == identity.data_ptr());
  });
}

}  // namespace laud_mm
