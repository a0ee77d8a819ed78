// Thin torch wrapper of the plain-CUDA kernels in csrc/cuda/ (compiled only
// when CUDA torch is present or FORCE_CUDA=1; defines WITH_CUDA), and their
// registration as the CUDA kernels of the laud_mm::* operators (schemas in
// csrc/bindings.cpp): torch.ops.laud_mm.<op> on CUDA tensors runs them, and
// tools/check_cuda_build.sh checks that each is registered.
//
// dtypes: float32, float64, float16, bfloat16 (op math in float for the
// 16-bit types). Every kernel runs on the current CUDA stream of the
// tensors' device (c10::cuda::getCurrentCUDAStream) and none waits for the
// device: argument checks read tensor metadata only.
// Source: LAUDNet paper sec. 3.4 (operator fusion).
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <torch/extension.h>
#include <torch/library.h>

#include "cuda/channel_weights_cuda.h"
#include "cuda/patches_cuda.h"

namespace laud_mm {

namespace {

// at:: element type -> the CUDA type the kernels are instantiated for
template <typename T>
struct DevType {
  using type = T;
};
template <>
struct DevType<at::Half> {
  using type = __half;
};
template <>
struct DevType<at::BFloat16> {
  using type = __nv_bfloat16;
};

template <typename T>
typename DevType<T>::type* dptr(const at::Tensor& t) {
  return reinterpret_cast<typename DevType<T>::type*>(t.data_ptr<T>());
}

#define LAUD_DISPATCH(TYPE, NAME, ...)                            \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, \
                                  NAME, __VA_ARGS__)

void check_err(cudaError_t err, const char* name) {
  TORCH_CHECK(err == cudaSuccess, name, ": ", cudaGetErrorString(err));
}

}  // namespace

at::Tensor gather_patches_cuda(const at::Tensor& feat, const at::Tensor& idx,
                               int64_t S, int64_t stride, int64_t dilation,
                               int64_t channels, bool relu) {
  TORCH_CHECK(feat.is_cuda() && idx.is_cuda(), "tensors must be on CUDA");
  TORCH_CHECK(feat.device() == idx.device(), "feat and idx on different devices");
  TORCH_CHECK(S >= 1 && stride >= 1 && dilation >= 1,
              "granularity, stride and dilation must be >= 1");
  TORCH_CHECK(feat.dim() == 4 && feat.is_contiguous(),
              "feat must be a contiguous (N, C, H, W) tensor");
  TORCH_CHECK(idx.dim() == 2 && idx.size(1) == 3 &&
                  idx.scalar_type() == at::kLong && idx.is_contiguous(),
              "idx must be a contiguous int64 (P, 3) tensor");
  TORCH_CHECK(channels >= 0 && channels <= feat.size(1), "channels out of range");
  c10::cuda::CUDAGuard guard(feat.device());
  const int64_t K = (S - 1) * stride + 2 * dilation + 1;
  const int64_t P = idx.size(0);
  auto out = at::empty({P, channels, K, K}, feat.options());
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  LAUD_DISPATCH(feat.scalar_type(), "gather_patches_cuda", [&] {
    check_err(cuda::gather_patches(
                  dptr<scalar_t>(feat), idx.data_ptr<int64_t>(),
                  dptr<scalar_t>(out), P, feat.size(1), feat.size(2),
                  feat.size(3), channels, S, stride, dilation, relu, stream),
              "gather_patches_cuda");
  });
  return out;
}

void scatter_add_relu_cuda(const at::Tensor& out, const at::Tensor& identity,
                           const at::Tensor& patches, const at::Tensor& pmap,
                           int64_t Sh, int64_t Sw) {
  TORCH_CHECK(out.is_cuda() && identity.is_cuda() && patches.is_cuda() &&
                  pmap.is_cuda(),
              "tensors must be on CUDA");
  TORCH_CHECK(Sh >= 1 && Sw >= 1, "patch size must be >= 1");
  TORCH_CHECK(out.dim() == 4 && out.is_contiguous() &&
                  identity.is_contiguous() && patches.is_contiguous() &&
                  pmap.is_contiguous(),
              "out, identity, patches and pmap must be contiguous");
  TORCH_CHECK(out.sizes() == identity.sizes(), "out / identity shape mismatch");
  TORCH_CHECK(out.scalar_type() == identity.scalar_type() &&
                  out.scalar_type() == patches.scalar_type(),
              "out, identity and patches must share a dtype");
  const int64_t N = out.size(0), C = out.size(1), H = out.size(2),
                W = out.size(3);
  TORCH_CHECK(pmap.dim() == 3 && pmap.size(0) == N &&
                  pmap.size(1) == (H + Sh - 1) / Sh &&
                  pmap.size(2) == (W + Sw - 1) / Sw &&
                  pmap.scalar_type() == at::kLong,
              "pmap must be an int64 (N, gh, gw) tensor");
  TORCH_CHECK(patches.dim() == 4 && patches.size(1) == C &&
                  patches.size(2) == Sh && patches.size(3) == Sw,
              "patches must be (P, C, Sh, Sw)");
  c10::cuda::CUDAGuard guard(out.device());
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  LAUD_DISPATCH(out.scalar_type(), "scatter_add_relu_cuda", [&] {
    check_err(cuda::scatter_add_relu(
                  dptr<scalar_t>(out), dptr<scalar_t>(identity),
                  dptr<scalar_t>(patches), pmap.data_ptr<int64_t>(), N, C, H,
                  W, Sh, Sw, stream),
              "scatter_add_relu_cuda");
  });
}

