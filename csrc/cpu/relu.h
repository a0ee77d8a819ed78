// Branch-free scalar ReLU shared by the CPU kernels.
//
// relu(NaN) = NaN and relu(-0) = -0 as in torch.relu. A conditional
// (v > 0 ? v : 0, or std::max(v, 0.f)) compiled to a compare and jump in
// these kernels, mispredicted half the time on activations: it makes the
// scatter (patches_cpu.cpp) about 5x slower and the fused channel kernel's
// conv3 epilogue (channel_conv_cpu.cpp) as slow as its three convolutions
// (measured with perf).
#pragma once
#include <cstdint>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace laud_mm {

#if defined(__SSE2__)
inline float relu_of(float v) {
  return _mm_cvtss_f32(_mm_max_ss(_mm_setzero_ps(), _mm_set_ss(v)));
}
inline double relu_of(double v) {
  return _mm_cvtsd_f64(_mm_max_sd(_mm_setzero_pd(), _mm_set_sd(v)));
}
#else
template <typename scalar_t>
inline scalar_t relu_of(scalar_t v) {
  return v < scalar_t(0) ? scalar_t(0) : v;
}
#endif

// o[q] = relu(a[q]) for q < n, 4 lanes at a time (o may alias a).
inline void relu_copy(float* o, const float* a, int64_t n) {
  int64_t q = 0;
#if defined(__SSE2__)
  const __m128 z = _mm_setzero_ps();
  for (; q + 4 <= n; q += 4)
    _mm_storeu_ps(o + q, _mm_max_ps(z, _mm_loadu_ps(a + q)));
#endif
  for (; q < n; ++q) o[q] = relu_of(a[q]);
}

}  // namespace laud_mm
