// C++ CPU kernel of a dense residual block's epilogue that also pools its
// output for the next block's masker.
//
// add_relu_mean_cpu(out (N, C, H, W), identity (N, C, H, W)) -> (N, C):
//   out = relu(out + identity)              (in place)
//   returns mean over H x W of the new out  (per sample and channel)
//
// Why a kernel: torch runs the epilogue as two passes over the output
// (add_, relu_), and a layer / channel masker of the next block reads the
// whole output once more for its global average pool (paper sec. 3.2: the
// masker's input is the pooled block input). Here one pass reads out and
// identity, writes out and keeps the channel sums in registers. Rows (n, c)
// of H x W contiguous pixels split over torch's threads; each row's sum runs
// in one thread in a fixed order, so the result does not depend on the
// thread count.
//
// Source: LAUDNet paper sec. 3.2 (channel / layer maskers: global average
// pool, then the gate), sec. 3.4 (operator fusion: "Fusing scatter and
// add"); Python API in laud_mm/ops/epilogue.py.
#include "isa.h"
#include "relu.h"

#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <limits>

namespace laud_mm {

namespace {

// o[q] = relu(o[q] + a[q]) for q < n; returns the sum of the new o.
float add_relu_sum_generic(float* o, const float* a, int64_t n) {
  float s = 0.f;
  for (int64_t q = 0; q < n; ++q) {
    const float v = relu_of(o[q] + a[q]);
    o[q] = v;
    s += v;
  }
  return s;
}

#ifdef LAUD_X86
LAUD_TARGET("avx512f")
float add_relu_sum_avx512(float* o, const float* a, int64_t n) {
  const __m512 z = _mm512_setzero_ps();
  __m512 acc = _mm512_setzero_ps();
  for (int64_t q = 0; q < n; q += 16) {
    const __mmask16 m = n - q >= 16
        ? static_cast<__mmask16>(0xFFFF)
        : static_cast<__mmask16>((1u << (n - q)) - 1u);
    const __m512 v = _mm512_max_ps(
        z, _mm512_add_ps(_mm512_maskz_loadu_ps(m, o + q),
                         _mm512_maskz_loadu_ps(m, a + q)));
    _mm512_mask_storeu_ps(o + q, m, v);
    acc = _mm512_add_ps(acc, v);  // masked-off lanes add relu(0 + 0) = 0
  }
  return _mm512_reduce_add_ps(acc);
}
#endif

}  // namespace

at::Tensor add_relu_mean_cpu(at::Tensor& out, const at::Tensor& identity) {
  for (const at::Tensor* t :
       std::initializer_list<const at::Tensor*>{&out, &identity})
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous() &&
                    t->device().is_cpu() && t->dim() == 4,
                "add_relu_mean: out and identity must be contiguous float32 "
                "CPU (N, C, H, W) tensors");
  TORCH_CHECK(out.sizes() == identity.sizes(),
              "add_relu_mean: out ", out.sizes(), " and identity ",
              identity.sizes(), " differ in shape");
  TORCH_CHECK(!out.is_same(identity),
              "add_relu_mean: out and identity must be different tensors");
  const int64_t N = out.size(0), C = out.size(1);
  const int64_t HW = out.size(2) * out.size(3);
  at::Tensor mean = at::empty({N, C}, out.options());
  if (N * C == 0) return mean;
  float* op = out.data_ptr<float>();
  const float* ip = identity.data_ptr<float>();
  float* mp = mean.data_ptr<float>();
  const bool avx512 = isa::cpu_avx512f();
  // rows of at least ~16k pixels per task: fewer, larger tasks on small maps
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(HW, 1));
  at::parallel_for(0, N * C, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* o = op + r * HW;
      const float* a = ip + r * HW;
#ifdef LAUD_X86
      const float s = avx512 ? add_relu_sum_avx512(o, a, HW)
                             : add_relu_sum_generic(o, a, HW);
#else
      const float s = add_relu_sum_generic(o, a, HW);
#endif
      mp[r] = HW > 0 ? s / static_cast<float>(HW)
                     : std::numeric_limits<float>::quiet_NaN();
    }
  });
  return mean;
}

}  // namespace laud_mm
