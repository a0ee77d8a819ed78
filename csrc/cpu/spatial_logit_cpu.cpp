// C++ CPU kernel of the spatial masker's decision input in eval: the
// keep - skip logit difference of every input pixel (the masker's 1x1
// convolution reduced to one output channel: a weighted sum over the
// channels) average-pooled to the patch grid, in one pass over x.
//
// spatial_logit_pool_cpu(x (N, C, H, W), w (C,), b, gh, gw) -> (N, gh, gw):
//   out[n, i, j] = b + mean over the adaptive-pool cell (i, j) of
//                  sum_c w[c] x[n, c, y, x]
// with cell rows [floor(i H / gh), ceil((i + 1) H / gh)) and columns
// likewise (F.adaptive_avg_pool2d's cells), equal by linearity to the
// masker's pool -> 1x1 conv (paper sec. 3.1) up to float rounding.
//
// Why a kernel: the same sum as a GEMV (torch.matmul of the (1, C) weight
// row with x as (N, C, H W)) reads x at a fraction of the memory bandwidth a
// plain pass over x reaches, and its logit map is then pooled by a second
// call. Here a work item is one sample (or, when the batch is smaller than
// twice the threads, one band of its cell rows): its channels are streamed
// in order, four at a time, into an accumulator of the item's pixels that
// stays in L1 / L2, then pooled into the item's cells. Items split over
// torch's threads; every pixel's and every cell's sum runs in the same
// order whatever the split, so the result does not depend on the thread
// count.
//
// add_relu_logit_pool_cpu(out, identity, w, b, gh, gw) -> (N, gh, gw):
//   out = relu(out + identity) in place (a residual block's epilogue), and
//   the logit pool above of the new out, in the same pass: a block that
//   computes its output densely hands the next spatial block its masker's
//   decision input without a second read of the output. Each group of four
//   channels is added, rectified and stored, then summed into the pixel
//   accumulator in exactly spatial_logit_pool_cpu's order, so the logits
//   equal spatial_logit_pool_cpu(new out) bit for bit. When an item is a
//   whole sample (logit_pool_pass: batches of at least twice the threads,
//   a one-row grid, or cell rows that share input rows) with planes of
//   64 to 4096 pixels, the group's channels are visited one after the
//   other, in address order, with the same per-pixel sums
//   (add_relu_accumulate4_inorder_avx512).
//
// Both take channels_last (NHWC) tensors too: a pixel's logit is then the
// dot product of its channel row with w, read in place (row_dot_*), in
// another summation order than NCHW's, and the add_relu pass's logits
// again equal the plain pass's over its new out bit for bit.
//
// Source: LAUDNet paper sec. 3.1 (spatial masker), sec. 3.4 (operator
// fusion: "Fusing the masker and the first convolution", "Fusing scatter
// and add"); Python API in laud_mm/ops/spatial_logit.py.
#include "isa.h"
#include "relu.h"

