// Plain-CUDA launchers of the LAUDNet patch kernels (raw pointers, no torch
// headers), compiled by nvcc; wrapped for torch by csrc/cuda_bindings.cpp.
// Source: LAUDNet paper sec. 3.4 and appendix (fused gather-conv, fused
// scatter-add); semantics as laud_mm/ops/patches.py.
#pragma once
#include <cstdint>
#include <cuda_runtime_api.h>

// scalar_t: float, double, __half, __nv_bfloat16 (instantiated in
// patches_cuda.cu); tensors NCHW-contiguous; launches on `stream`.

namespace laud_mm {
namespace cuda {

// out (P, channels, K, K) <- windows of feat (N, C_t, H, W) around the active
// patches idx (P, 3) = (sample, patch row, patch column); zero outside the
// image; K = (S - 1) * stride + 2 * dilation + 1; ReLU applied if relu.
template <typename scalar_t>
cudaError_t gather_patches(const scalar_t* feat, const int64_t* idx,
                           scalar_t* out, int64_t P, int64_t C_t, int64_t H,
                           int64_t W, int64_t channels, int64_t S,
                           int64_t stride, int64_t dilation, bool relu,
                           cudaStream_t stream);

// out (N, C, H, W) = relu(identity + scatter(patches)): pixel (y, x) of
// sample n reads patches[pmap[n, y / Sh, x / Sw], c, y % Sh, x % Sw], or 0
// where pmap is -1 (inactive patch). patches (P, C, Sh, Sw); pmap (N, gh, gw),
// gh = ceil(H / Sh), gw = ceil(W / Sw). out may alias identity.
template <typename scalar_t>
cudaError_t scatter_add_relu(scalar_t* out, const scalar_t* identity,
                             const scalar_t* patches, const int64_t* pmap,
                             int64_t N, int64_t C, int64_t H, int64_t W,
                             int64_t Sh, int64_t Sw, cudaStream_t stream);

// Active patches only: out (N, C, H, W) at the pixels of every patch row
// (n, gi, gj) of idx (P, 3), inside the map, becomes relu(out + patch);
// every other pixel is left as it is (the caller guarantees it is already
// its own ReLU: a non-negative identity written in place). patches
// (P, C, Sh, Sw); distinct idx rows (no two threads write one pixel).
template <typename scalar_t>
cudaError_t scatter_patches_add_relu(scalar_t* out, const scalar_t* patches,
                                     const int64_t* idx, int64_t P, int64_t C,
                                     int64_t H, int64_t W, int64_t Sh,
                                     int64_t Sw, cudaStream_t stream);

}  // namespace cuda
}  // namespace laud_mm
