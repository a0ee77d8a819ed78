// Element types of the CUDA kernels: float, double, __half, __nv_bfloat16.
// Arithmetic runs in the "op math" type (float for the 16-bit types, as
// torch's elementwise kernels do), so relu(a + b) rounds once, like
// torch.relu(a + b) in that dtype.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace laud_mm {
namespace cuda {

template <typename T>
struct OpMath {
  using type = T;
  __device__ __forceinline__ static type load(T v) { return v; }
  __device__ __forceinline__ static T store(type v) { return v; }
};

template <>
struct OpMath<__half> {
  using type = float;
  __device__ __forceinline__ static float load(__half v) {
    return __half2float(v);
  }
  __device__ __forceinline__ static __half store(float v) {
    return __float2half_rn(v);
  }
};

template <>
struct OpMath<__nv_bfloat16> {
  using type = float;
  __device__ __forceinline__ static float load(__nv_bfloat16 v) {
    return __bfloat162float(v);
  }
  __device__ __forceinline__ static __nv_bfloat16 store(float v) {
    return __float2bfloat16_rn(v);
  }
};

// max(0, v) that keeps NaN (as torch.relu)
template <typename A>
__device__ __forceinline__ A relu_keep_nan(A v) {
  return v < A(0) ? A(0) : v;
}

}  // namespace cuda
}  // namespace laud_mm