#include <ATen/MemoryOverlap.h>
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace laud_mm {

namespace {

// acc[p] (+)= sum of w[c] x_c[p] over 4 channels, p < len
inline void accumulate4(float* acc, const float* x0, int64_t hw,
                        const float* w, int64_t len, bool first) {
  const float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3];
  const float* x1 = x0 + hw;
  const float* x2 = x1 + hw;
  const float* x3 = x2 + hw;
  if (first) {
    for (int64_t p = 0; p < len; ++p)
      acc[p] = w0 * x0[p] + w1 * x1[p] + w2 * x2[p] + w3 * x3[p];
  } else {
    for (int64_t p = 0; p < len; ++p)
      acc[p] += w0 * x0[p] + w1 * x1[p] + w2 * x2[p] + w3 * x3[p];
  }
}

inline void accumulate1(float* acc, const float* x0, float w0, int64_t len,
                        bool first) {
  if (first) {
    for (int64_t p = 0; p < len; ++p) acc[p] = w0 * x0[p];
  } else {
    for (int64_t p = 0; p < len; ++p) acc[p] += w0 * x0[p];
  }
}

#ifdef LAUD_X86
// accumulate4 with AVX-512 FMAs (16 pixels a vector, masked tail)
LAUD_TARGET("avx512f")
void accumulate4_avx512(float* acc, const float* x0, int64_t hw,
                        const float* w, int64_t len, bool first) {
  const __m512 w0 = _mm512_set1_ps(w[0]), w1 = _mm512_set1_ps(w[1]);
  const __m512 w2 = _mm512_set1_ps(w[2]), w3 = _mm512_set1_ps(w[3]);
  const float* x1 = x0 + hw;
  const float* x2 = x1 + hw;
  const float* x3 = x2 + hw;
  for (int64_t p = 0; p < len; p += 16) {
    const __mmask16 m = len - p >= 16
        ? static_cast<__mmask16>(0xFFFF)
        : static_cast<__mmask16>((1u << (len - p)) - 1u);
    __m512 a = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m, acc + p);
    a = _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(m, x0 + p), a);
    a = _mm512_fmadd_ps(w1, _mm512_maskz_loadu_ps(m, x1 + p), a);
    a = _mm512_fmadd_ps(w2, _mm512_maskz_loadu_ps(m, x2 + p), a);
    a = _mm512_fmadd_ps(w3, _mm512_maskz_loadu_ps(m, x3 + p), a);
    _mm512_mask_storeu_ps(acc + p, m, a);
  }
}
#endif

// o_k = relu(o_k + i_k) in place for the 4 channels at o0 / i0 (stride
// hw), then acc as accumulate4 over the new o_k (same expression)
inline void add_relu_accumulate4(float* acc, float* o0, const float* i0,
                                 int64_t hw, const float* w, int64_t len,
                                 bool first) {
  const float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3];
  float* o1 = o0 + hw;
  float* o2 = o1 + hw;
  float* o3 = o2 + hw;
  const float* i1 = i0 + hw;
  const float* i2 = i1 + hw;
  const float* i3 = i2 + hw;
  for (int64_t p = 0; p < len; ++p) {
    const float v0 = relu_of(o0[p] + i0[p]), v1 = relu_of(o1[p] + i1[p]);
    const float v2 = relu_of(o2[p] + i2[p]), v3 = relu_of(o3[p] + i3[p]);
    o0[p] = v0;
    o1[p] = v1;
    o2[p] = v2;
    o3[p] = v3;
    if (first)
      acc[p] = w0 * v0 + w1 * v1 + w2 * v2 + w3 * v3;
    else
      acc[p] += w0 * v0 + w1 * v1 + w2 * v2 + w3 * v3;
  }
}

inline void add_relu_accumulate1(float* acc, float* o0, const float* i0,
                                 float w0, int64_t len, bool first) {
  for (int64_t p = 0; p < len; ++p) {
    const float v = relu_of(o0[p] + i0[p]);
    o0[p] = v;
    if (first)
      acc[p] = w0 * v;
    else
      acc[p] += w0 * v;
  }
}

