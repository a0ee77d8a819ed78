// CUDA kernel of the channel-skipping weight gather; see
// channel_weights_cuda.h. One thread per output element (coalesced writes);
// float, double, __half, __nv_bfloat16; on the caller's stream.
// Source: LAUDNet paper sec. 3.2 (channel skipping), 3.4 (scheduling).
#include "cuda/channel_weights_cuda.h"
#include "cuda/scalar_traits.cuh"

namespace laud_mm {
namespace cuda {

namespace {

template <typename scalar_t>
__global__ void gather_kept_weights_kernel(const scalar_t* __restrict__ weight,
                                           const int64_t* __restrict__ chs,
                                           scalar_t* __restrict__ out,
                                           int64_t total, int64_t k,
                                           int64_t c_in, int64_t R) {
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total;
       e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = e % R;
    const int64_t t = e / R;  // (n * k + i) * k + j
    const int64_t j = t % k;
    const int64_t row = t / k;  // n * k + i
    const int64_t n = row / k;
    const int64_t ci = chs[row], cj = chs[n * k + j];
    out[e] = weight[(ci * c_in + cj) * R + r];
  }
}

}  // namespace

template <typename scalar_t>
cudaError_t gather_kept_weights(const scalar_t* weight, const int64_t* chs,
                                scalar_t* out, int64_t N, int64_t k,
                                int64_t c_in, int64_t R, cudaStream_t stream) {
  const int64_t total = N * k * k * R;
  if (total == 0) return cudaSuccess;
  const int threads = 256;
  int64_t blocks = (total + threads - 1) / threads;
  if (blocks > 65535 * 8) blocks = 65535 * 8;
  gather_kept_weights_kernel<scalar_t><<<(unsigned)blocks, threads, 0,
                                         stream>>>(weight, chs, out, total, k,
                                                   c_in, R);
  return cudaGetLastError();
}

#define LAUD_INSTANTIATE(T)                                                \
  template cudaError_t gather_kept_weights<T>(const T*, const int64_t*, T*, \
                                              int64_t, int64_t, int64_t,    \
                                              int64_t, cudaStream_t);
LAUD_INSTANTIATE(float)
LAUD_INSTANTIATE(double)
LAUD_INSTANTIATE(__half)
LAUD_INSTANTIATE(__nv_bfloat16)
#undef LAUD_INSTANTIATE

}  // namespace cuda
}  // namespace laud_mm
