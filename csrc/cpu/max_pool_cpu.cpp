// C++ CPU kernel of a 2-D max-pool at inference (the ResNet stem's
// 3 x 3 / 2 pool, padding 1), on contiguous NCHW float32.
//
// max_pool2d_cpu(x (N, C, H, W), kh, kw, sh, sw, ph, pw) -> (N, C, Ho, Wo),
//   Ho = (H + 2 ph - kh) / sh + 1 (floor), likewise Wo: each output the
//   max of its window's pixels inside the map (the padding excluded),
//   NaN when the window holds a NaN, as torch's F.max_pool2d (the same
//   values; of a tie between +0 and -0 either may be kept).
//   Raises (RuntimeError): x not a contiguous 4-D float32 CPU tensor, an
//   empty map, a kernel_size or stride below 1, a padding outside
//   [0, kernel_size / 2], a padded map smaller than the kernel.
//
// Why a kernel: torch's NCHW CPU max-pool also computes the argmax
// indices, and oneDNN's pool needs a reorder to its blocked layout and
// back; for the stem output of one 800 x 1216 image (1 x 64 x 400 x 608)
// they took 124.4 and 24.4 ms of CPU time against 4.0 ms here, for a
// batch of 8 at 224 px 50.8 and 6.1 ms against 2.3 ms
// (tools/analysis_tools/benchmark_kernels.py --only max_pool --threads 1,
// docs/benchmarks.md). The stem is shared by the static and the dynamic
// backbone, and is part of both latencies (paper sec. 4 measures the whole
// backbone).
//
// Each output row (n, c, oy): the max over the window's input rows into a
// row buffer with -inf borders (vectorised over the row), then over the
// window's columns. With AVX-512 and a column stride of 2 (the stem) 16
// outputs take, per window column, two loads of the buffer and one
// two-source permute that picks every second value; other strides run one
// output at a time. Rows split over torch's threads; a max is exact in
// any order, so the result does not depend on the thread count.
//
// Source: engineering of the paper's sec. 4 latency measurements (the stem
// is part of the measured backbone); Python API in laud_mm/ops/max_pool.py.
#include "isa.h"

#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace laud_mm {

namespace {

// max that returns NaN when either operand is NaN (torch's max-pool rule)
inline float nan_max(float a, float b) {
  return (std::isnan(a) || a > b) ? a : b;
}

#ifdef LAUD_X86
// max(a, b) with NaN from either operand kept (vmaxps alone returns b when
// a is NaN)
LAUD_TARGET("avx512f") inline __m512 nan_max16(__m512 a, __m512 b) {
  return _mm512_mask_mov_ps(_mm512_max_ps(a, b),
                            _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q), a);
}

// buf[i] = max(buf[i], row[i]) for i < w
LAUD_TARGET("avx512f") void row_max_avx512(float* buf, const float* row,
                                           int64_t w) {
  int64_t i = 0;
  for (; i + 16 <= w; i += 16)
    _mm512_storeu_ps(buf + i, nan_max16(_mm512_loadu_ps(buf + i),
                                        _mm512_loadu_ps(row + i)));
  if (i < w) {
    const __mmask16 m = static_cast<__mmask16>((1u << (w - i)) - 1);
    _mm512_mask_storeu_ps(
        buf + i, m,
        nan_max16(_mm512_maskz_loadu_ps(m, buf + i),
                  _mm512_maskz_loadu_ps(m, row + i)));
  }
}