#ifdef LAUD_X86
// add_relu_accumulate4 with AVX-512 (accumulate4_avx512's FMA order)
LAUD_TARGET("avx512f")
void add_relu_accumulate4_avx512(float* acc, float* o0, const float* i0,
                                 int64_t hw, const float* w, int64_t len,
                                 bool first) {
  const __m512 z = _mm512_setzero_ps();
  const __m512 w0 = _mm512_set1_ps(w[0]), w1 = _mm512_set1_ps(w[1]);
  const __m512 w2 = _mm512_set1_ps(w[2]), w3 = _mm512_set1_ps(w[3]);
  for (int64_t p = 0; p < len; p += 16) {
    const __mmask16 m = len - p >= 16
        ? static_cast<__mmask16>(0xFFFF)
        : static_cast<__mmask16>((1u << (len - p)) - 1u);
    // max(0, NaN) = NaN, max(0, -0) = -0, as relu_of
    const __m512 v0 = _mm512_max_ps(
        z, _mm512_add_ps(_mm512_maskz_loadu_ps(m, o0 + p),
                         _mm512_maskz_loadu_ps(m, i0 + p)));
    const __m512 v1 = _mm512_max_ps(
        z, _mm512_add_ps(_mm512_maskz_loadu_ps(m, o0 + hw + p),
                         _mm512_maskz_loadu_ps(m, i0 + hw + p)));
    const __m512 v2 = _mm512_max_ps(
        z, _mm512_add_ps(_mm512_maskz_loadu_ps(m, o0 + 2 * hw + p),
                         _mm512_maskz_loadu_ps(m, i0 + 2 * hw + p)));
    const __m512 v3 = _mm512_max_ps(
        z, _mm512_add_ps(_mm512_maskz_loadu_ps(m, o0 + 3 * hw + p),
                         _mm512_maskz_loadu_ps(m, i0 + 3 * hw + p)));
    _mm512_mask_storeu_ps(o0 + p, m, v0);
    _mm512_mask_storeu_ps(o0 + hw + p, m, v1);
    _mm512_mask_storeu_ps(o0 + 2 * hw + p, m, v2);
    _mm512_mask_storeu_ps(o0 + 3 * hw + p, m, v3);
    __m512 a = first ? z : _mm512_maskz_loadu_ps(m, acc + p);
    a = _mm512_fmadd_ps(w0, v0, a);
    a = _mm512_fmadd_ps(w1, v1, a);
    a = _mm512_fmadd_ps(w2, v2, a);
    a = _mm512_fmadd_ps(w3, v3, a);
    _mm512_mask_storeu_ps(acc + p, m, a);
  }
}
#endif

#ifdef LAUD_X86
// add_relu_accumulate4_avx512 one channel after the other: the same FMAs
// in the same order for every pixel (bit-equal results), but the sample's
// memory is read and written in address order. The four-channel order
// keeps eight read streams and four write streams open at once, which
// streams as short as one plane of a 14 x 14 or 28 x 28 map do not keep
// fed; in address order there are two read streams and one write stream.
// For whole-sample items with planes of 64 to 4096 pixels (see
// add_relu_logit_pool_cpu): the accumulator, one plane, is re-read per
// channel and stays in L1 up to 16 KB; larger planes (detection-size
// maps) keep the four-channel order, which re-reads it a quarter as often.
LAUD_TARGET("avx512f")
void add_relu_accumulate4_inorder_avx512(float* acc, float* o0,
                                         const float* i0, int64_t hw,
                                         const float* w, int64_t len,
                                         bool first) {
  const __m512 z = _mm512_setzero_ps();
  for (int k = 0; k < 4; ++k) {
    const __m512 wk = _mm512_set1_ps(w[k]);
    float* o = o0 + k * hw;
    const float* in = i0 + k * hw;
    const bool zero = first && k == 0;
    for (int64_t p = 0; p < len; p += 16) {
      const __mmask16 m = len - p >= 16
          ? static_cast<__mmask16>(0xFFFF)
          : static_cast<__mmask16>((1u << (len - p)) - 1u);
      // the shortcut is read here for the last time: fetched non-temporally
      // (8 lines ahead), it does not displace the output from the caches,
      // which the next block's conv1 reads next (the address is computed
      // as an integer: near the end it lies past the tensor, where a
      // prefetch may reach but a pointer may not point)
      _mm_prefetch(reinterpret_cast<const char*>(
                       reinterpret_cast<std::uintptr_t>(in + p) + 512),
                   _MM_HINT_NTA);
      // max(0, NaN) = NaN, max(0, -0) = -0, as relu_of
      const __m512 v = _mm512_max_ps(
          z, _mm512_add_ps(_mm512_maskz_loadu_ps(m, o + p),
                           _mm512_maskz_loadu_ps(m, in + p)));
      _mm512_mask_storeu_ps(o + p, m, v);
      const __m512 a = zero ? z : _mm512_maskz_loadu_ps(m, acc + p);
      _mm512_mask_storeu_ps(acc + p, m, _mm512_fmadd_ps(wk, v, a));
    }
  }
}
#endif

