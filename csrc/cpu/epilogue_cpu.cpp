// C++ CPU kernels of a residual block's epilogue that also pool its output
// for the next block's masker.
//
// add_relu_mean_cpu(out (N, C, H, W), identity (N, C, H, W)) -> (N, C):
//   out = relu(out + identity)              (in place)
//   returns mean over H x W of the new out  (per sample and channel)
// relu_mean_rows_cpu(out (N, C, H, W), rows (n,) int64,
//                    addend (n, C, H, W) or none) -> (n, C):
//   out[rows[j]] = relu(out[rows[j]] (+ addend[j]))   (in place)
//   returns mean over H x W of the new out[rows[j]]
//   (without addend: the samples a downsampling layer-skipping block
//   skips, whose output is relu(shortcut); with it: the samples it keeps,
//   their branch output added into their shortcut rows)
//
// Why kernels: torch runs the epilogue as two passes over the output
// (add_, relu_), and a layer / channel masker of the next block reads the
// whole output once more for its global average pool (paper sec. 3.2: the
// masker's input is the pooled block input). Here one pass reads out (and
// identity), writes out and keeps the channel sums in registers
// (row_epilogue.h); identity, read for the last time, is fetched
// non-temporally. Rows (n, c) of H x W contiguous pixels split over
// torch's threads; each row's sum runs in one thread in a fixed order, so
// the result does not depend on the thread count.
//
// In channels_last (NHWC) a channel's values are C floats apart, so both
// kernels then take each sample in fixed chunks of kNhwcChunk
// pixels (whole rows of C channels, read and written once, in order):
// a chunk's channel sums go to its own row of partial sums, which are
// added up chunk by chunk afterwards, so the result again does not depend
// on the thread count (the sums run in another order than in NCHW).
//
// Source: LAUDNet paper sec. 3.2 (channel / layer maskers: global average
// pool, then the gate), sec. 3.4 (operator fusion: "Fusing scatter and
// add"); Python API in laud_mm/ops/epilogue.py.
#include "isa.h"
#include "row_epilogue.h"

#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <limits>
#include <vector>

namespace laud_mm {

namespace {

// For r < count rows of HW pixels, row r at out + row_off(r) (and identity
// + r * HW unless identity is null): o = relu(o (+ a)), mean[r] = the
// mean of the new row. Rows split over torch's threads.
template <typename RowOffset>
void relu_mean_rows(float* out, const float* identity, int64_t count,
                    int64_t HW, RowOffset row_off, float* mean) {
  const bool avx512 = isa::cpu_avx512f();
  // rows of at least ~16k pixels per task: fewer, larger tasks on small maps
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(HW, 1));
  at::parallel_for(0, count, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t off = row_off(r);
      const float s = row_epilogue::epilogue_sum(
          out + off, identity ? identity + r * HW : nullptr, HW, 0.f, true,
          avx512, /*last_read_a=*/true);
      mean[r] = HW > 0 ? s / static_cast<float>(HW)
                       : std::numeric_limits<float>::quiet_NaN();
    }
  });
}

constexpr int64_t kNhwcChunk = 64;

// s[c] += (o[c] = relu(o[c] (+ a[c]))) for c < C (a may be null)
inline void add_relu_sum_row_generic(float* o, const float* a, int64_t C,
                                     float* s) {
  for (int64_t c = 0; c < C; ++c) {
    o[c] = relu_of(a ? o[c] + a[c] : o[c]);
    s[c] += o[c];
  }
}

#ifdef LAUD_X86
LAUD_TARGET("avx512f")
void add_relu_sum_row_avx512(float* o, const float* a, int64_t C, float* s) {
  const __m512 z = _mm512_setzero_ps();
  for (int64_t c = 0; c < C; c += 16) {
    const __mmask16 m = C - c >= 16
        ? static_cast<__mmask16>(0xFFFF)
        : static_cast<__mmask16>((1u << (C - c)) - 1u);
    // max(0, NaN) = NaN, max(0, -0) = -0, as relu_of
    __m512 v = _mm512_maskz_loadu_ps(m, o + c);
    if (a) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, a + c));
    v = _mm512_max_ps(z, v);
    _mm512_mask_storeu_ps(o + c, m, v);
    _mm512_mask_storeu_ps(
        s + c, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, s + c), v));
  }
}
#endif

