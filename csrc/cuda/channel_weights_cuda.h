// Plain-CUDA launcher of the channel-skipping weight gather (raw pointers, no
// torch headers), compiled by nvcc; wrapped for torch by
// csrc/cuda_bindings.cpp. Semantics as laud_mm/ops/channel_weights.py.
// Source: LAUDNet paper sec. 3.2 (channel skipping), 3.4 (scheduling).
#pragma once
#include <cstdint>
#include <cuda_runtime_api.h>

namespace laud_mm {
namespace cuda {

// out (N, k, k, R) <- weight (C_out, C_in, R) at [chs[n, i], chs[n, j]]:
// per-sample weights of the kept -> kept channels (R = kh * kw). scalar_t:
// float, double, __half, __nv_bfloat16; launched on `stream`.
template <typename scalar_t>
cudaError_t gather_kept_weights(const scalar_t* weight, const int64_t* chs,
                                scalar_t* out, int64_t N, int64_t k,
                                int64_t c_in, int64_t R, cudaStream_t stream);

}  // namespace cuda
}  // namespace laud_mm