// The pass both kernels share: work items (sample, band of cell rows) over
// torch's threads; fill(acc, n, xs_off, len) writes into acc the logit
// of each of the band's len pixels of sample n, from the band's first
// pixel (pixel offset xs_off within the map) (nchw_fill: channel by
// channel); then acc is pooled into the band's cells, + bias.
// disjoint_rows: bands may not share an input row (a pass that writes its
// input in place); when the cells' rows overlap (gh does not divide H) a
// sample is then one band.
template <typename Fill>
void logit_pool_pass(int64_t N, int64_t H, int64_t W, int64_t gh,
                     int64_t gw, float bias, float* op, bool disjoint_rows,
                     Fill fill) {
  // bands of cell rows per sample: whole samples (x[n] read in address
  // order) when the batch alone gives every thread two, else as many as
  // that takes, at most one cell row each
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t bands = disjoint_rows && H % gh != 0 ? 1 : std::min<int64_t>(
      gh, std::max<int64_t>(1, (2 * threads + N - 1) / N));
  int64_t band_rows = 0;
  for (int64_t k = 0; k < bands; ++k) {
    const int64_t i0 = k * gh / bands, i1 = (k + 1) * gh / bands;
    band_rows = std::max(band_rows,
                         (i1 * H + gh - 1) / gh - (i0 * H) / gh);
  }
  at::parallel_for(0, N * bands, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> acc(band_rows * W);  // one buffer per thread's range
    for (int64_t item = t0; item < t1; ++item) {
      const int64_t n = item / bands, k = item - n * bands;
      const int64_t i0 = k * gh / bands, i1 = (k + 1) * gh / bands;
      // the band's input rows: its cells' rows (adjacent cells may share
      // a row when gh does not divide H)
      const int64_t r0 = (i0 * H) / gh, r1 = (i1 * H + gh - 1) / gh;
      const int64_t len = (r1 - r0) * W;
      float* a = acc.data();
      fill(a, n, r0 * W, len);
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t y0 = (i * H) / gh, y1 = ((i + 1) * H + gh - 1) / gh;
        for (int64_t j = 0; j < gw; ++j) {
          const int64_t c0 = (j * W) / gw, c1 = ((j + 1) * W + gw - 1) / gw;
          float s = 0.f;
          for (int64_t y = y0; y < y1; ++y)
            for (int64_t q = c0; q < c1; ++q) s += a[(y - r0) * W + q];
          op[(n * gh + i) * gw + j] =
              s / static_cast<float>((y1 - y0) * (c1 - c0)) + bias;
        }
      }
    }
  });
}

// The NCHW fill of logit_pool_pass: channels(acc, n, c, off, len, four,
// first) adds channels c (4, or 1 at the tail: `four`) of sample n into
// acc, channel groups in order.
template <typename Channels>
auto nchw_fill(int64_t C, Channels channels) {
  return [=](float* a, int64_t n, int64_t off, int64_t len) {
    int64_t c = 0;
    for (; c + 4 <= C; c += 4) channels(a, n, c, off, len, true, c == 0);
    for (; c < C; ++c) channels(a, n, c, off, len, false, c == 0);
  };
}

// The channels_last fills: a pixel's logit is the dot product of its row
// of C channels with w (x_row read in place), in 16-lane partial sums
// then one reduction with AVX-512, left to right otherwise. The add_relu
// variant first writes o = relu(o + i) over the row and takes the dot
// product of the values written, so its logits equal the plain pass over
// the new o bit for bit.
inline float row_dot_generic(const float* x, const float* w, int64_t C) {
  float s = 0.f;
  for (int64_t c = 0; c < C; ++c) s += w[c] * x[c];
  return s;
}