void scatter_patches_add_relu_cuda(const at::Tensor& out,
                                   const at::Tensor& patches,
                                   const at::Tensor& idx, int64_t Sh,
                                   int64_t Sw) {
  TORCH_CHECK(out.is_cuda() && patches.is_cuda() && idx.is_cuda(),
              "tensors must be on CUDA");
  TORCH_CHECK(Sh >= 1 && Sw >= 1, "patch size must be >= 1");
  TORCH_CHECK(out.dim() == 4 && out.is_contiguous() &&
                  patches.is_contiguous(),
              "out and patches must be contiguous");
  TORCH_CHECK(out.scalar_type() == patches.scalar_type(),
              "out and patches must share a dtype");
  TORCH_CHECK(idx.dim() == 2 && idx.size(1) == 3 &&
                  idx.scalar_type() == at::kLong && idx.is_contiguous(),
              "idx must be a contiguous int64 (P, 3) tensor");
  TORCH_CHECK(patches.dim() == 4 && patches.size(0) == idx.size(0) &&
                  patches.size(1) == out.size(1) && patches.size(2) == Sh &&
                  patches.size(3) == Sw,
              "patches must be (P, C, Sh, Sw) with P = idx.size(0)");
  c10::cuda::CUDAGuard guard(out.device());
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  LAUD_DISPATCH(out.scalar_type(), "scatter_patches_add_relu_cuda", [&] {
    check_err(cuda::scatter_patches_add_relu(
                  dptr<scalar_t>(out), dptr<scalar_t>(patches),
                  idx.data_ptr<int64_t>(), idx.size(0), out.size(1),
                  out.size(2), out.size(3), Sh, Sw, stream),
              "scatter_patches_add_relu_cuda");
  });
}

at::Tensor gather_kept_weights_cuda(const at::Tensor& weight,
                                    const at::Tensor& chs) {
  TORCH_CHECK(weight.is_cuda() && chs.is_cuda(), "tensors must be on CUDA");
  TORCH_CHECK(weight.dim() == 4 && weight.is_contiguous(),
              "weight must be a contiguous (C_out, C_in, kh, kw) tensor");
  TORCH_CHECK(chs.dim() == 2 && chs.scalar_type() == at::kLong &&
                  chs.is_contiguous(),
              "chs must be a contiguous int64 (N, k) tensor");
  c10::cuda::CUDAGuard guard(weight.device());
  const int64_t N = chs.size(0), k = chs.size(1);
  auto out = at::empty({N, k, k, weight.size(2), weight.size(3)},
                       weight.options());
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  LAUD_DISPATCH(weight.scalar_type(), "gather_kept_weights_cuda", [&] {
    check_err(cuda::gather_kept_weights(
                  dptr<scalar_t>(weight), chs.data_ptr<int64_t>(),
                  dptr<scalar_t>(out), N, k, weight.size(1),
                  weight.size(2) * weight.size(3), stream),
              "gather_kept_weights_cuda");
  });
  return out;
}

namespace {
// identity_nonneg is a CPU-kernel hint: the full-map CUDA kernel gives the
// same result without it (the dynamic paths call scatter_patches_add_relu
// for the in-place, active-patches-only update)
void scatter_add_relu_cuda_op(const at::Tensor& out, const at::Tensor& identity,
                              const at::Tensor& patches, const at::Tensor& pmap,
                              int64_t Sh, int64_t Sw, bool identity_nonneg) {
  (void)identity_nonneg;
  scatter_add_relu_cuda(out, identity, patches, pmap, Sh, Sw);
}
}  // namespace

}  // namespace laud_mm

TORCH_LIBRARY_IMPL(laud_mm, CUDA, m) {
  m.impl("gather_patches", &laud_mm::gather_patches_cuda);
  m.impl("scatter_add_relu", &laud_mm::scatter_add_relu_cuda_op);
  m.impl("scatter_patches_add_relu", &laud_mm::scatter_patches_add_relu_cuda);
  m.impl("gather_kept_weights", &laud_mm::gather_kept_weights_cuda);
}
