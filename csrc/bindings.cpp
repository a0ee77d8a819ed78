// Python bindings of laud_mm._ext: dispatches each op to the C++ CPU kernel
// or, when built WITH_CUDA, to the CUDA kernel (csrc/cuda_bindings.cpp).
// Source: LAUDNet paper sec. 3.4 (operator fusion); Python API in
// laud_mm/ops/patches.py.
#include <torch/extension.h>
#include <torch/library.h>

namespace laud_mm {
at::Tensor gather_patches_cpu(const at::Tensor& feat, const at::Tensor& idx,
                              int64_t S, int64_t stride, int64_t dilation,
                              int64_t channels, bool relu);
void scatter_add_relu_cpu(at::Tensor& out, const at::Tensor& identity,
                          const at::Tensor& patches, const at::Tensor& pmap,
                          int64_t Sh, int64_t Sw, bool identity_nonneg);
at::Tensor gather_kept_weights_cpu(const at::Tensor& weight,
                                   const at::Tensor& chs);
void channel_branch_add_relu_cpu(at::Tensor& out, const at::Tensor& x,
                                 const at::Tensor& chs,
                                 const at::Tensor& counts,
                                 const at::Tensor& w1t, const at::Tensor& b1,
                                 const at::Tensor& w2t, const at::Tensor& b2,
                                 const at::Tensor& w3p, const at::Tensor& b3,
                                 int64_t stride, int64_t padding,
                                 int64_t dilation, bool force_generic,
                                 const at::Tensor& sums, bool force_unblocked);
std::string channel_branch_isa();
std::tuple<at::Tensor, at::Tensor, int64_t> channel_kept_lists_cpu(
    const at::Tensor& gate, int64_t granularity, int64_t pad);
std::vector<int64_t> channel_blocked_max_pixels();
std::tuple<at::Tensor, at::Tensor> masker_gate_cpu(
    const at::Tensor& pooled, const at::Tensor& w1, const at::Tensor& b1,
    const std::optional<at::Tensor>& w2, const std::optional<at::Tensor>& b2);
void spatial_branch_add_relu_cpu(at::Tensor& out, const at::Tensor& x,
                                 const at::Tensor& identity,
                                 const at::Tensor& idx, const at::Tensor& w1p,
                                 const at::Tensor& b1, const at::Tensor& w2p,
                                 const at::Tensor& b2, const at::Tensor& w3p,
                                 const at::Tensor& b3, int64_t S,
                                 int64_t stride, int64_t dilation,
                                 bool identity_nonneg, bool force_generic,
                                 const at::Tensor& sums);
at::Tensor spatial_partition_work(const at::Tensor& idx, int64_t n,
                                  int64_t c_in, int64_t h, int64_t w,
                                  int64_t width, int64_t c_out, int64_t S,
                                  int64_t stride, int64_t dilation,
                                  int64_t threads);
at::Tensor channel_partition_work(const at::Tensor& chs,
                                  const at::Tensor& counts, int64_t c_in,
                                  int64_t h, int64_t w, int64_t width,
                                  int64_t c_out, int64_t stride,
                                  int64_t padding, int64_t dilation,
                                  int64_t threads);
void sample_gemm_cpu(at::Tensor& out, const at::Tensor& w,
                     const at::Tensor& x, const at::Tensor& rows_x,
                     const at::Tensor& rows_out, const at::Tensor& bias,
                     bool accumulate, bool relu, const at::Tensor& sums,
                     bool blas);
std::string sample_gemm_backend();
at::Tensor sample_gemm_partition(int64_t n, int64_t P, int64_t threads);
at::Tensor spatial_logit_pool_cpu(const at::Tensor& x, const at::Tensor& w,
                                  double b, int64_t gh, int64_t gw);
at::Tensor add_relu_mean_cpu(at::Tensor& out, const at::Tensor& identity);
at::Tensor max_pool2d_cpu(const at::Tensor& x, int64_t kh, int64_t kw,
                          int64_t sh, int64_t sw, int64_t ph, int64_t pw);
at::Tensor add_relu_logit_pool_cpu(at::Tensor& out, const at::Tensor& identity,
                                   const at::Tensor& w, double b, int64_t gh,
                                   int64_t gw);
at::Tensor relu_mean_rows_cpu(at::Tensor& out, const at::Tensor& rows,
                              const c10::optional<at::Tensor>& addend);
at::Tensor scatter_kept_columns_cpu(const at::Tensor& src,
                                    const at::Tensor& kept, int64_t width,
                                    const c10::optional<at::Tensor>& bias,
                                    bool relu);
at::Tensor gather_kept_columns_cpu(const at::Tensor& src,
                                   const at::Tensor& kept, bool relu,
                                   const c10::optional<at::Tensor>& sums);
#ifdef WITH_CUDA
at::Tensor gather_kept_weights_cuda(const at::Tensor& weight,
                                    const at::Tensor& chs);
at::Tensor gather_patches_cuda(const at::Tensor& feat, const at::Tensor& idx,
                               int64_t S, int64_t stride, int64_t dilation,
                               int64_t channels, bool relu);
void scatter_add_relu_cuda(const at::Tensor& out, const at::Tensor& identity,
                           const at::Tensor& patches, const at::Tensor& pmap,
                           int64_t Sh, int64_t Sw);
void scatter_patches_add_relu_cuda(const at::Tensor& out,
                                   const at::Tensor& patches,
                                   const at::Tensor& idx, int64_t Sh,
                                   int64_t Sw);
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

// CPU only: on CUDA the channel path keeps the batched GEMMs (cuBLAS) and
// the gather_kept_weights kernel.
void channel_branch_add_relu(at::Tensor out, const at::Tensor& x,
                             const at::Tensor& chs, const at::Tensor& counts,
                             const at::Tensor& w1t, const at::Tensor& b1,
                             const at::Tensor& w2t, const at::Tensor& b2,
                             const at::Tensor& w3p, const at::Tensor& b3,
                             int64_t stride, int64_t padding,
                             int64_t dilation, bool force_generic,
                             const c10::optional<at::Tensor>& sums,
                             bool force_unblocked) {
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&out, &x, &chs, &counts, &w1t, &b1, &w2t, &b2,
                              &w3p, &b3})
    TORCH_CHECK(t->device().is_cpu(),
                "channel_branch_add_relu is a CPU kernel: every tensor must "
                "be on the CPU");
  TORCH_CHECK(!sums.has_value() || sums->device().is_cpu(),
              "channel_branch_add_relu is a CPU kernel: sums must be on "
              "the CPU");
  channel_branch_add_relu_cpu(out, x, chs, counts, w1t, b1, w2t, b2, w3p, b3,
                              stride, padding, dilation, force_generic,
                              sums.has_value() ? *sums : at::Tensor(),
                              force_unblocked);
}