inline float add_relu_row_dot_generic(float* o, const float* i,
                                      const float* w, int64_t C) {
  for (int64_t c = 0; c < C; ++c) o[c] = relu_of(o[c] + i[c]);
  return row_dot_generic(o, w, C);
}

#ifdef LAUD_X86
LAUD_TARGET("avx512f")
float row_dot_avx512(const float* x, const float* w, int64_t C) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t c = 0; c < C; c += 16) {
    const __mmask16 m = C - c >= 16
        ? static_cast<__mmask16>(0xFFFF)
        : static_cast<__mmask16>((1u << (C - c)) - 1u);
    acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w + c),
                          _mm512_maskz_loadu_ps(m, x + c), acc);
  }
  return _mm512_reduce_add_ps(acc);
}

LAUD_TARGET("avx512f")
float add_relu_row_dot_avx512(float* o, const float* i, const float* w,
                              int64_t C) {
  const __m512 z = _mm512_setzero_ps();
  for (int64_t c = 0; c < C; c += 16) {
    const __mmask16 m = C - c >= 16
        ? static_cast<__mmask16>(0xFFFF)
        : static_cast<__mmask16>((1u << (C - c)) - 1u);
    // max(0, NaN) = NaN, as relu_of
    const __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, o + c),
                                   _mm512_maskz_loadu_ps(m, i + c));
    _mm512_mask_storeu_ps(o + c, m, _mm512_max_ps(z, v));
  }
  return row_dot_avx512(o, w, C);
}
#endif

// whether x is channels_last and not also NCHW-contiguous (one pixel or
// one channel: both, taken as NCHW)
inline bool nhwc_of(const at::Tensor& x) {
  return x.dim() == 4 && !x.is_contiguous() &&
         x.is_contiguous(at::MemoryFormat::ChannelsLast);
}

// the argument checks both kernels share
void check_logit_args(const char* op, const at::Tensor& x,
                      const at::Tensor& w, int64_t gh, int64_t gw) {
  const int64_t C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(w.scalar_type() == at::kFloat && w.is_contiguous() &&
                  w.device().is_cpu() && w.numel() == C,
              op, ": w must be a contiguous float32 CPU tensor of C = ", C,
              " weights");
  TORCH_CHECK(gh >= 1 && gw >= 1 && gh <= H && gw <= W, op, ": the grid (",
              gh, ", ", gw, ") must lie in [1, (H, W) = (", H, ", ", W,
              ")]");
  TORCH_CHECK(C >= 1, op, ": x has no channels");
}

}  // namespace

at::Tensor spatial_logit_pool_cpu(const at::Tensor& x, const at::Tensor& w,
                                  double b, int64_t gh, int64_t gw) {
  const bool nhwc = nhwc_of(x);
  TORCH_CHECK(x.scalar_type() == at::kFloat &&
                  (nhwc || x.is_contiguous()) && x.device().is_cpu() &&
                  x.dim() == 4,
              "spatial_logit_pool: x must be a contiguous or channels_last "
              "float32 CPU (N, C, H, W) tensor");
  check_logit_args("spatial_logit_pool", x, w, gh, gw);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  at::Tensor out = at::empty({N, gh, gw}, x.options());
  if (N == 0) return out;
  const int64_t HW = H * W;
  const float* xp = x.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  const bool avx512 = isa::cpu_avx512f();
  if (nhwc) {
    logit_pool_pass(
        N, H, W, gh, gw, static_cast<float>(b), out.data_ptr<float>(), false,
        [=](float* a, int64_t n, int64_t off, int64_t len) {
          const float* xs = xp + (n * HW + off) * C;
          for (int64_t p = 0; p < len; ++p) {
#ifdef LAUD_X86
            if (avx512) {
              a[p] = row_dot_avx512(xs + p * C, wp, C);
              continue;
            }
#endif
            a[p] = row_dot_generic(xs + p * C, wp, C);
          }
        });
    return out;
  }
  logit_pool_pass(
      N, H, W, gh, gw, static_cast<float>(b), out.data_ptr<float>(), false,
      nchw_fill(C, [=](float* a, int64_t n, int64_t c, int64_t off,
                       int64_t len, bool four, bool first) {
        const float* xs = xp + (n * C + c) * HW + off;
        if (!four) return accumulate1(a, xs, wp[c], len, first);
#ifdef LAUD_X86
        if (avx512) return accumulate4_avx512(a, xs, HW, wp + c, len, first);
#endif
        (void)avx512;
        accumulate4(a, xs, HW, wp + c, len, first);
      }));
  return out;
}

