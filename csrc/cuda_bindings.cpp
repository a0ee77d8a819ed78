// Thin torch wrapper of the plain-CUDA kernels in csrc/cuda/ (compiled only
// when CUDA torch is present or FORCE_CUDA=1; defines WITH_CUDA).
// Source: LAUDNet paper sec. 3.4 (operator fusion).
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include "cuda/channel_weights_cuda.h"
#include "cuda/patches_cuda.h"

namespace laud_mm {

at::Tensor gather_patches_cuda(const at::Tensor& feat, const at::Tensor& idx,
                               int64_t S, int64_t stride, int64_t dilation,
                               int64_t channels, bool relu) {
  TORCH_CHECK(feat.is_cuda() && idx.is_cuda(), "tensors must be on CUDA");
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
  AT_DISPATCH_FLOATING_TYPES(feat.scalar_type(), "gather_patches_cuda", [&] {
    auto err = cuda::gather_patches<scalar_t>(
        feat.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(),
        out.data_ptr<scalar_t>(), P, feat.size(1), feat.size(2), feat.size(3),
        channels, S, stride, dilation, relu, stream);
    TORCH_CHECK(err == cudaSuccess, "gather_patches_cuda: ",
                cudaGetErrorString(err));
  });
  return out;
}

void scatter_add_relu_cuda(at::Tensor& out, const at::Tensor& identity,
                           const at::Tensor& patches, const at::Tensor& pmap,
                           int64_t Sh, int64_t Sw) {
  TORCH_CHECK(out.is_cuda(), "tensors must be on CUDA");
  TORCH_CHECK(out.dim() == 4 && out.is_contiguous() &&
                  identity.is_contiguous() && patches.is_contiguous() &&
                  pmap.is_contiguous(),
              "out, identity, patches and pmap must be contiguous");
  TORCH_CHECK(out.sizes() == identity.sizes(), "out / identity shape mismatch");
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
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "scatter_add_relu_cuda", [&] {
    auto err = cuda::scatter_add_relu<scalar_t>(
        out.data_ptr<scalar_t>(), identity.data_ptr<scalar_t>(),
        patches.data_ptr<scalar_t>(), pmap.data_ptr<int64_t>(), N, C, H, W,
        Sh, Sw, stream);
    TORCH_CHECK(err == cudaSuccess, "scatter_add_relu_cuda: ",
                cudaGetErrorString(err));
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
  AT_DISPATCH_FLOATING_TYPES(weight.scalar_type(), "gather_kept_weights_cuda",
                             [&] {
    auto err = cuda::gather_kept_weights<scalar_t>(
        weight.data_ptr<scalar_t>(), chs.data_ptr<int64_t>(),
        out.data_ptr<scalar_t>(), N, k, weight.size(1),
        weight.size(2) * weight.size(3), stream);
    TORCH_CHECK(err == cudaSuccess, "gather_kept_weights_cuda: ",
                cudaGetErrorString(err));
  });
  return out;
}

}  // namespace laud_mm
