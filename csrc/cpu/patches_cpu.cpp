// C++ CPU kernels for LAUDNet spatially sparse bottlenecks.
//
// gather_patches: conv2 input windows (3x3 halo, zero outside the image,
//   optional fused ReLU of conv1) of the active S x S output patches.
// scatter_add_relu: out = relu(identity + scatter(patches)) in one pass over
//   the output (the fused scatter + residual add + ReLU of the paper);
//   patches are Sh x Sw (Sh = Sw = S for spatial skipping, the whole map for
//   layer skipping); out may alias identity.
//
// Source: LAUDNet paper sec. 3.4 and appendix (operator fusion); the Python
// API and reference implementation are in laud_mm/ops/patches.py.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <cstring>

namespace laud_mm {

namespace {

template <typename scalar_t>
void gather_kernel(const scalar_t* feat, const int64_t* idx, scalar_t* out,
                   int64_t P, int64_t C_t, int64_t H, int64_t W,
                   int64_t channels, int64_t S, int64_t stride,
                   int64_t dilation, bool relu) {
  const int64_t K = (S - 1) * stride + 2 * dilation + 1;
  const int64_t plane = H * W;
  // one task = one (patch, channel) window; grain keeps tasks ~ 4 KiB
  const int64_t grain = std::max<int64_t>(1, 1024 / (K * K));
  at::parallel_for(0, P * channels, grain, [&](int64_t begin, int64_t end) {
    for (int64_t pc = begin; pc < end; ++pc) {
      const int64_t p = pc / channels, c = pc % channels;
      const int64_t n = idx[3 * p], gi = idx[3 * p + 1], gj = idx[3 * p + 2];
      const int64_t y0 = gi * S * stride - dilation;
      const int64_t x0 = gj * S * stride - dilation;
      const scalar_t* src = feat + (n * C_t + c) * plane;
      scalar_t* dst = out + pc * K * K;
      const int64_t xlo = std::max<int64_t>(0, -x0);
      const int64_t xhi = std::min<int64_t>(K, W - x0);
      for (int64_t wy = 0; wy < K; ++wy) {
        scalar_t* drow = dst + wy * K;
        const int64_t iy = y0 + wy;
        if (iy < 0 || iy >= H || xhi <= xlo) {
          std::fill(drow, drow + K, scalar_t(0));
          continue;
        }
        const scalar_t* srow = src + iy * W + x0;
        for (int64_t wx = 0; wx < xlo; ++wx) drow[wx] = scalar_t(0);
        if (relu) {
          for (int64_t wx = xlo; wx < xhi; ++wx) {
            const scalar_t v = srow[wx];
            drow[wx] = v > scalar_t(0) ? v : scalar_t(0);
          }
        } else {
          std::memcpy(drow + xlo, srow + xlo, (xhi - xlo) * sizeof(scalar_t));
        }
        for (int64_t wx = std::max(xhi, xlo); wx < K; ++wx) drow[wx] = scalar_t(0);
      }
    }
  });
}

// One pass over the output: out = relu(identity + patch value), where the
// patch value is 0 at pixels of inactive patches. pmap (N, gh, gw) holds the
// row of `patches` for each active patch and -1 elsewhere.
template <typename scalar_t>
void scatter_kernel(scalar_t* out, const scalar_t* ident, const scalar_t* y,
                    const int64_t* pmap, int64_t N, int64_t C, int64_t H,
                    int64_t W, int64_t Sh, int64_t Sw, int64_t gh,
                    int64_t gw) {
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(W, 1));
  at::parallel_for(0, N * C * H, grain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t oy = row % H;
      const int64_t c = (row / H) % C;
      const int64_t n = row / (H * C);
      const int64_t gi = oy / Sh, r = oy % Sh;
      const int64_t* mrow = pmap + (n * gh + gi) * gw;
      scalar_t* o = out + row * W;
      const scalar_t* id = ident + row * W;
      for (int64_t gj = 0; gj < gw; ++gj) {
        const int64_t x0 = gj * Sw;
        const int64_t x1 = std::min<int64_t>(W, x0 + Sw);
        const int64_t p = mrow[gj];
        if (p < 0) {
          for (int64_t q = x0; q < x1; ++q) {
            const scalar_t v = id[q];
            o[q] = v > scalar_t(0) ? v : scalar_t(0);
          }
        } else {
          const scalar_t* s = y + ((p * C + c) * Sh + r) * Sw;
          for (int64_t q = x0; q < x1; ++q) {
            const scalar_t v = id[q] + s[q - x0];
            o[q] = v > scalar_t(0) ? v : scalar_t(0);
          }
        }
      }
    }
  });
}

}  // namespace

at::Tensor gather_patches_cpu(const at::Tensor& feat, const at::Tensor& idx,
                              int64_t S, int64_t stride, int64_t dilation,
                              int64_t channels, bool relu) {
  TORCH_CHECK(feat.dim() == 4 && feat.is_contiguous(),
              "feat must be a contiguous (N, C, H, W) tensor");
  TORCH_CHECK(idx.dim() == 2 && idx.size(1) == 3 &&
                  idx.scalar_type() == at::kLong && idx.is_contiguous(),
              "idx must be a contiguous int64 (P, 3) tensor");
  TORCH_CHECK(channels >= 0 && channels <= feat.size(1),
              "channels out of range");
  const int64_t K = (S - 1) * stride + 2 * dilation + 1;
  const int64_t P = idx.size(0);
  auto out = at::empty({P, channels, K, K}, feat.options());
  if (P == 0 || channels == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(feat.scalar_type(), "gather_patches_cpu", [&] {
    gather_kernel<scalar_t>(feat.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(),
                            out.data_ptr<scalar_t>(), P, feat.size(1),
                            feat.size(2), feat.size(3), channels, S, stride,
                            dilation, relu);
  });
  return out;
}

void scatter_add_relu_cpu(at::Tensor& out, const at::Tensor& identity,
                          const at::Tensor& patches, const at::Tensor& pmap,
                          int64_t Sh, int64_t Sw) {
  TORCH_CHECK(out.dim() == 4 && out.is_contiguous() &&
                  identity.is_contiguous() && patches.is_contiguous(),
              "out, identity and patches must be contiguous");
  TORCH_CHECK(out.sizes() == identity.sizes(), "out / identity shape mismatch");
  const int64_t N = out.size(0), C = out.size(1), H = out.size(2),
                W = out.size(3);
  const int64_t gh = (H + Sh - 1) / Sh, gw = (W + Sw - 1) / Sw;
  TORCH_CHECK(pmap.dim() == 3 && pmap.size(0) == N && pmap.size(1) == gh &&
                  pmap.size(2) == gw && pmap.scalar_type() == at::kLong &&
                  pmap.is_contiguous(),
              "pmap must be a contiguous int64 (N, gh, gw) tensor");
  TORCH_CHECK(patches.dim() == 4 && patches.size(1) == C &&
                  patches.size(2) == Sh && patches.size(3) == Sw,
              "patches must be (P, C, Sh, Sw)");
  if (out.numel() == 0) return;
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "scatter_add_relu_cpu", [&] {
    scatter_kernel<scalar_t>(out.data_ptr<scalar_t>(),
                             identity.data_ptr<scalar_t>(),
                             patches.data_ptr<scalar_t>(),
                             pmap.data_ptr<int64_t>(), N, C, H, W, Sh, Sw, gh,
                             gw);
  });
}

}  // namespace laud_mm