at::Tensor add_relu_logit_pool_cpu(at::Tensor& out, const at::Tensor& identity,
                                   const at::Tensor& w, double b, int64_t gh,
                                   int64_t gw) {
  const bool nhwc = nhwc_of(out);
  const auto fmt = nhwc ? at::MemoryFormat::ChannelsLast
                        : at::MemoryFormat::Contiguous;
  for (const at::Tensor* t :
       std::initializer_list<const at::Tensor*>{&out, &identity})
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous(fmt) &&
                    t->device().is_cpu() && t->dim() == 4,
                "add_relu_logit_pool: out and identity must be float32 CPU "
                "(N, C, H, W) tensors, both contiguous or both "
                "channels_last");
  TORCH_CHECK(out.sizes() == identity.sizes(), "add_relu_logit_pool: out ",
              out.sizes(), " and identity ", identity.sizes(),
              " differ in shape");
  TORCH_CHECK(!out.is_same(identity),
              "add_relu_logit_pool: out and identity must be different "
              "tensors");
  // threads write out in place while reading identity: no shared memory
  at::assert_no_partial_overlap(out, identity);
  check_logit_args("add_relu_logit_pool", out, w, gh, gw);
  const int64_t N = out.size(0), C = out.size(1), H = out.size(2),
                W = out.size(3);
  at::Tensor logit = at::empty({N, gh, gw}, out.options());
  if (N == 0) return logit;
  const int64_t HW = H * W;
  float* o = out.data_ptr<float>();
  const float* ip = identity.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  const bool avx512 = isa::cpu_avx512f();
  if (nhwc) {
    logit_pool_pass(
        N, H, W, gh, gw, static_cast<float>(b), logit.data_ptr<float>(), true,
        [=](float* a, int64_t n, int64_t off, int64_t len) {
          const int64_t at = (n * HW + off) * C;
          for (int64_t p = 0; p < len; ++p) {
#ifdef LAUD_X86
            if (avx512) {
              a[p] = add_relu_row_dot_avx512(o + at + p * C, ip + at + p * C,
                                             wp, C);
              continue;
            }
#endif
            a[p] = add_relu_row_dot_generic(o + at + p * C, ip + at + p * C,
                                            wp, C);
          }
        });
    return logit;
  }
  logit_pool_pass(
      N, H, W, gh, gw, static_cast<float>(b), logit.data_ptr<float>(), true,
      nchw_fill(C, [=](float* a, int64_t n, int64_t c, int64_t off,
                       int64_t len, bool four, bool first) {
        const int64_t at = (n * C + c) * HW + off;
        if (!four)
          return add_relu_accumulate1(a, o + at, ip + at, wp[c], len, first);
#ifdef LAUD_X86
        // a whole sample (one band) with planes of 4 to 256 cache lines:
        // address order
        if (avx512 && len == HW && HW >= 64 && HW <= 4096)
          return add_relu_accumulate4_inorder_avx512(a, o + at, ip + at, HW,
                                                     wp + c, len, first);
        if (avx512)
          return add_relu_accumulate4_avx512(a, o + at, ip + at, HW, wp + c,
                                             len, first);
#endif
        (void)avx512;
        add_relu_accumulate4(a, o + at, ip + at, HW, wp + c, len, first);
      }));
  return logit;
}

}  // namespace laud_mm