// add_relu_mean_cpu / relu_mean_rows_cpu for channels_last out and
// identity (P = H x W pixels of C channels a sample; identity may be
// null: no addend): samples[j] (j < N; null: j itself) of out, plus
// sample j of identity, chunks of
// kNhwcChunk pixels over torch's threads, then the chunks' partial sums
// added in chunk order; mean[j] the new sample's channel means.
void add_relu_mean_nhwc(float* out, const float* identity,
                        const int64_t* samples, int64_t N, int64_t P,
                        int64_t C, float* mean) {
  const bool avx512 = isa::cpu_avx512f();
  const int64_t chunks = (P + kNhwcChunk - 1) / kNhwcChunk;
  // the partial sums: the calling thread's buffer, reused between calls
  thread_local std::vector<float> part_buf;
  if (part_buf.size() < static_cast<size_t>(N * chunks * C))
    part_buf.resize(N * chunks * C);
  float* part = part_buf.data();
  at::parallel_for(0, N * chunks, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t j = i / chunks, p0 = (i % chunks) * kNhwcChunk;
      const int64_t n = samples ? samples[j] : j;
      const int64_t p1 = std::min(P, p0 + kNhwcChunk);
      float* s = part + i * C;
      std::fill(s, s + C, 0.f);
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t off = (n * P + p) * C;
        const float* a = identity ? identity + (j * P + p) * C : nullptr;
#ifdef LAUD_X86
        if (avx512) {
          add_relu_sum_row_avx512(out + off, a, C, s);
          continue;
        }
#endif
        add_relu_sum_row_generic(out + off, a, C, s);
      }
    }
  });
  (void)avx512;
  // the chunks' sums added per sample: a few adds a chunk and channel, so
  // samples in grains of at least at::internal::GRAIN_SIZE adds (a batch
  // of small maps in one thread: no second parallel region, whose start
  // costs more than the adds); each sample's sums in chunk order, in any
  // thread
  const int64_t per_sample = std::max<int64_t>(1, chunks * C);
  const int64_t grain =
      (at::internal::GRAIN_SIZE + per_sample - 1) / per_sample;
  at::parallel_for(0, N, grain, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      float* m = mean + n * C;
      std::fill(m, m + C, 0.f);
      for (int64_t k = 0; k < chunks; ++k) {
        const float* s = part + (n * chunks + k) * C;
        for (int64_t c = 0; c < C; ++c) m[c] += s[c];
      }
      for (int64_t c = 0; c < C; ++c)
        m[c] = P > 0 ? m[c] / static_cast<float>(P)
                     : std::numeric_limits<float>::quiet_NaN();
    }
  });
}

}  // namespace

at::Tensor add_relu_mean_cpu(at::Tensor& out, const at::Tensor& identity) {
  // NCHW, or channels_last for both (a tensor that is both counts as NCHW)
  const bool nhwc = out.dim() == 4 && !out.is_contiguous() &&
                    out.is_contiguous(at::MemoryFormat::ChannelsLast);
  const auto fmt = nhwc ? at::MemoryFormat::ChannelsLast
                        : at::MemoryFormat::Contiguous;
  for (const at::Tensor* t :
       std::initializer_list<const at::Tensor*>{&out, &identity})
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous(fmt) &&
                    t->device().is_cpu() && t->dim() == 4,
                "add_relu_mean: out and identity must be float32 CPU "
                "(N, C, H, W) tensors, both contiguous or both "
                "channels_last");
  TORCH_CHECK(out.sizes() == identity.sizes(),
              "add_relu_mean: out ", out.sizes(), " and identity ",
              identity.sizes(), " differ in shape");
  TORCH_CHECK(!out.is_same(identity),
              "add_relu_mean: out and identity must be different tensors");
  const int64_t N = out.size(0), C = out.size(1);
  const int64_t HW = out.size(2) * out.size(3);
  at::Tensor mean = at::empty({N, C}, out.options());
  if (N * C == 0) return mean;
  if (nhwc) {
    add_relu_mean_nhwc(out.data_ptr<float>(), identity.data_ptr<float>(),
                       nullptr, N, HW, C, mean.data_ptr<float>());
    return mean;
  }
  relu_mean_rows(out.data_ptr<float>(), identity.data_ptr<float>(), N * C,
                 HW, [HW](int64_t r) { return r * HW; },
                 mean.data_ptr<float>());
  return mean;
}