// CPU only: on CUDA the layer path keeps its per-sample GEMMs (cuBLAS
// queues them).
void sample_gemm(at::Tensor out, const at::Tensor& w, const at::Tensor& x,
                 const at::Tensor& rows_x, const at::Tensor& rows_out,
                 const c10::optional<at::Tensor>& bias, bool accumulate,
                 bool relu, const c10::optional<at::Tensor>& sums,
                 bool blas) {
  sample_gemm_cpu(out, w, x, rows_x, rows_out,
                  bias.has_value() ? *bias : at::Tensor(), accumulate, relu,
                  sums.has_value() ? *sums : at::Tensor(), blas);
}

// CPU only: on CUDA the spatial path keeps gather / convolutions / scatter.
void spatial_branch_add_relu(at::Tensor out, const at::Tensor& x,
                             const at::Tensor& identity, const at::Tensor& idx,
                             const at::Tensor& w1p, const at::Tensor& b1,
                             const at::Tensor& w2p, const at::Tensor& b2,
                             const at::Tensor& w3p, const at::Tensor& b3,
                             int64_t S, int64_t stride, int64_t dilation,
                             bool identity_nonneg, bool force_generic,
                             const c10::optional<at::Tensor>& sums) {
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{
           &out, &x, &identity, &idx, &w1p, &b1, &w2p, &b2, &w3p, &b3})
    TORCH_CHECK(t->device().is_cpu(),
                "spatial_branch_add_relu is a CPU kernel: every tensor must "
                "be on the CPU");
  TORCH_CHECK(!sums.has_value() || sums->device().is_cpu(),
              "spatial_branch_add_relu is a CPU kernel: sums must be on "
              "the CPU");
  spatial_branch_add_relu_cpu(out, x, identity, idx, w1p, b1, w2p, b2, w3p,
                              b3, S, stride, dilation, identity_nonneg,
                              force_generic,
                              sums.has_value() ? *sums : at::Tensor());
}

namespace {
void scatter_add_relu_cpu_op(const at::Tensor& out, const at::Tensor& identity,
                             const at::Tensor& patches, const at::Tensor& pmap,
                             int64_t Sh, int64_t Sw, bool identity_nonneg) {
  scatter_add_relu(out, identity, patches, pmap, Sh, Sw, identity_nonneg);
}
}  // namespace

}  // namespace laud_mm

