// C++ CPU kernel for LAUDNet channel skipping: each sample's kept-channel
// list from a channel gate, in one pass.
//
// channel_kept_lists_cpu(gate (N, groups) float32, granularity G, pad P):
//   a group is kept where gate > 0.5 (NaN: skipped, as torch's `>`);
//   counts[n] = G x the kept groups of row n; k_pad = min(groups G,
//   ceil(max_n counts[n] / P) P); chs[n] = the kept channels g G + j of row
//   n in ascending order, then the padding channel groups G up to k_pad
//   entries; kept = the kept groups of the whole batch.
//   Equal to the PyTorch reference in laud_mm/ops/indexing.py
//   (channel_kept_lists_reference: gt, repeat_interleave, sum, max, a
//   stable sort, slices, eq, masked_fill), which dispatches a dozen
//   operators to do the same: host time the fused CPU branch pays per
//   block (docs/benchmark_history.md, thirteenth round).
//
// Source: LAUDNet paper sec. 3.2 (channel skipping: a gate per group of G
// channels) and sec. 3.4 (the gate turned into per-sample indices).
#include <torch/extension.h>

#include <algorithm>
#include <tuple>

namespace laud_mm {

std::tuple<at::Tensor, at::Tensor, int64_t> channel_kept_lists_cpu(
    const at::Tensor& gate, int64_t granularity, int64_t pad) {
  TORCH_CHECK(gate.device().is_cpu() && gate.scalar_type() == at::kFloat &&
                  gate.dim() == 2 && gate.is_contiguous(),
              "channel_kept_lists: gate must be a contiguous float32 "
              "(N, groups) CPU tensor, got ", gate.scalar_type(), " ",
              gate.sizes(), " on ", gate.device(),
              gate.is_contiguous() ? "" : " (not contiguous)");
  TORCH_CHECK(granularity >= 1, "channel_kept_lists: granularity must be "
              ">= 1, got ", granularity);
  TORCH_CHECK(pad >= 1, "channel_kept_lists: pad must be >= 1, got ", pad);
  const int64_t n = gate.size(0), groups = gate.size(1);
  const int64_t width = groups * granularity;
  const float* g = gate.data_ptr<float>();
  at::Tensor counts = at::empty({n}, gate.options().dtype(at::kLong));
  int64_t* cnt = counts.data_ptr<int64_t>();
  int64_t kept = 0, kmax = 0;
  for (int64_t i = 0; i < n; ++i) {
    int64_t c = 0;
    for (int64_t j = 0; j < groups; ++j) c += g[i * groups + j] > 0.5f;
    kept += c;
    cnt[i] = c * granularity;
    kmax = std::max(kmax, cnt[i]);
  }
  const int64_t k_pad = std::min(width, (kmax + pad - 1) / pad * pad);
  at::Tensor chs = at::empty({n, k_pad}, gate.options().dtype(at::kLong));
  int64_t* out = chs.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    int64_t* row = out + i * k_pad;
    int64_t m = 0;
    for (int64_t j = 0; j < groups; ++j)
      if (g[i * groups + j] > 0.5f)
        for (int64_t t = 0; t < granularity; ++t)
          row[m++] = j * granularity + t;
    std::fill(row + m, row + k_pad, width);
  }
  return std::make_tuple(chs, counts, kept);
}

}  // namespace laud_mm
