// Python bindings of laud_mm._ext: dispatches each op to the C++ CPU kernel
// or, when built WITH_CUDA, to the CUDA kernel (csrc/cuda_bindings.cpp).
// Source: LAUDNet paper sec. 3.4 (operator fusion); Python API in
// laud_mm/ops/patches.py.
#include <torch/extension.h>

namespace laud_mm {
at::Tensor gather_patches_cpu(const at::Tensor& feat, const at::Tensor& idx,
                              int64_t S, int64_t stride, int64_t dilation,
                              int64_t channels, bool relu);
void scatter_add_relu_cpu(at::Tensor& out, const at::Tensor& identity,
                          const at::Tensor& patches, const at::Tensor& pmap,
                          int64_t Sh, int64_t Sw, bool identity_nonneg);
at::Tensor gather_kept_weights_cpu(const at::Tensor& weight,
                                   const at::Tensor& chs);
#ifdef WITH_CUDA
at::Tensor gather_kept_weights_cuda(const at::Tensor& weight,
                                    const at::Tensor& chs);
at::Tensor gather_patches_cuda(const at::Tensor& feat, const at::Tensor& idx,
                               int64_t S, int64_t stride, int64_t dilation,
                               int64_t channels, bool relu);
void scatter_add_relu_cuda(at::Tensor& out, const at::Tensor& identity,
                           const at::Tensor& patches, const at::Tensor& pmap,
                           int64_t Sh, int64_t Sw);
#endif

at::Tensor gather_patches(const at::Tensor& feat, const at::Tensor& idx,
                          int64_t S, int64_t stride, int64_t dilation,
                          int64_t channels, bool relu) {
  TORCH_CHECK(S >= 1 && stride >= 1 && dilation >= 1,
              "granularity, stride and dilation must be >= 1");
  TORCH_CHECK(feat.device() == idx.device(), "feat and idx on different devices");
  if (feat.is_cuda()) {
#ifdef WITH_CUDA
    return gather_patches_cuda(feat, idx, S, stride, dilation, channels, relu);
#else
    TORCH_CHECK(false, "laud_mm._ext was built without CUDA");
#endif
  }
  return gather_patches_cpu(feat, idx, S, stride, dilation, channels, relu);
}

// identity_nonneg: the caller guarantees identity >= 0 (a ReLU output), so
// with out aliasing identity the inactive pixels are already their own ReLU
// and the CPU kernel leaves them untouched; the CUDA kernel (one thread per
// output element) gains nothing from it and ignores it: same result.
void scatter_add_relu(at::Tensor out, const at::Tensor& identity,
                      const at::Tensor& patches, const at::Tensor& pmap,
                      int64_t Sh, int64_t Sw, bool identity_nonneg) {
  TORCH_CHECK(Sh >= 1 && Sw >= 1, "patch size must be >= 1");
  TORCH_CHECK(out.device() == identity.device() &&
                  out.device() == patches.device() &&
                  out.device() == pmap.device(),
              "out, identity, patches and pmap must share a device");
  TORCH_CHECK(out.scalar_type() == identity.scalar_type() &&
                  out.scalar_type() == patches.scalar_type(),
              "out, identity and patches must share a dtype");
  if (out.is_cuda()) {
#ifdef WITH_CUDA
    scatter_add_relu_cuda(out, identity, patches, pmap, Sh, Sw);
    return;
#else
    TORCH_CHECK(false, "laud_mm._ext was built without CUDA");
#endif
  }
  scatter_add_relu_cpu(out, identity, patches, pmap, Sh, Sw, identity_nonneg);
}

at::Tensor gather_kept_weights(const at::Tensor& weight, const at::Tensor& chs) {
  TORCH_CHECK(weight.device() == chs.device(),
              "weight and chs on different devices");
  if (weight.is_cuda()) {
#ifdef WITH_CUDA
    return gather_kept_weights_cuda(weight, chs);
#else
    TORCH_CHECK(false, "laud_mm._ext was built without CUDA");
#endif
  }
  return gather_kept_weights_cpu(weight, chs);
}

}  // namespace laud_mm

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "laud_mm dynamic-inference kernels (gather with halo, "
            "fused scatter-add + ReLU, kept-channel weight gather)";
  m.def("gather_patches", &laud_mm::gather_patches,
        "gather_patches(feat (N,C,H,W), idx (P,3) int64, S, stride, dilation, "
        "channels, relu) -> (P, channels, K, K), K = (S-1)*stride + 2*dilation + 1",
        py::arg("feat"), py::arg("idx"), py::arg("S"), py::arg("stride"),
        py::arg("dilation"), py::arg("channels"), py::arg("relu"));
  m.def("scatter_add_relu", &laud_mm::scatter_add_relu,
        "scatter_add_relu(out, identity, patches (P,C,Sh,Sw), pmap (N,gh,gw) "
        "int64 (-1 = inactive), Sh, Sw, identity_nonneg=False): out = "
        "relu(identity + scatter(patches)); out may alias identity; "
        "identity_nonneg (identity >= 0 guaranteed by the caller) lets an "
        "aliased call skip the inactive pixels",
        py::arg("out"), py::arg("identity"), py::arg("patches"),
        py::arg("pmap"), py::arg("Sh"), py::arg("Sw"),
        py::arg("identity_nonneg") = false);
  m.def("gather_kept_weights", &laud_mm::gather_kept_weights,
        "gather_kept_weights(weight (C_out, C_in, kh, kw), chs (N, k) int64) "
        "-> (N, k, k, kh, kw): weight[chs[n, i], chs[n, j]]",
        py::arg("weight"), py::arg("chs"));
#ifdef WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
