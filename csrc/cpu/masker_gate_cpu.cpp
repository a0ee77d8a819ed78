// C++ CPU kernel for LAUDNet's layer and channel maskers at inference: the
// masker's linear layers on its pooled input and the inference gate, in
// one single-threaded call.
//
// masker_gate_cpu(pooled (N, C), w1 (H, C), b1 (H,), w2 (O, H) or none,
//                 b2 (O,) or none), all float32 contiguous:
//   without w2 (layer masker, Linear(C, 2)):
//     logits = pooled w1^T + b1                              (N, O = H)
//   with w2 (channel masker, Linear(C, h) - ReLU - Linear(h, 2 groups)):
//     logits = relu(pooled w1^T + b1) w2^T + b2              (N, O)
//   gate[n, g] = 1 where logits[n, 2g] >= logits[n, 2g + 1] (keep >= skip;
//   a NaN logit gives 0, as torch's >=), else 0              (N, O / 2)
//
// Why: the masker's operators are microseconds of arithmetic (8 x 2048 x
// 16 multiply-adds at most in LAUD-ResNet-50) but each is a call into
// torch's dispatcher and its BLAS, which on several threads wakes the
// sleeping thread pool for every linear layer; between a block's large
// kernels that host work dominated the masker's time
// (docs/benchmark_history.md, fourteenth round). Here the whole decision is
// one call on the calling thread.
//
// Numerics: every dot product keeps 16 partial sums (element i goes to sum
// i mod 16, multiply then add, no fused multiply-add: the build targets
// the baseline ISA) added pairwise in a fixed order, so the logits are
// the same bits at every thread count and on every x86-64 CPU; they differ
// from torch's BLAS by float rounding only (the order of the sums).
//
// Source: LAUDNet paper sec. 3.2 (maskers: global pooling, the channel
// masker's two-layer MLP, the layer masker's linear gate; keep if
// logit_keep >= logit_skip at inference) and sec. 3.4 (scheduling).
#include <torch/extension.h>

#include <optional>
#include <tuple>
#include <vector>

namespace laud_mm {

namespace {

constexpr int kLanes = 16;

// a . b over n elements: lane i mod 16 sums, then a pairwise tree
inline float dot16(const float* a, const float* b, int64_t n) {
  float acc[kLanes] = {0.f};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) acc[l] += a[i + l] * b[i + l];
  for (int l = 0; i < n; ++i, ++l) acc[l] += a[i] * b[i];
  for (int w = kLanes / 2; w >= 1; w /= 2)
    for (int l = 0; l < w; ++l) acc[l] += acc[l + w];
  return acc[0];
}

void check_matrix(const at::Tensor& t, const char* name, int64_t rows,
                  int64_t cols) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat &&
                  t.is_contiguous(),
              "masker_gate: ", name, " must be a contiguous float32 CPU "
              "tensor, got ", t.scalar_type(), " on ", t.device(),
              t.is_contiguous() ? "" : " (not contiguous)");
  const bool ok = cols < 0 ? (t.dim() == 1 && t.size(0) == rows)
                           : (t.dim() == 2 && t.size(0) == rows &&
                              t.size(1) == cols);
  TORCH_CHECK(ok, "masker_gate: ", name, " has shape ", t.sizes(),
              ", expected (", rows, cols < 0 ? "" : ", ",
              cols < 0 ? std::string() : std::to_string(cols), ")");
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> masker_gate_cpu(
    const at::Tensor& pooled, const at::Tensor& w1, const at::Tensor& b1,
    const std::optional<at::Tensor>& w2_opt,
    const std::optional<at::Tensor>& b2_opt) {
  TORCH_CHECK(pooled.dim() == 2, "masker_gate: pooled must be (N, C), got ",
              pooled.sizes());
  TORCH_CHECK(w1.dim() == 2, "masker_gate: w1 must be (H, C), got ",
              w1.sizes());
  const int64_t n = pooled.size(0), c = pooled.size(1), h = w1.size(0);
  check_matrix(pooled, "pooled", n, c);
  check_matrix(w1, "w1", h, c);
  check_matrix(b1, "b1", h, -1);
  const bool two_layers = w2_opt.has_value();
  TORCH_CHECK(two_layers == b2_opt.has_value(),
              "masker_gate: w2 and b2 must be given together");
  const at::Tensor w2 = two_layers ? *w2_opt : at::Tensor();
  const at::Tensor b2 = two_layers ? *b2_opt : at::Tensor();
  int64_t o = h;
  if (two_layers) {
    TORCH_CHECK(w2.dim() == 2, "masker_gate: w2 must be (O, H), got ",
                w2.sizes());
    o = w2.size(0);
    check_matrix(w2, "w2", o, h);
    check_matrix(b2, "b2", o, -1);
  }
  TORCH_CHECK(o % 2 == 0 && o > 0, "masker_gate: the last layer needs an "
              "even, positive number of outputs ((keep, skip) pairs), got ",
              o);
  at::Tensor logits = at::empty({n, o}, pooled.options());
  at::Tensor gate = at::empty({n, o / 2}, pooled.options());
  const float* p = pooled.data_ptr<float>();
  const float* a1 = w1.data_ptr<float>();
  const float* c1 = b1.data_ptr<float>();
  float* lg = logits.data_ptr<float>();
  float* gt = gate.data_ptr<float>();
  std::vector<float> hidden(two_layers ? h : 0);
  for (int64_t i = 0; i < n; ++i) {
    const float* pi = p + i * c;
    float* li = lg + i * o;
    if (!two_layers) {
      for (int64_t j = 0; j < h; ++j) li[j] = dot16(pi, a1 + j * c, c) + c1[j];
    } else {
      for (int64_t j = 0; j < h; ++j) {
        const float v = dot16(pi, a1 + j * c, c) + c1[j];
        hidden[j] = (v > 0.f || v != v) ? v : 0.f;  // ReLU; NaN stays NaN
      }
      const float* a2 = w2.data_ptr<float>();
      const float* c2 = b2.data_ptr<float>();
      for (int64_t j = 0; j < o; ++j)
        li[j] = dot16(hidden.data(), a2 + j * h, h) + c2[j];
    }
    for (int64_t g = 0; g < o / 2; ++g)
      gt[i * (o / 2) + g] = li[2 * g] >= li[2 * g + 1] ? 1.f : 0.f;
  }
  return std::make_tuple(gate, logits);
}

}  // namespace laud_mm
