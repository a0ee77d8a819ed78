// C++ CPU kernels of LAUD-RegNetY's batched channel path: each sample's
// kept channels moved between a compact (N, P, K) tensor (the kept
// channels' values, as the batched GEMMs read and write them) and their
// columns in an (N, P, W) map of channel rows (NHWC, the layout of the
// grouped conv2 in channels_last), in one pass over the rows.
//
// scatter_kept_columns_cpu(src (N, P, K), kept (N, K) int64, W, bias (W,)
//                          or undefined, relu) -> out (N, P, W):
//   out[n, p, c] = 0 for every channel c not in kept[n];
//   out[n, p, kept[n, j]] = epi(src[n, p, j] + bias[kept[n, j]])
//   for kept[n, j] < W; an entry equal to W is a padding slot (skipped).
//   epi = ReLU (NaN kept, relu.h) when relu, else the identity.
// gather_kept_columns_cpu(src (N, P, W), kept (N, K) int64, relu,
//                         sums (N, K) or undefined) -> (N, P, K):
//   out[n, p, j] = epi(src[n, p, kept[n, j]]) for kept[n, j] < W, else 0
//   (epi = ReLU when relu); sums[n, j] = the sum over p of out[n, p, j]
//   (the SE squeeze of the kept channels), taken in the same pass.
//
// Why kernels: in PyTorch the scatter is a zero fill of the map, then
// scatter_ (an index per element), after a pass adding conv1's bias and one
// for its ReLU; the gather is torch.gather, an index per element. Here
// each row of the map is written once, in order, and each kept value is
// read once. The scatter splits rows (n, p) over torch's threads, the
// gather chunks of 64 pixels of one sample, whose column sums go to one
// row of partial sums per chunk, added up in chunk order afterwards;
// every value and sum is computed in the same order in any thread, so
// the results do not depend on the thread count.
//
// Source: LAUDNet paper sec. 3.2 (channel skipping: dropped channels are
// zeros at conv2's input), sec. 3.4 (gather / scatter fused with the
// neighbouring element-wise operations); Python API in
// laud_mm/ops/kept_columns.py.
#include "relu.h"

#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace laud_mm {

namespace {

void check_lists(const at::Tensor& kept, int64_t n, const char* op) {
  TORCH_CHECK(kept.device().is_cpu() && kept.scalar_type() == at::kLong &&
                  kept.dim() == 2 && kept.size(0) == n &&
                  kept.is_contiguous(),
              op, ": kept must be a contiguous int64 (N, K) CPU tensor with "
              "N = ", n, ", got ", kept.scalar_type(), " ", kept.sizes(),
              " on ", kept.device(),
              kept.is_contiguous() ? "" : " (not contiguous)");
}

void check_rows(const at::Tensor& src, const char* op) {
  TORCH_CHECK(src.device().is_cpu() && src.scalar_type() == at::kFloat &&
                  src.dim() == 3 && src.is_contiguous(),
              op, ": src must be a contiguous float32 3-D CPU tensor, got ",
              src.scalar_type(), " ", src.sizes(), " on ", src.device());
}

// gather_kept_columns' items: chunks of kChunk pixels of one sample
constexpr int64_t kChunk = 64;

// rows of at least ~16k floats per task
int64_t row_grain(int64_t row_floats) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(row_floats, 1));
}

}  // namespace