// out[o] = max_{d < kw} pad[2 o + d] for o < wo: pad holds the row's
// vertical maxima with -inf borders, at least 2 (wo + 15) / 16 * 16 + kw
// floats.
LAUD_TARGET("avx512f") void cols_stride2_avx512(const float* pad, int64_t kw,
                                                int64_t wo, float* out) {
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14,
                                        12, 10, 8, 6, 4, 2, 0);
  for (int64_t o = 0; o < wo; o += 16) {
    const float* p = pad + 2 * o;
    __m512 acc = _mm512_permutex2var_ps(_mm512_loadu_ps(p), even,
                                        _mm512_loadu_ps(p + 16));
    for (int64_t d = 1; d < kw; ++d)
      acc = nan_max16(acc, _mm512_permutex2var_ps(_mm512_loadu_ps(p + d), even,
                                                  _mm512_loadu_ps(p + d + 16)));
    const int64_t n = std::min<int64_t>(16, wo - o);
    _mm512_mask_storeu_ps(out + o, static_cast<__mmask16>((1u << n) - 1), acc);
  }
}
#endif

}  // namespace

at::Tensor max_pool2d_cpu(const at::Tensor& x, int64_t kh, int64_t kw,
                          int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat &&
                  x.dim() == 4 && x.is_contiguous(),
              "max_pool2d: x must be a contiguous (N, C, H, W) float32 CPU "
              "tensor");
  TORCH_CHECK(kh > 0 && kw > 0 && sh > 0 && sw > 0,
              "max_pool2d: kernel_size and stride must be positive, got (",
              kh, ", ", kw, ") and (", sh, ", ", sw, ")");
  TORCH_CHECK(ph >= 0 && pw >= 0 && 2 * ph <= kh && 2 * pw <= kw,
              "max_pool2d: padding must be in [0, kernel_size / 2], got (",
              ph, ", ", pw, ")");
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  TORCH_CHECK(h > 0 && w > 0, "max_pool2d: the map must not be empty, got ",
              h, " x ", w);
  TORCH_CHECK(h + 2 * ph >= kh && w + 2 * pw >= kw,
              "max_pool2d: the padded input (", h + 2 * ph, " x ", w + 2 * pw,
              ") is smaller than the kernel (", kh, " x ", kw, ")");
  const int64_t ho = (h + 2 * ph - kh) / sh + 1;
  const int64_t wo = (w + 2 * pw - kw) / sw + 1;
  at::Tensor out = at::empty({n, c, ho, wo}, x.options());
  const float* xp = x.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const bool avx512 = isa::cpu_avx512f();
  const float ninf = -std::numeric_limits<float>::infinity();
  // the padded row: pw borders either side of the row; the stride-2 path
  // reads on to the last window column of its last 16-output block
  const int64_t padw = std::max<int64_t>(
      w + 2 * pw, sw == 2 ? 2 * ((wo + 15) / 16 * 16) + kw + 16 : 0);
  const int64_t rows = n * c * ho;
  // about 16k input values a task
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(kh * w, 1));
  at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
    thread_local std::vector<float> buf;  // only grows
    if (buf.size() < static_cast<size_t>(padw)) buf.resize(padw);
    std::fill(buf.begin(), buf.begin() + padw, ninf);
    float* v = buf.data() + pw;  // v[i]: column i's max over the window rows
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t plane = r / ho, oy = r - plane * ho;
      const float* src = xp + plane * h * w;
      const int64_t y0 = std::max<int64_t>(0, oy * sh - ph);
      const int64_t y1 = std::min<int64_t>(h, oy * sh - ph + kh);
      std::copy(src + y0 * w, src + y0 * w + w, v);
      for (int64_t y = y0 + 1; y < y1; ++y) {
        const float* row = src + y * w;
#ifdef LAUD_X86
        if (avx512) {
          row_max_avx512(v, row, w);
          continue;
        }
#endif
        for (int64_t i = 0; i < w; ++i) v[i] = nan_max(v[i], row[i]);
      }
      float* dst = op + r * wo;
#ifdef LAUD_X86
      if (avx512 && sw == 2) {
        cols_stride2_avx512(buf.data(), kw, wo, dst);
        continue;
      }
#endif
      for (int64_t o = 0; o < wo; ++o) {
        const float* p = buf.data() + o * sw;
        float m = p[0];
        for (int64_t d = 1; d < kw; ++d) m = nan_max(m, p[d]);
        dst[o] = m;
      }
    }
  });
  return out;
}

}  // namespace laud_mm
