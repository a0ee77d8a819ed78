// Branch-free scalar ReLU shared by the CPU kernels.
//
// relu(NaN) = NaN and relu(-0) = -0 as in torch.relu. A conditional
// (v > 0 ? v : 0, or std::max(v, 0.f)) compiled to a compare and jump in
// these kernels, mispredicted half the time on activations: it makes the
// scatter (patches_cpu.cpp) about 5x slower and the fused channel kernel's
// conv3 epilogue (channel_conv_cpu.cpp) as slow as its three convolutions
// (measured with perf).
#pragma once
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

}  // namespace laud_mm