at::Tensor scatter_kept_columns_cpu(const at::Tensor& src,
                                    const at::Tensor& kept, int64_t width,
                                    const c10::optional<at::Tensor>& bias,
                                    bool relu) {
  const char* op = "scatter_kept_columns";
  check_rows(src, op);
  const int64_t n = src.size(0), P = src.size(1), K = src.size(2);
  check_lists(kept, n, op);
  TORCH_CHECK(kept.size(1) == K, op, ": kept has ", kept.size(1),
              " columns, src ", K);
  TORCH_CHECK(width >= 0, op, ": width must be >= 0, got ", width);
  const float* b = nullptr;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->device().is_cpu() &&
                    bias->scalar_type() == at::kFloat && bias->dim() == 1 &&
                    bias->size(0) == width && bias->is_contiguous(),
                op, ": bias must be a contiguous float32 (", width,
                ",) CPU tensor, got ", bias->scalar_type(), " ",
                bias->sizes());
    b = bias->data_ptr<float>();
  }
  const int64_t* kl = kept.data_ptr<int64_t>();
  for (int64_t q = 0; q < kept.numel(); ++q)
    TORCH_CHECK(kl[q] >= 0 && kl[q] <= width, op, ": kept entries must lie "
                "in [0, ", width, "], got ", kl[q]);
  at::Tensor out = at::empty({n, P, width}, src.options());
  const float* s = src.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const int64_t grain = row_grain(width + K);
  at::parallel_for(0, n * P, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t* lst = kl + (r / std::max<int64_t>(P, 1)) * K;
      const float* sr = s + r * K;
      float* orow = o + r * width;
      if (width > 0) std::memset(orow, 0, sizeof(float) * width);
      for (int64_t j = 0; j < K; ++j) {
        const int64_t c = lst[j];
        if (c >= width) continue;
        const float v = b ? sr[j] + b[c] : sr[j];
        orow[c] = relu ? relu_of(v) : v;
      }
    }
  });
  return out;
}

at::Tensor gather_kept_columns_cpu(const at::Tensor& src,
                                   const at::Tensor& kept, bool relu,
                                   const c10::optional<at::Tensor>& sums) {
  const char* op = "gather_kept_columns";
  check_rows(src, op);
  const int64_t n = src.size(0), P = src.size(1), width = src.size(2);
  check_lists(kept, n, op);
  const int64_t K = kept.size(1);
  const int64_t* kl = kept.data_ptr<int64_t>();
  for (int64_t q = 0; q < kept.numel(); ++q)
    TORCH_CHECK(kl[q] >= 0 && kl[q] <= width, op, ": kept entries must lie "
                "in [0, ", width, "], got ", kl[q]);
  float* sp = nullptr;
  if (sums.has_value() && sums->defined()) {
    TORCH_CHECK(sums->device().is_cpu() &&
                    sums->scalar_type() == at::kFloat && sums->dim() == 2 &&
                    sums->size(0) == n && sums->size(1) == K &&
                    sums->is_contiguous(),
                op, ": sums must be a contiguous float32 (", n, ", ", K,
                ") CPU tensor, got ", sums->scalar_type(), " ",
                sums->sizes());
    sp = sums->data_ptr<float>();
  }
  at::Tensor out = at::empty({n, P, K}, src.options());
  const float* s = src.data_ptr<float>();
  float* o = out.data_ptr<float>();
  // items: (sample, chunk of kChunk pixels); a chunk's column sums go to
  // its own row of partial sums, added up in chunk order afterwards
  const int64_t chunks = (P + kChunk - 1) / kChunk;
  // sp (and each chunk's ps) null: no sums requested (or none to write)
  std::vector<float> part(sp ? n * chunks * K : 0, 0.f);
  // tasks of about 16k values, as the scatter's (small calls stay serial)
  const int64_t grain =
      std::max<int64_t>(1, row_grain(width + K) / kChunk);
  at::parallel_for(0, n * chunks, grain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t smp = i / chunks, p0 = (i % chunks) * kChunk;
      const int64_t p1 = std::min(P, p0 + kChunk);
      const int64_t* lst = kl + smp * K;
      float* ps = sp ? part.data() + i * K : nullptr;
      for (int64_t p = p0; p < p1; ++p) {
        const float* sr = s + (smp * P + p) * width;
        float* orow = o + (smp * P + p) * K;
        for (int64_t j = 0; j < K; ++j) {
          const int64_t c = lst[j];
          float v = c < width ? sr[c] : 0.f;
          if (relu) v = relu_of(v);
          orow[j] = v;
          if (ps) ps[j] += v;
        }
      }
    }
  });
  if (sp) {
    for (int64_t smp = 0; smp < n; ++smp) {
      float* row = sp + smp * K;
      std::fill(row, row + K, 0.f);
      for (int64_t k = 0; k < chunks; ++k) {
        const float* ps = part.data() + (smp * chunks + k) * K;
        for (int64_t j = 0; j < K; ++j) row[j] += ps[j];
      }
    }
  }
  return out;
}

}  // namespace laud_mm