at::Tensor relu_mean_rows_cpu(at::Tensor& out, const at::Tensor& rows,
                              const c10::optional<at::Tensor>& addend_opt) {
  const bool nhwc = out.dim() == 4 && !out.is_contiguous() &&
                    out.is_contiguous(at::MemoryFormat::ChannelsLast);
  TORCH_CHECK(out.scalar_type() == at::kFloat &&
                  (nhwc || out.is_contiguous()) && out.device().is_cpu() &&
                  out.dim() == 4,
              "relu_mean_rows: out must be a contiguous or channels_last "
              "float32 CPU (N, C, H, W) tensor");
  TORCH_CHECK(rows.scalar_type() == at::kLong && rows.dim() == 1 &&
                  rows.is_contiguous() && rows.device().is_cpu(),
              "relu_mean_rows: rows must be a contiguous int64 (n,) CPU "
              "tensor");
  const int64_t N = out.size(0), C = out.size(1);
  const int64_t HW = out.size(2) * out.size(3), n = rows.size(0);
  const int64_t* rp = rows.data_ptr<int64_t>();
  for (int64_t j = 0; j < n; ++j)
    TORCH_CHECK(rp[j] >= 0 && rp[j] < N, "relu_mean_rows: rows entry ", j,
                " = ", rp[j], " outside [0, ", N, ")");
  const float* add = nullptr;
  if (addend_opt.has_value()) {
    const at::Tensor& a = *addend_opt;
    TORCH_CHECK(a.scalar_type() == at::kFloat && a.device().is_cpu() &&
                    a.dim() == 4 && a.size(0) == n &&
                    a.sizes().slice(1) == out.sizes().slice(1) &&
                    a.is_contiguous(nhwc ? at::MemoryFormat::ChannelsLast
                                         : at::MemoryFormat::Contiguous),
                "relu_mean_rows: addend must be a float32 CPU (n, C, H, W) "
                "tensor of out's C, H, W and memory format, n = len(rows); "
                "got ", a.sizes());
    TORCH_CHECK(a.numel() == 0 || !a.storage().is_alias_of(out.storage()),
                "relu_mean_rows: addend must not be a view of out's storage");
    // an addend makes a repeated row a race (two threads adding into it);
    // ascending rows (the callers' nonzero() lists) need no table
    bool ascending = true;
    for (int64_t j = 1; j < n && ascending; ++j)
      ascending = rp[j] > rp[j - 1];
    if (!ascending) {
      std::vector<char> seen(N, 0);
      for (int64_t j = 0; j < n; ++j) {
        TORCH_CHECK(!seen[rp[j]], "relu_mean_rows: rows must be distinct "
                    "with an addend, row ", rp[j], " repeats");
        seen[rp[j]] = 1;
      }
    }
    add = a.data_ptr<float>();
  }
  at::Tensor mean = at::empty({n, C}, out.options());
  if (n * C == 0) return mean;
  if (nhwc) {
    add_relu_mean_nhwc(out.data_ptr<float>(), add, rp, n, HW, C,
                       mean.data_ptr<float>());
    return mean;
  }
  relu_mean_rows(out.data_ptr<float>(), add, n * C, HW,
                 [rp, C, HW](int64_t r) { return (rp[r / C] * C + r % C) * HW; },
                 mean.data_ptr<float>());
  return mean;
}

}  // namespace laud_mm
