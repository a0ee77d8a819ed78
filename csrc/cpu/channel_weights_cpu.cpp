// C++ CPU kernel for LAUDNet channel skipping: per-sample conv2 weights of
// the kept channels.
//
// gather_kept_weights: out[n, i, j] = weight[chs[n, i], chs[n, j]] for a
//   (C_out, C_in, kh, kw) weight and per-sample kept channel indices
//   chs (N, k): the weights of one grouped convolution (a group of k -> k
//   channels per sample) in one pass of kh * kw element copies. PyTorch's
//   advanced indexing (weight[chs[:, :, None], chs[:, None, :]]) runs the
//   same copy 3.8-7x slower (tools/analysis_tools/benchmark_kernels.py,
//   'kept_weights').
//
// Source: LAUDNet paper sec. 3.2 (channel skipping) and 3.4 (scheduling);
// Python API and reference in laud_mm/ops/channel_weights.py.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <cstring>

namespace laud_mm {

namespace {

// R > 0: compile-time run length (memcpy of a known size becomes moves).
template <typename scalar_t, int R>
void gather_kernel(const scalar_t* w, const int64_t* chs, scalar_t* out,
                   int64_t N, int64_t k, int64_t c_in, int64_t run) {
  const int64_t r = R > 0 ? R : run;
  at::parallel_for(0, N * k, 16, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / k;
      const int64_t* kept = chs + n * k;
      const scalar_t* src = w + kept[row - n * k] * c_in * r;
      scalar_t* dst = out + row * k * r;
      for (int64_t j = 0; j < k; ++j)
        std::memcpy(dst + j * r, src + kept[j] * r, sizeof(scalar_t) * r);
    }
  });
}

}  // namespace

at::Tensor gather_kept_weights_cpu(const at::Tensor& weight,
                                   const at::Tensor& chs) {
  TORCH_CHECK(weight.dim() == 4 && weight.is_contiguous(),
              "weight must be a contiguous (C_out, C_in, kh, kw) tensor");
  TORCH_CHECK(chs.dim() == 2 && chs.scalar_type() == at::kLong &&
                  chs.is_contiguous(),
              "chs must be a contiguous int64 (N, k) tensor");
  const int64_t N = chs.size(0), k = chs.size(1);
  const int64_t kh = weight.size(2), kw = weight.size(3);
  auto out = at::empty({N, k, k, kh, kw}, weight.options());
  if (out.numel() == 0) return out;
  const int64_t run = kh * kw;
  AT_DISPATCH_FLOATING_TYPES(weight.scalar_type(), "gather_kept_weights_cpu",
                             [&] {
    const scalar_t* w = weight.data_ptr<scalar_t>();
    const int64_t* c = chs.data_ptr<int64_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    const int64_t c_in = weight.size(1);
    if (run == 9)
      gather_kernel<scalar_t, 9>(w, c, o, N, k, c_in, run);
    else if (run == 1)
      gather_kernel<scalar_t, 1>(w, c, o, N, k, c_in, run);
    else
      gather_kernel<scalar_t, 0>(w, c, o, N, k, c_in, run);
  });
  return out;
}

}  // namespace laud_mm
