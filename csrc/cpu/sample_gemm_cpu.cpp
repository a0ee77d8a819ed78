// C++ CPU kernel for LAUDNet layer skipping: the 1x1 convolutions of the
// samples a layer-skipping block keeps, as GEMMs read and written in place
// in the batch's tensors.
//
// sample_gemm_cpu(out, w, x, rows_x, rows_out, bias, accumulate, relu,
//                 sums):
//   for j < len(rows_x), o = out[rows_out[j]] (M x P), a = x[rows_x[j]]
//   (K x P):
//     accumulate: o = epi(o + bias + w a)      (conv3 into the shortcut)
//     else:       o = epi(bias + w a)          (conv1 into its buffer)
//   epi = ReLU when relu, else identity; bias (M,) broadcast over P.
//   sums (n, M), when defined: sums[j][m] = the sum over P of the new
//   o[m] (the block output's channel sums for the next block's masker,
//   taken in the epilogue pass instead of a second read of the rows).
//
// Why a kernel: the kept samples are rows of the batch, not a batch of
// their own; a torch.addmm per kept sample (no copy of the rows) threads
// each small GEMM over the pool and waits for it, while the static
// network's convolution splits the whole batch at once. Here the columns of all the kept samples' GEMMs are cut
// into one contiguous range per thread (partition.h: n P columns, ranges
// of equal column counts: a few columns on 7 x 7 maps cost as much as
// whole vectors), each range into pieces whose output (M x columns) stays
// in L2 (a multiple of 16 columns), each piece a
// single-threaded GEMM inside the parallel region (beta 0 unless
// accumulating) followed by one epilogue pass that adds the bias, applies
// the ReLU and (with sums) sums the rows (row_epilogue.h). The GEMM is
// oneDNN's matmul, the library behind the static network's convolutions,
// where torch exports it (at::native::mkldnn_matmul, looked up at run time,
// so that a torch without it still loads the extension, and checked once
// on a small product: torch refuses float32 there on CPUs without
// AVX-512BW); else, or with blas (the caller passes it when torch's
// oneDNN is disabled or allowed reduced-precision float32 matmuls),
// at::addmm_out (MKL / the BLAS torch uses). oneDNN's JIT kernels beat
// MKL's GEMM at these shapes on AMD CPUs (docs/benchmark_history.md, tenth
// round). The K-sum of
// an output element is one GEMM call whatever the partition; the BLAS may
// order it differently for another column count, so results agree with
// one thread to fp32 rounding (tested at 1e-5 relative). With sums, each
// thread sums its pieces' rows into its own (n, M) partials, added up in
// thread order after the parallel region.
//
// Source: LAUDNet paper sec. 3.2 (layer skipping), sec. 3.4 (scheduling);
// Python API in laud_mm/ops/sample_gemm.py.
#include "isa.h"
#include "partition.h"
#include "relu.h"
#include "row_epilogue.h"

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <vector>

#if defined(__linux__) || defined(__APPLE__)
#include <dlfcn.h>
#endif

