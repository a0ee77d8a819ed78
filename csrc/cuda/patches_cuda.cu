// Plain-CUDA kernels of the LAUDNet patch ops (see patches_cuda.h).
// One thread per output element; grid-stride loops; 64-bit indexing; the
// innermost index is the fastest-varying memory index (coalesced writes).
// float, double, __half and __nv_bfloat16 (op math in float for the 16-bit
// types: scalar_traits.cuh). Every launch is on the caller's stream; no
// kernel synchronises with the host.
// Source: LAUDNet paper sec. 3.4 and appendix (fused gather, fused
// scatter-add).
#include "patches_cuda.h"
#include "scalar_traits.cuh"

namespace laud_mm {
namespace cuda {
namespace {

constexpr int kThreads = 256;

inline int blocks_for(int64_t n) {
  int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<int>(b < 65535 * 8 ? (b < 1 ? 1 : b) : 65535 * 8);
}

template <typename scalar_t>
__global__ void gather_kernel(const scalar_t* __restrict__ feat,
                              const int64_t* __restrict__ idx,
                              scalar_t* __restrict__ out, int64_t P,
                              int64_t C_t, int64_t H, int64_t W,
                              int64_t channels, int64_t S, int64_t stride,
                              int64_t dilation, bool relu) {
  using M = OpMath<scalar_t>;
  const int64_t K = (S - 1) * stride + 2 * dilation + 1;
  const int64_t total = P * channels * K * K;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)blockDim.x * gridDim.x) {
    const int64_t wx = i % K;
    const int64_t wy = (i / K) % K;
    const int64_t c = (i / (K * K)) % channels;
    const int64_t p = i / (K * K * channels);
    const int64_t n = idx[3 * p], gi = idx[3 * p + 1], gj = idx[3 * p + 2];
    const int64_t iy = gi * S * stride - dilation + wy;
    const int64_t ix = gj * S * stride - dilation + wx;
    scalar_t v = M::store(typename M::type(0));
    if (iy >= 0 && iy < H && ix >= 0 && ix < W) {
      v = feat[((n * C_t + c) * H + iy) * W + ix];
      if (relu) v = M::store(relu_keep_nan(M::load(v)));
    }
    out[i] = v;
  }
}

template <typename scalar_t>
__global__ void scatter_kernel(scalar_t* out, const scalar_t* identity,
                               const scalar_t* __restrict__ patches,
                               const int64_t* __restrict__ pmap, int64_t N,
                               int64_t C, int64_t H, int64_t W, int64_t Sh,
                               int64_t Sw) {
  using M = OpMath<scalar_t>;
  const int64_t gh = (H + Sh - 1) / Sh, gw = (W + Sw - 1) / Sw;
  const int64_t total = N * C * H * W;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)blockDim.x * gridDim.x) {
    const int64_t x = i % W;
    const int64_t y = (i / W) % H;
    const int64_t c = (i / (H * W)) % C;
    const int64_t n = i / (H * W * C);
    const int64_t p = pmap[(n * gh + y / Sh) * gw + x / Sw];
    auto v = M::load(identity[i]);
    if (p >= 0)
      v = M::load(M::store(
          v + M::load(patches[((p * C + c) * Sh + y % Sh) * Sw + x % Sw])));
    out[i] = M::store(relu_keep_nan(v));
  }
}

// Active patches only: out[n, c, gi*Sh + y, gj*Sw + x] = relu(out + patch)
// for every row (n, gi, gj) of idx and pixel inside the map; the rest of
// out is not touched (the caller's out is already its own ReLU there).
template <typename scalar_t>
__global__ void scatter_patches_kernel(scalar_t* __restrict__ out,
                                       const scalar_t* __restrict__ patches,
                                       const int64_t* __restrict__ idx,
                                       int64_t P, int64_t C, int64_t H,
                                       int64_t W, int64_t Sh, int64_t Sw) {
  using M = OpMath<scalar_t>;
  const int64_t total = P * C * Sh * Sw;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)blockDim.x * gridDim.x) {
    const int64_t x = i % Sw;
    const int64_t y = (i / Sw) % Sh;
    const int64_t c = (i / (Sh * Sw)) % C;
    const int64_t p = i / (Sh * Sw * C);
    const int64_t n = idx[3 * p];
    const int64_t oy = idx[3 * p + 1] * Sh + y, ox = idx[3 * p + 2] * Sw + x;
    if (oy >= H || ox >= W) continue;
    scalar_t* o = out + ((n * C + c) * H + oy) * W + ox;
    const auto v = M::load(M::store(M::load(*o) + M::load(patches[i])));
    *o = M::store(relu_keep_nan(v));
  }
}

}  // namespace

template <typename scalar_t>
cudaError_t gather_patches(const scalar_t* feat, const int64_t* idx,
                           scalar_t* out, int64_t P, int64_t C_t, int64_t H,
                           int64_t W, int64_t channels, int64_t S,
                           int64_t stride, int64_t dilation, bool relu,
                           cudaStream_t stream) {
  const int64_t K = (S - 1) * stride + 2 * dilation + 1;
  const int64_t total = P * channels * K * K;
  if (total == 0) return cudaSuccess;
  gather_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
      feat, idx, out, P, C_t, H, W, channels, S, stride, dilation, relu);
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t scatter_add_relu(scalar_t* out, const scalar_t* identity,
                             const scalar_t* patches, const int64_t* pmap,
                             int64_t N, int64_t C, int64_t H, int64_t W,
                             int64_t Sh, int64_t Sw, cudaStream_t stream) {
  const int64_t total = N * C * H * W;
  if (total == 0) return cudaSuccess;
  scatter_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
      out, identity, patches, pmap, N, C, H, W, Sh, Sw);
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t scatter_patches_add_relu(scalar_t* out, const scalar_t* patches,
                                     const int64_t* idx, int64_t P, int64_t C,
                                     int64_t H, int64_t W, int64_t Sh,
                                     int64_t Sw, cudaStream_t stream) {
  const int64_t total = P * C * Sh * Sw;
  if (total == 0) return cudaSuccess;
  scatter_patches_kernel<scalar_t><<<blocks_for(total), kThreads, 0,
                                     stream>>>(out, patches, idx, P, C, H, W,
                                               Sh, Sw);
  return cudaGetLastError();
}

#define LAUD_INSTANTIATE(T)                                                   \
  template cudaError_t gather_patches<T>(                                     \
      const T*, const int64_t*, T*, int64_t, int64_t, int64_t, int64_t,       \
      int64_t, int64_t, int64_t, int64_t, bool, cudaStream_t);                \
  template cudaError_t scatter_add_relu<T>(                                   \
      T*, const T*, const T*, const int64_t*, int64_t, int64_t, int64_t,      \
      int64_t, int64_t, int64_t, cudaStream_t);                               \
  template cudaError_t scatter_patches_add_relu<T>(                           \
      T*, const T*, const int64_t*, int64_t, int64_t, int64_t, int64_t,       \
      int64_t, int64_t, cudaStream_t);

LAUD_INSTANTIATE(float)
LAUD_INSTANTIATE(double)
LAUD_INSTANTIATE(__half)
LAUD_INSTANTIATE(__nv_bfloat16)
#undef LAUD_INSTANTIATE

}  // namespace cuda
}  // namespace laud_mm
