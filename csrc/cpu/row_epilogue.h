// One pass over a row of output values that applies a block's epilogue and
// sums what it writes: the channel sums a dynamic block hands to the next
// block's layer / channel masker (its global average pool, paper sec. 3.2)
// without a second read of the output. Shared by the dense epilogue
// (epilogue_cpu.cpp) and the per-sample GEMMs of layer skipping
// (sample_gemm_cpu.cpp).
//
// epilogue_sum(o, a, n, bias, relu, avx512, last_read_a = false):
//   o[q] = epi(o[q] + a[q] + bias) for q < n (a may be null: no addend;
//   bias 0: not added; epi = ReLU when relu, else identity), returns the
//   sum of the new o[0..n). last_read_a: a is read for the last time (a
//   residual block's shortcut): it is fetched non-temporally with AVX-512,
//   so that it does not displace o from the caches.
// The sum's order is fixed by n and the path (16 lanes, then one
// reduction, with AVX-512; left to right otherwise): the same row gives
// the same sum in every thread.
//
// Kernels that split an output over threads keep one row of partial sums
// per thread (zeroed_partials, or zeroed by each thread itself: the fused
// spatial kernel) and add them up in thread order afterwards
// (add_partials): the sums depend on the thread count only through that
// fixed order.
//
// Source: LAUDNet paper sec. 3.2 (maskers pool their input), sec. 3.4
// (operator fusion).
#pragma once
#include "isa.h"
#include "relu.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace laud_mm {
namespace row_epilogue {

inline float epilogue_sum_generic(float* o, const float* a, int64_t n,
                                  float bias, bool relu) {
  float s = 0.f;
  for (int64_t q = 0; q < n; ++q) {
    float v = a ? o[q] + a[q] : o[q];
    if (bias != 0.f) v += bias;
    if (relu) v = relu_of(v);
    o[q] = v;
    s += v;
  }
  return s;
}

#ifdef LAUD_X86
LAUD_TARGET("avx512f")
inline float epilogue_sum_avx512(float* o, const float* a, int64_t n,
                                 float bias, bool relu,
                                 bool last_read_a = false) {
  const __m512 z = _mm512_setzero_ps();
  const __m512 b = _mm512_set1_ps(bias);
  const bool with_bias = bias != 0.f;
  __m512 acc = _mm512_setzero_ps();
  for (int64_t q = 0; q < n; q += 16) {
    const __mmask16 m = n - q >= 16
        ? static_cast<__mmask16>(0xFFFF)
        : static_cast<__mmask16>((1u << (n - q)) - 1u);
    __m512 v = _mm512_maskz_loadu_ps(m, o + q);
    // an addend read for the last time (8 lines ahead, non-temporally)
    // does not displace the output, which the next block reads
    if (a && last_read_a)
      _mm_prefetch(reinterpret_cast<const char*>(
                       reinterpret_cast<std::uintptr_t>(a + q) + 512),
                   _MM_HINT_NTA);
    if (a) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, a + q));
    if (with_bias) v = _mm512_maskz_add_ps(m, v, b);
    if (relu) v = _mm512_max_ps(z, v);  // max(0, NaN) = NaN, max(0, -0) = -0
    _mm512_mask_storeu_ps(o + q, m, v);
    acc = _mm512_add_ps(acc, v);  // masked-off lanes hold 0
  }
  return _mm512_reduce_add_ps(acc);
}
#endif

inline float epilogue_sum(float* o, const float* a, int64_t n, float bias,
                          bool relu, bool avx512, bool last_read_a = false) {
#ifdef LAUD_X86
  if (avx512) return epilogue_sum_avx512(o, a, n, bias, relu, last_read_a);
#endif
  (void)avx512;
  return epilogue_sum_generic(o, a, n, bias, relu);
}

// `count` zeroed floats in buf (parts x the per-thread row: thread t's
// partials at t x that row; buf is thread-local scratch that only grows,
// so a warm call allocates nothing).
inline float* zeroed_partials(std::vector<float>& buf, int64_t count) {
  const size_t n = static_cast<size_t>(std::max<int64_t>(count, 1));
  if (buf.size() < n) buf.resize(n);
  std::fill(buf.begin(), buf.begin() + n, 0.f);
  return buf.data();
}

// out[i] = part[0 * count + i] + part[1 * count + i] + ... (thread order)
// for i < count, the partials of zeroed_partials for `parts` threads.
// Serial below kParallelAdds adds (a parallel region costs more there);
// above it (many threads, large batches) split over the threads by i,
// each element's sum in the same order.
constexpr int64_t kParallelAdds = int64_t(1) << 20;
inline void add_partials(const float* part, int64_t parts, int64_t count,
                         float* out) {
  auto add = [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      float v = 0.f;
      for (int64_t t = 0; t < parts; ++t) v += part[t * count + i];
      out[i] = v;
    }
  };
  if (parts * count < kParallelAdds)
    add(0, count);
  else
    at::parallel_for(0, count, std::max<int64_t>(1, kParallelAdds / parts / 4),
                     add);
}

}  // namespace row_epilogue
}  // namespace laud_mm