// The ops as torch operators (torch.ops.laud_mm.<op>): CPU kernels here, CUDA
// kernels in csrc/cuda_bindings.cpp (tools/check_cuda_build.sh checks each
// CUDA registration; laud_mm/ops/cuda_ops.py lists them). The Python API
// calls the CUDA kernels through these, the CPU kernels through the pybind
// functions below.
TORCH_LIBRARY(laud_mm, m) {
  m.def("gather_patches(Tensor feat, Tensor idx, int S, int stride, "
        "int dilation, int channels, bool relu) -> Tensor");
  m.def("scatter_add_relu(Tensor(a!) out, Tensor identity, Tensor patches, "
        "Tensor pmap, int Sh, int Sw, bool identity_nonneg=False) -> ()");
  m.def("scatter_patches_add_relu(Tensor(a!) out, Tensor patches, "
        "Tensor idx, int Sh, int Sw) -> ()");
  m.def("gather_kept_weights(Tensor weight, Tensor chs) -> Tensor");
}

TORCH_LIBRARY_IMPL(laud_mm, CPU, m) {
  m.impl("gather_patches", &laud_mm::gather_patches);
  m.impl("scatter_add_relu", &laud_mm::scatter_add_relu_cpu_op);
  m.impl("gather_kept_weights", &laud_mm::gather_kept_weights);
}

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
  m.def("channel_branch_add_relu", &laud_mm::channel_branch_add_relu,
        "channel_branch_add_relu(out (N,C_out,Ho,Wo), x (N,C_in,H,W), "
        "chs (N,k) int64, counts (N,) int64, w1t (C_in,width+1), b1 "
        "(width+1,), w2t (9,width+1,width+1), b2 (width+1,), w3p "
        "((width+1)*C_out,): w3t (width+1,C_out) in 64-column panels "
        "(pack_panels), b3 (C_out,), stride, padding, dilation): out = "
        "relu(out + conv3(relu(conv2(relu(conv1(x))))) + b3) over each "
        "sample's kept channels chs[n, :counts[n]] (float32, CPU, in place); "
        "force_generic: the plain-loop tiles even with AVX-512 (tests); "
        "sums ((N, C_out) float32) or None: filled with the channel sums of "
        "the new out (for the next block's masker); force_unblocked: panels "
        "gathered up front and pixels split even where the phases run "
        "row-blocked or the columns split (tests, benchmarks: the same "
        "bits)",
        py::arg("out"), py::arg("x"), py::arg("chs"), py::arg("counts"),
        py::arg("w1t"), py::arg("b1"), py::arg("w2t"), py::arg("b2"),
        py::arg("w3p"), py::arg("b3"), py::arg("stride"), py::arg("padding"),
        py::arg("dilation"), py::arg("force_generic") = false,
        py::arg("sums") = py::none(), py::arg("force_unblocked") = false);
  m.def("spatial_branch_add_relu", &laud_mm::spatial_branch_add_relu,
        "spatial_branch_add_relu(out (N,C_out,Ho,Wo), x (N,C_in,H,W), "
        "identity (like out, may alias out), idx (P,3) int64 active patches "
        "sorted by sample, w1p, b1 (width,), w2p, b2 (width,), w3p, b3 "
        "(C_out,), S, stride, dilation, identity_nonneg=False, "
        "force_generic=False, sums=None): out = "
        "relu(identity + mask * conv3(relu(conv2(relu(conv1(x)))))), conv1 "
        "on the dilated mask only; weights packed in 64-column panels "
        "(laud_mm.ops.pack_panels); float32, CPU; force_generic: the "
        "plain-loop tiles even with AVX-512 (tests); sums ((N, C_out) "
        "float32) or None: filled with each sample's channel sums of the "
        "values written at its active pixels (0 for a sample without "
        "one; each thread's partial sums added in thread order)",
        py::arg("out"), py::arg("x"), py::arg("identity"), py::arg("idx"),
        py::arg("w1p"), py::arg("b1"), py::arg("w2p"), py::arg("b2"),
        py::arg("w3p"), py::arg("b3"), py::arg("S"), py::arg("stride"),
        py::arg("dilation"), py::arg("identity_nonneg") = false,
        py::arg("force_generic") = false, py::arg("sums") = py::none());
  m.def("sample_gemm", &laud_mm::sample_gemm,
        "sample_gemm(out (N_o,M,P), w (M,K), x (N_x,K,P), rows_x (n,) int64, "
        "rows_out (n,) int64, bias (M,) or None, accumulate, relu): "
        "out[rows_out[j]] = epi((out[rows_out[j]] if accumulate else 0) + "
        "bias + w @ x[rows_x[j]]), epi = ReLU if relu; the n P columns "
        "split over torch's threads (float32, CPU, in place); sums (n, M), "
        "when given, gets each written row's sum over P; each piece's GEMM "
        "on oneDNN (sample_gemm_backend()), or torch's BLAS with blas=True",
        py::arg("out"), py::arg("w"), py::arg("x"), py::arg("rows_x"),
        py::arg("rows_out"), py::arg("bias"), py::arg("accumulate"),
        py::arg("relu"), py::arg("sums") = py::none(),
        py::arg("blas") = false);
  m.def("sample_gemm_backend", &laud_mm::sample_gemm_backend,
        "'onednn' when sample_gemm's pieces run oneDNN's matmul (torch "
        "exports at::native::mkldnn_matmul), else 'blas' (at::addmm_out)");
  m.def("spatial_logit_pool", &laud_mm::spatial_logit_pool_cpu,
        "spatial_logit_pool(x (N,C,H,W), w (C,), b, gh, gw) -> (N,gh,gw): "
        "b + the mean over each adaptive-pool cell of sum_c w[c] x[:, c] "
        "(a spatial masker's keep - skip logit on the patch grid), one pass "
        "over x split over torch's threads (float32, CPU)",
        py::arg("x"), py::arg("w"), py::arg("b"), py::arg("gh"),
        py::arg("gw"));
  m.def("add_relu_logit_pool", &laud_mm::add_relu_logit_pool_cpu,
        "add_relu_logit_pool(out (N,C,H,W), identity (N,C,H,W), w (C,), b, "
        "gh, gw) -> (N,gh,gw): out = relu(out + identity) in place, returns "
        "spatial_logit_pool of the new out (bit-equal), one pass (float32, "
        "CPU)",
        py::arg("out"), py::arg("identity"), py::arg("w"), py::arg("b"),
        py::arg("gh"), py::arg("gw"));
  m.def("add_relu_mean", &laud_mm::add_relu_mean_cpu,
        "add_relu_mean(out (N,C,H,W), identity (N,C,H,W)) -> (N,C): out = "
        "relu(out + identity) in place, returns its mean over H x W, one "
        "pass (float32, CPU; rows (n, c) over torch's threads)",
        py::arg("out"), py::arg("identity"));
  m.def("max_pool2d", &laud_mm::max_pool2d_cpu,
        "max_pool2d(x (N,C,H,W), kh, kw, sh, sw, ph, pw) -> (N,C,Ho,Wo): "
        "the max over each window's pixels inside the map (padding "
        "excluded, NaN kept), as F.max_pool2d (float32 contiguous, CPU; "
        "rows over torch's threads). RuntimeError: another tensor, an "
        "empty map, kernel or stride < 1, padding outside [0, kernel / 2], "
        "a padded map smaller than the kernel",
        py::arg("x"), py::arg("kh"), py::arg("kw"), py::arg("sh"),
        py::arg("sw"), py::arg("ph"), py::arg("pw"));
  m.def("relu_mean_rows", &laud_mm::relu_mean_rows_cpu,
        "relu_mean_rows(out (N,C,H,W), rows (n,) int64 distinct (checked "
        "with an addend), addend (n,C,H,W) or None) -> (n,C): out[rows[j]] "
        "= relu(out[rows[j]] (+ addend[j])) in place, returns their means "
        "over H x W, one pass (float32, CPU, addend in out's layout, not a "
        "view of its storage; rows (j, c) over torch's threads)",
        py::arg("out"), py::arg("rows"), py::arg("addend") = py::none());
  m.def("scatter_kept_columns", &laud_mm::scatter_kept_columns_cpu,
        "scatter_kept_columns(src (N,P,K) float32, kept (N,K) int64, W, "
        "bias (W,) or None, relu) -> (N,P,W): zeros, and at column "
        "kept[n,j] < W of row (n,p) epi(src[n,p,j] + bias[kept[n,j]]) "
        "(entries equal to W: padding, skipped; epi = ReLU when relu), "
        "one pass (CPU; rows over torch's threads)",
        py::arg("src"), py::arg("kept"), py::arg("width"), py::arg("bias"),
        py::arg("relu"));
  m.def("gather_kept_columns", &laud_mm::gather_kept_columns_cpu,
        "gather_kept_columns(src (N,P,W) float32, kept (N,K) int64, relu, "
        "sums (N,K) float32 or None) -> (N,P,K): epi(src[n,p,kept[n,j]]) "
        "(epi = ReLU when relu), 0 where kept[n,j] == W (padding); sums "
        "filled with each column's sum over P, one pass (CPU; chunks of "
        "64 pixels over torch's threads, sums added in chunk order)",
        py::arg("src"), py::arg("kept"), py::arg("relu"), py::arg("sums"));
  // the signature generation of scatter_kept_columns /
  // gather_kept_columns (laud_mm/ops/kept_columns.py refuses another)
  m.attr("kept_columns_api") = 2;
  m.def("sample_gemm_partition", &laud_mm::sample_gemm_partition,
        "sample_gemm_partition(n, P, threads) -> (threads,) int64: the "
        "columns each thread runs in sample_gemm for n samples of P columns",
        py::arg("n"), py::arg("P"), py::arg("threads"));
  m.def("spatial_partition_work", &laud_mm::spatial_partition_work,
        "spatial_partition_work(idx (P,3) int64, n, c_in, h, w, width, "
        "c_out, S, stride, dilation, threads) -> (2, threads) float64: the "
        "MACs each thread runs in spatial_branch_add_relu's two phases "
        "(conv1; conv2 + conv3) for `threads` threads, from the same plan "
        "(csrc/cpu/partition.h), without running it",
        py::arg("idx"), py::arg("n"), py::arg("c_in"), py::arg("h"),
        py::arg("w"), py::arg("width"), py::arg("c_out"), py::arg("S"),
        py::arg("stride"), py::arg("dilation"), py::arg("threads"));
  m.def("channel_partition_work", &laud_mm::channel_partition_work,
        "channel_partition_work(chs (N,k) int64, counts (N,) int64, c_in, "
        "h, w, width, c_out, stride, padding, dilation, threads) -> "
        "(3, threads) float64: the cost (MAC-equivalents) each thread runs "
        "in channel_branch_add_relu's convolution phases for `threads` "
        "threads, from the same plan, without running it (rows: conv1, "
        "conv2 - conv3, zeros; with the column split conv1, conv2, conv3)",
        py::arg("chs"), py::arg("counts"), py::arg("c_in"), py::arg("h"),
        py::arg("w"), py::arg("width"), py::arg("c_out"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("threads"));
  m.def("channel_kept_lists", &laud_mm::channel_kept_lists_cpu,
        "channel_kept_lists(gate (N, groups) float32, granularity, pad) -> "
        "(chs (N, k_pad) int64, counts (N,) int64, kept groups): each "
        "sample's kept channels (gate > 0.5), ascending, padded with "
        "groups * granularity to a multiple of pad (CPU)",
        py::arg("gate"), py::arg("granularity"), py::arg("pad"));
  m.def("masker_gate", &laud_mm::masker_gate_cpu,
        "masker_gate(pooled (N, C), w1 (H, C), b1 (H,), w2 (O, H) or "
        "None, b2 (O,) or None) float32 -> (gate (N, O/2), logits (N, "
        "O)): a layer / channel masker's linear layers (ReLU between "
        "two) and its inference gate (keep >= skip), one single-threaded "
        "call (CPU)",
        py::arg("pooled"), py::arg("w1"), py::arg("b1"), py::arg("w2"),
        py::arg("b2"));
  m.def("channel_blocked_max_pixels", &laud_mm::channel_blocked_max_pixels,
        "[conv1's input pixels, conv2's output pixels] up to which "
        "channel_branch_add_relu runs those phases row-blocked (their "
        "weight panels never written for the whole batch), then the "
        "output pixels up to which and the units of 16 kept columns per "
        "thread from which it splits columns instead of pixels with "
        "fewer samples than threads");
  m.def("channel_branch_isa", &laud_mm::channel_branch_isa,
        "instruction set of channel_branch_add_relu's tile kernel on this "
        "CPU: 'avx512f' or 'generic'");
#ifdef WITH_CUDA
  m.def("scatter_patches_add_relu", &laud_mm::scatter_patches_add_relu_cuda,
        "scatter_patches_add_relu(out (N,C,H,W), patches (P,C,Sh,Sw), idx "
        "(P,3) int64, Sh, Sw): out = relu(out + patch) at the active "
        "patches' pixels only (CUDA; out already >= 0 elsewhere)",
        py::arg("out"), py::arg("patches"), py::arg("idx"), py::arg("Sh"),
        py::arg("Sw"));
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  // whether at::parallel_for runs the kernels on torch's OpenMP pool (the
  // extension compiled with -fopenmp) or serially
#ifdef _OPENMP
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
#ifdef LAUD_MM_TORCH_VERSION
  m.attr("torch_version") = LAUD_MM_TORCH_VERSION;
#endif
}