namespace laud_mm {

namespace {

// at::native::mkldnn_matmul(mat1, mat2, result, beta, alpha): result =
// beta result + alpha mat1 mat2 on oneDNN (float32 included), exported by
// libtorch_cpu but declared in no installed header.
using OnednnMatmul = void (*)(const at::Tensor&, const at::Tensor&,
                              const at::Tensor&, float, float);

// Whether fn computes a float32 GEMM into a strided view of a NaN-filled
// tensor as sample_gemm needs it (beta 0: the NaN not read; the columns
// outside the view untouched). torch refuses float32 in mkldnn_matmul on
// CPUs without AVX-512BW / AVX-NE-CONVERT (and in older versions
// everywhere): it throws, and the BLAS is used.
bool onednn_matmul_works(OnednnMatmul fn) {
  try {
    at::NoGradGuard no_grad;
    const at::Tensor a = at::arange(6, at::kFloat).view({2, 3});
    const at::Tensor b = at::arange(15, at::kFloat).view({3, 5}).narrow(1, 0, 4);
    at::Tensor r = at::full({2, 5}, NAN, at::kFloat);
    at::Tensor rv = r.narrow(1, 0, 4);
    fn(a, b, rv, 0.f, 1.f);
    return at::equal(rv, at::mm(a, b)) &&
           r.narrow(1, 4, 1).isnan().all().item<bool>();
  } catch (const std::exception&) {
    return false;
  }
}

OnednnMatmul onednn_matmul() {
  static const OnednnMatmul fn = []() -> OnednnMatmul {
#if defined(__linux__) || defined(__APPLE__)
    if (!at::hasMKLDNN()) return nullptr;
    const auto f = reinterpret_cast<OnednnMatmul>(dlsym(
        RTLD_DEFAULT, "_ZN2at6native13mkldnn_matmulERKNS_6TensorES3_S3_ff"));
    return f != nullptr && onednn_matmul_works(f) ? f : nullptr;
#else
    return nullptr;
#endif
  }();
  return fn;
}

// The epilogue of a piece after its GEMM: o[m][c] = epi(o[m][c] + bias[m])
// for m < M, c < cols (row stride ld; bias may be null), epi = ReLU when
// relu; with sum non-null, sum[m] += the new o[m][0..cols). One pass over
// the piece (in L2), whatever the combination.
void epilogue_pass(float* o, int64_t ld, int64_t M, int64_t cols,
                   const float* bias, bool relu, float* sum, bool avx512) {
  for (int64_t m = 0; m < M; ++m) {
    float* r = o + m * ld;
    const float b = bias ? bias[m] : 0.f;
    if (sum != nullptr || avx512) {
      const float s =
          row_epilogue::epilogue_sum(r, nullptr, cols, b, relu, avx512);
      if (sum != nullptr) sum[m] += s;
    } else {
      if (b != 0.f)
        for (int64_t c = 0; c < cols; ++c) r[c] += b;
      if (relu) relu_copy(r, r, cols);
    }
  }
}

}  // namespace

// Per-thread column ranges of sample_gemm_cpu for n samples of P columns
// and `threads` threads: (threads + 1) bounds over the n P columns.
std::vector<int64_t> sample_gemm_bounds(int64_t n, int64_t P,
                                        int64_t threads) {
  std::vector<int64_t> counts(n, P), bounds(threads + 1);
  std::vector<double> costs(n, 1.);
  partition::balanced_bounds(counts.data(), costs.data(), n, threads, 1,
                             bounds.data());
  return bounds;
}

std::string sample_gemm_backend() {
  return onednn_matmul() != nullptr ? "onednn" : "blas";
}

void sample_gemm_cpu(at::Tensor& out, const at::Tensor& w,
                     const at::Tensor& x, const at::Tensor& rows_x,
                     const at::Tensor& rows_out, const at::Tensor& bias,
                     bool accumulate, bool relu, const at::Tensor& sums,
                     bool blas) {
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&out, &w, &x})
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous() &&
                    t->device().is_cpu(),
                "sample_gemm: out, w and x must be contiguous float32 CPU "
                "tensors");
  TORCH_CHECK(out.dim() == 3 && x.dim() == 3 && w.dim() == 2,
              "sample_gemm: out (N_o, M, P), x (N_x, K, P), w (M, K)");
  const int64_t M = w.size(0), K = w.size(1), P = x.size(2);
  TORCH_CHECK(out.size(1) == M && x.size(1) == K && out.size(2) == P,
              "sample_gemm: out (N_o, ", M, ", ", P, ") and x (N_x, ", K,
              ", P) expected for w (", M, ", ", K, ")");
  TORCH_CHECK(rows_x.scalar_type() == at::kLong &&
                  rows_out.scalar_type() == at::kLong && rows_x.dim() == 1 &&
                  rows_out.sizes() == rows_x.sizes() &&
                  rows_x.is_contiguous() && rows_out.is_contiguous(),
              "sample_gemm: rows_x and rows_out must be contiguous int64 "
              "(n,) tensors of the same length");
  const bool has_bias = bias.defined() && bias.numel() > 0;
  if (has_bias)
    TORCH_CHECK(bias.scalar_type() == at::kFloat && bias.is_contiguous() &&
                    bias.numel() == M,
                "sample_gemm: bias must be a contiguous float32 (M,) tensor");
  const int64_t n = rows_x.size(0);
  const bool with_sums = sums.defined();
  if (with_sums)
    TORCH_CHECK(sums.scalar_type() == at::kFloat && sums.is_contiguous() &&
                    sums.device().is_cpu() && sums.dim() == 2 &&
                    sums.size(0) == n && sums.size(1) == M,
                "sample_gemm: sums must be a contiguous float32 (n, M) CPU "
                "tensor");
  const int64_t* rx = rows_x.data_ptr<int64_t>();
  const int64_t* ro = rows_out.data_ptr<int64_t>();
  for (int64_t j = 0; j < n; ++j)
    TORCH_CHECK(rx[j] >= 0 && rx[j] < x.size(0) && ro[j] >= 0 &&
                    ro[j] < out.size(0),
                "sample_gemm: rows_x / rows_out entry ", j,
                " outside x / out");
  if (with_sums) sums.zero_();
  if (n == 0 || P == 0 || M == 0) return;
  const int64_t parts = std::max<int64_t>(1, at::get_num_threads());
  const std::vector<int64_t> bounds = sample_gemm_bounds(n, P, parts);
  // columns per piece: the piece's output stays within 1 MiB (L2)
  const int64_t piece = std::max<int64_t>(
      16, (1024 * 1024 / 4 / std::max<int64_t>(M, 1)) / 16 * 16);
  const float* bp = has_bias ? bias.data_ptr<float>() : nullptr;
  float* op = out.data_ptr<float>();
  // the workers run ATen's GEMM: they take the caller's inference mode
  // (in-place writes into inference tensors are refused outside it)
  const bool inference = c10::InferenceMode::is_enabled();
  const bool avx512 = isa::cpu_avx512f();
  const OnednnMatmul matmul = blas ? nullptr : onednn_matmul();
  thread_local std::vector<float> part_buf;
  float* part = with_sums ? row_epilogue::zeroed_partials(part_buf,
                                                          parts * n * M)
                          : nullptr;
  at::parallel_for(0, parts, 1, [&](int64_t t0, int64_t t1) {
    c10::InferenceMode guard(inference);
    at::NoGradGuard no_grad;
    for (int64_t t = t0; t < t1; ++t) {
      int64_t b = bounds[t];
      const int64_t e = bounds[t + 1];
      while (b < e) {
        const int64_t j = b / P, c0 = b - j * P;
        const int64_t c1 = std::min({P, c0 + piece, c0 + (e - b)});
        const int64_t cols = c1 - c0;
        float* o = op + (ro[j] * M) * P + c0;
        at::Tensor ov = out.select(0, ro[j]).narrow(1, c0, cols);
        at::Tensor xv = x.select(0, rx[j]).narrow(1, c0, cols);
        // beta 0: the GEMM does not read the rows (conv1's buffer)
        if (matmul != nullptr)
          matmul(w, xv, ov, accumulate ? 1.f : 0.f, 1.f);
        else
          at::addmm_out(ov, ov, w, xv, accumulate ? 1 : 0, 1);
        if (bp != nullptr || relu || with_sums)
          epilogue_pass(o, P, M, cols, bp, relu,
                        with_sums ? part + (t * n + j) * M : nullptr, avx512);
        b += cols;
      }
    }
  });
  if (with_sums)
    row_epilogue::add_partials(part, parts, n * M, sums.data_ptr<float>());
}

// Per-thread columns of sample_gemm_cpu's partition for n samples of P
// columns and `threads` threads, without running it: (threads,) int64.
at::Tensor sample_gemm_partition(int64_t n, int64_t P, int64_t threads) {
  TORCH_CHECK(threads >= 1 && n >= 0 && P >= 0,
              "threads >= 1, n >= 0 and P >= 0 required");
  const std::vector<int64_t> b = sample_gemm_bounds(n, P, threads);
  at::Tensor res = at::empty({threads}, at::kLong);
  int64_t* r = res.data_ptr<int64_t>();
  for (int64_t t = 0; t < threads; ++t) r[t] = b[t + 1] - b[t];
  return res;
}

}  // namespace laud_mm
