// C++ CPU kernel for LAUDNet spatial skipping: the whole sparse branch of a
// spatially masked bottleneck (conv1 -> ReLU -> conv2 -> ReLU -> conv3, BN
// folded), added into the shortcut with the final ReLU, computing only what
// the active S x S output patches need.
//
// spatial_branch_add_relu_cpu(out, x, identity, idx, w1p, b1, w2p, b2, w3p,
//                             b3, S, stride, dilation, identity_nonneg,
//                             force_generic, sums):
//   for every sample n with active patches A_n = {(gi, gj)} (rows of idx):
//     D_n = the conv2 input pixels of A_n's output pixels (the mask dilated
//           by conv2's 3 x 3 window, at the input resolution)
//     h1  = relu(W1 x_n + b1)           at the pixels of D_n    (1x1)
//     h2  = relu(W2 * h1 + b2)          at A_n's output pixels  (3x3,
//           stride, dilation; zero outside the image as conv2's padding)
//     out_n = relu(identity_n + W3 h2 + b3) at A_n's output pixels,
//             relu(identity_n) elsewhere
//   which is the masked-dense block: a skipped pixel's branch output is 0.
//   With sums ((N, C_out), else undefined): sums[n] = the channel sums of
//   out_n over A_n's pixels (0 without active patches), added by conv3's
//   epilogue as it writes them (a layer block, one patch covering each
//   kept sample's map, hands the next masker those rows' means without a
//   pass of its own; paper sec. 3.2: the maskers pool their input).
//
// Why a kernel: the gather / convolution / scatter path
// (laud_mm/models/resnet/dynamic.py) runs the convolutions at the static
// network's efficiency but pays for the data movement around them: conv1
// on the whole map (the paper's FLOPs count it on the dilated mask only), a
// copy of every active patch's K x K conv1 window, conv3's output written
// to a patch buffer and read back by the scatter. On that path, perf of the
// R50 backbone at r = 0.5 (8 x 224 px) puts gather and scatter at 10 % of
// the time, with the convolutions alone 1.73x faster than static but the
// whole backbone 1.45x (docs/benchmark_history.md, "What the profile showed").
// Here the register tiles of tile.h (7 pixels x 64 output channels, inputs
// broadcast) read any pixel set in place: conv1 reads the input at D_n's
// pixels (transposed to pixel-major in L2-sized chunks where two or more
// panel blocks read them, else the NCHW rows in place) and writes a
// zero-bordered pixel-major buffer; conv2 reads
// its nine taps from that buffer; conv3 writes a 64-channel panel of A_n's
// pixels to a small pixel-major buffer that one pass adds into out's
// channel rows (8 x 8 in-register transposes, runs of 8 / 4 adjacent pixels
// as 256- / 128-bit moves, shorter runs (S = 1, 2) per pixel).
// x, identity and out may instead all be channels_last (NHWC): conv1's
// tiles then read x's pixel rows in place and conv3's rows are added into
// out's pixel rows with plain vector adds, the same sums in the same
// order, so out holds the NCHW result bit for bit.
//
// Threads (partition.h): two phases over the whole batch, each cut into
// one contiguous range of pixels per thread of the intra-op pool:
//   1. conv1 at the dilated mask's input pixels of every sample (rows of the
//      input in raster order, their needed column intervals); with it the
//      zero border of the conv1 buffer and, out of place,
//      out = relu(identity);
//   2. conv2, conv3 and the add at the active output pixels (patch by
//      patch, sample by sample; with S >= 4 and 64 pixels a thread or
//      more, ranges of whole 8-pixel epilogue blocks), each range in
//      sub-ranges whose conv2 output stays in L2;
//   3. in place with an identity that may be negative: the final ReLU pass.
// Every pixel's sums run in the same order whatever the partition, so the
// result is the same bit for bit at any thread count and batch size; the
// channel sums (sums) are each thread's partial sums added in thread
// order, the same to float rounding (row_epilogue.h). The
// only serial work is O(active patches + N x H) integer bookkeeping
// (plan_spatial) and, with sums, O(threads x N x C_out) adds (split over
// the threads above 2^20, row_epilogue::add_partials); scratch
// buffers only grow (no allocation per call once warm).
// spatial_partition_work exposes the same plan's per-thread work.
//
// Source: LAUDNet paper sec. 3.1 (spatial masker, granularity S), sec. 3.4
// and appendix B.1 (gather / scatter-add fused with the convolutions),
// docs/method.md sec. 2 (conv1 FLOPs on the dilated mask); Python API and
// reference in laud_mm/ops/spatial_conv.py.
#include "partition.h"
#include "relu.h"
#include "row_epilogue.h"
#include "tile.h"

#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace laud_mm {

namespace {

using namespace tile;

struct SpatialGeometry {
  int64_t n, c_in, h, w, width, c_out, ho, wo, stride, dil, S, gh, gw;
  // x, identity and out channels_last (NHWC): a pixel's channels
  // contiguous, as the tiles read and write them (no transposition)
  bool nhwc = false;
  int64_t hp() const { return h + 2 * dil; }
  int64_t wpx() const { return w + 2 * dil; }
};

// Run kind of 8 consecutive output pixels of the pixel list (offsets poff
// in the output): kRun8 one run of 8 adjacent pixels, kRun4 two runs of 4,
// kScalar anything else (and the list's tail): per pixel.
enum RunKind : uint8_t { kScalar = 0, kRun4 = 4, kRun8 = 8 };

bool runs_of(const int64_t* poff, int len) {
  for (int k = 1; k < len; ++k)
    if (poff[k] != poff[0] + k) return false;
  return true;
}

RunKind run_kind(const int64_t* poff, int64_t count) {
  if (count < 8) return kScalar;
  if (runs_of(poff, 8)) return kRun8;
  if (runs_of(poff, 4) && runs_of(poff + 4, 4)) return kRun4;
  return kScalar;
}

// Where an epilogue adds the values it writes, per sample: the calling
// thread's partial channel sums (part: N rows of C_out floats, this
// panel's columns from j0) and the sample of each pixel of the range
// (sample[p]). Pixels come sample by sample (the plan's patch order), so
// the vector epilogues add runs of one sample in registers and fold them
// into the row when the sample changes.
struct PanelSums {
  float* part;
  const int64_t* sample;
  int64_t c_out, j0;
  float* row(int64_t p) const { return part + sample[p] * c_out + j0; }
};

// conv3's epilogue at scattered pixels: out[l][poff[p]] = relu(ident[l]
// [poff[p]] + tmp[p][l] + bias[l]) for p < count, l < wdt (a multiple of 8);
// out[l] = out + l * plane, likewise ident (may alias out); poff holds
// offsets from sample 0 (n * C_out * plane + pixel). tmp has count rows of
// kPanel, rounded up to 8. With ps (else null) the values written are also
// added into ps's rows.
void add_relu_scattered_generic(const float* tmp, const int64_t* poff,
                                int64_t count, int wdt, const float* bias,
                                const float* ident, float* out,
                                int64_t plane, const PanelSums* ps) {
  for (int l = 0; l < wdt; ++l) {
    const float* id = ident + l * plane;
    float* o = out + l * plane;
    for (int64_t p = 0; p < count; ++p) {
      const float v = relu_of(id[poff[p]] + tmp[p * kPanel + l] + bias[l]);
      o[poff[p]] = v;
      if (ps) ps->row(p)[l] += v;
    }
  }
}

#ifdef LAUD_X86
// row[l] += the sum of acc[l]'s lanes (in lane order), acc zeroed.
LAUD_TARGET("avx2") inline void fold_lanes8(__m256* acc, float* row,
                                            float* r8) {
  for (int l = 0; l < 8; ++l) {
    _mm256_store_ps(r8, acc[l]);
    float t = 0.f;
    for (int i = 0; i < 8; ++i) t += r8[i];
    row[l] += t;
    acc[l] = _mm256_setzero_ps();
  }
}

// With ps, the values written are also added into ps's rows: a group of
// 8 pixels of one sample into 8 lane accumulators (one per channel),
// folded into the sample's row when the sample changes; a group that
// straddles two samples (a map of pixels not a multiple of 8) pixel by
// pixel. kSums: ps is given (a template argument, so that the loop
// without sums carries no accumulators).
template <bool kSums>
LAUD_TARGET("avx2") void add_relu_scattered_avx2(
    const float* tmp, const int64_t* poff, const uint8_t* kinds,
    int64_t count, int wdt, const float* bias, const float* ident,
    float* out, int64_t plane, const PanelSums* ps) {
  const __m256 zero = _mm256_setzero_ps();
  const __m128 zero4 = _mm_setzero_ps();
  alignas(32) float v8[8];
  alignas(32) float r8[8];
  for (int l0 = 0; l0 < wdt; l0 += 8) {
    __m256 b[8], acc[8];
    for (int l = 0; l < 8; ++l) {
      b[l] = _mm256_set1_ps(bias[l0 + l]);
      acc[l] = zero;
    }
    int64_t cur = kSums && count > 0 ? ps->sample[0] : -1;
    for (int64_t p0 = 0; p0 < count; p0 += 8) {
      __m256 col[8];
      for (int i = 0; i < 8; ++i)
        col[i] = _mm256_loadu_ps(tmp + (p0 + i) * kPanel + l0);
      transpose8x8(col);
      const int64_t* po = poff + p0;
      const uint8_t kind = kinds[p0 / 8];
      const int64_t m = std::min<int64_t>(8, count - p0);
      // the group's pixels all of the current sample: lane sums
      bool lanes = false;
      if (kSums) {
        const int64_t s0 = ps->sample[p0], s1 = ps->sample[p0 + m - 1];
        if (s0 == s1 && s0 != cur) {
          fold_lanes8(acc, ps->part + cur * ps->c_out + ps->j0 + l0, r8);
          cur = s0;
        }
        lanes = s0 == s1 && kind != kScalar;
      }
      for (int l = 0; l < 8; ++l) {
        const float* id = ident + (l0 + l) * plane;
        float* o = out + (l0 + l) * plane;
        const __m256 c = _mm256_add_ps(col[l], b[l]);
        if (kind == kRun8) {
          const __m256 v = _mm256_max_ps(
              zero, _mm256_add_ps(_mm256_loadu_ps(id + po[0]), c));
          _mm256_storeu_ps(o + po[0], v);
          if (kSums && lanes) acc[l] = _mm256_add_ps(acc[l], v);
        } else if (kind == kRun4) {
          const __m128 lo = _mm256_castps256_ps128(c);
          const __m128 hi = _mm256_extractf128_ps(c, 1);
          const __m128 vlo = _mm_max_ps(
              zero4, _mm_add_ps(_mm_loadu_ps(id + po[0]), lo));
          const __m128 vhi = _mm_max_ps(
              zero4, _mm_add_ps(_mm_loadu_ps(id + po[4]), hi));
          _mm_storeu_ps(o + po[0], vlo);
          _mm_storeu_ps(o + po[4], vhi);
          if (kSums && lanes)
            acc[l] = _mm256_add_ps(acc[l], _mm256_set_m128(vhi, vlo));
          else if (kSums)
            for (int i = 0; i < 8; ++i) {
              const float v = i < 4 ? o[po[0] + i] : o[po[4] + i - 4];
              ps->row(p0 + i)[l0 + l] += v;
            }
        } else {
          _mm256_store_ps(v8, c);
          for (int64_t i = 0; i < m; ++i) {
            const float v = relu_of(id[po[i]] + v8[i]);
            o[po[i]] = v;
            if (kSums) ps->row(p0 + i)[l0 + l] += v;
          }
        }
      }
    }
    if (kSums && count > 0)
      fold_lanes8(acc, ps->part + cur * ps->c_out + ps->j0 + l0, r8);
  }
}

// row[16 v + i] += acc[v][i] for v < NV, acc zeroed.
template <int NV>
LAUD_TARGET("avx512f") inline void fold_rows16(__m512* acc, float* row) {
  for (int v = 0; v < NV; ++v) {
    _mm512_storeu_ps(row + 16 * v,
                     _mm512_add_ps(_mm512_loadu_ps(row + 16 * v), acc[v]));
    acc[v] = _mm512_setzero_ps();
  }
}

// The channels_last epilogue: out[poff[p] + l] = relu(ident[poff[p] + l] +
// tmp[p][l] + bias[l]) for p < count, l < 16 NV (NV 16-lane vectors, at
// most kPanel / 16); poff holds the pixels' row offsets (pixel x C_out),
// out and ident start at the panel's first channel. The same arithmetic
// as add_relu_scattered_avx2 (ident + (tmp + bias)), so the values equal
// the NCHW ones bit for bit. kSums: the values written are also added
// into ps's rows, a sample's run of pixels in registers first: NV (> 0)
// the vector count as a template argument, so that the accumulators stay
// in registers (NV = 0: wdt / 16 at run time, the loop without sums).
template <int NV, bool kSums>
LAUD_TARGET("avx512f") void add_relu_rows_scattered_avx512(
    const float* tmp, const int64_t* poff, int64_t count, int wdt,
    const float* bias, const float* ident, float* out,
    const PanelSums* ps) {
  static_assert(NV > 0 || !kSums, "sums need the vector count");
  const __m512 zero = _mm512_setzero_ps();
  const int nv = NV > 0 ? NV : wdt / 16;
  __m512 b[kPanel / 16], acc[kPanel / 16];
  for (int v = 0; v < nv; ++v) {
    b[v] = _mm512_loadu_ps(bias + 16 * v);
    acc[v] = zero;
  }
  int64_t cur = kSums && count > 0 ? ps->sample[0] : -1;
  for (int64_t p = 0; p < count; ++p) {
    const float* id = ident + poff[p];
    float* o = out + poff[p];
    const float* t = tmp + p * kPanel;
    if (kSums && ps->sample[p] != cur) {
      fold_rows16<NV>(acc, ps->part + cur * ps->c_out + ps->j0);
      cur = ps->sample[p];
    }
    for (int v = 0; v < nv; ++v) {
      const __m512 c = _mm512_add_ps(_mm512_loadu_ps(t + 16 * v), b[v]);
      // max(0, v): NaN stays NaN, as relu_of
      const __m512 r = _mm512_max_ps(
          zero, _mm512_add_ps(_mm512_loadu_ps(id + 16 * v), c));
      _mm512_storeu_ps(o + 16 * v, r);
      if (kSums) acc[v] = _mm512_add_ps(acc[v], r);
    }
  }
  if (kSums && count > 0)
    fold_rows16<NV>(acc, ps->part + cur * ps->c_out + ps->j0);
}

// add_relu_rows_scattered_avx512 for wdt channels (16 - kPanel), with
// sums where ps is given.
void rows_epilogue_avx512(const float* tmp, const int64_t* poff,
                          int64_t count, int wdt, const float* bias,
                          const float* ident, float* out,
                          const PanelSums* ps) {
  static_assert(kPanel == 64, "one instance per vector count up to 4");
  if (!ps)
    return add_relu_rows_scattered_avx512<0, false>(tmp, poff, count, wdt,
                                                    bias, ident, out, ps);
  switch (wdt / 16) {
    case 1:
      return add_relu_rows_scattered_avx512<1, true>(tmp, poff, count, wdt,
                                                     bias, ident, out, ps);
    case 2:
      return add_relu_rows_scattered_avx512<2, true>(tmp, poff, count, wdt,
                                                     bias, ident, out, ps);
    case 3:
      return add_relu_rows_scattered_avx512<3, true>(tmp, poff, count, wdt,
                                                     bias, ident, out, ps);
    default:
      return add_relu_rows_scattered_avx512<4, true>(tmp, poff, count, wdt,
                                                     bias, ident, out, ps);
  }
}
#endif

// The same without AVX-512, with add_relu_scattered_generic's arithmetic
// ((ident + tmp) + bias), and its sums with ps.
void add_relu_rows_scattered_generic(const float* tmp, const int64_t* poff,
                                     int64_t count, int wdt,
                                     const float* bias, const float* ident,
                                     float* out, const PanelSums* ps) {
  for (int64_t p = 0; p < count; ++p) {
    const float* id = ident + poff[p];
    float* o = out + poff[p];
    float* row = ps ? ps->row(p) : nullptr;
    for (int l = 0; l < wdt; ++l) {
      o[l] = relu_of(id[l] + tmp[p * kPanel + l] + bias[l]);
      if (row) row[l] += o[l];
    }
  }
}

struct Weights {
  const float *w1p, *b1, *w2p, *b2, *w3p, *b3;
};

// The work of one call, a pure function of (idx, geometry, threads):
//   patches: (sample, gi, gj) of idx; pstart: prefix of their output pixels
//   (edge patches may be partial): the phase-2 sequence, patch by patch;
//   rows: per (sample, input row) the merged column intervals the active
//   patches' conv2 windows need (iv, niv) and row_start, the prefix of their
//   pixels: the phase-1 sequence, sample by sample in raster order;
//   b1 / b2: the threads' ranges of the two sequences.
struct SpatialPlan {
  std::vector<int64_t> patches, pstart, row_start, b1, b2;
  std::vector<uint8_t> act;
  std::vector<int32_t> iv, niv;
  int64_t parts = 1;
  int64_t in_pixels() const { return row_start.back(); }
  int64_t out_pixels() const { return pstart.back(); }
};

// Alignment of the threads' ranges (pixels). conv1: any pixel (a range's
// last tile may be partial). Phase 2 with S >= 4: whole 8-pixel blocks of
// the epilogue, which then hold runs of 4 / 8 adjacent pixels (two rows of
// a 4 x 4 patch) and take the vector moves, when every thread gets at
// least kAlign2MinPixels pixels (a boundary then moves by at most 4 of
// them); with fewer (many threads on a small map: a layer block's 7 x 7
// maps, a patch per kept sample) whole blocks would leave threads idle, so
// any pixel, as for S = 1, 2, whose runs are shorter and go per pixel
// anyway. The result does not depend on the alignment (every pixel's sums
// run in the same order).
constexpr int64_t kAlign1 = 1;
constexpr int64_t kAlign2MinPixels = 64;
inline int64_t phase2_align(int64_t S, int64_t pixels, int64_t parts) {
  return S >= 4 && pixels >= kAlign2MinPixels * parts ? 8 : 1;
}

// Fills `pl` for `parts` threads. Rows are planned in parallel; the rest is
// O(P + N x H).
void plan_spatial(const SpatialGeometry& g, const int64_t* ix, int64_t P,
                  int64_t parts, SpatialPlan& pl) {
  const int64_t S = g.S, st = g.stride, d = g.dil;
  pl.parts = parts;
  pl.patches.resize(3 * P);
  pl.pstart.resize(P + 1);
  pl.act.assign(g.n * g.gh * g.gw, 0);
  pl.pstart[0] = 0;
  for (int64_t p = 0; p < P; ++p) {
    const int64_t s = ix[3 * p], gi = ix[3 * p + 1], gj = ix[3 * p + 2];
    pl.patches[3 * p] = s;
    pl.patches[3 * p + 1] = gi;
    pl.patches[3 * p + 2] = gj;
    pl.act[(s * g.gh + gi) * g.gw + gj] = 1;
    const int64_t ph = std::min(g.ho, gi * S + S) - gi * S;
    const int64_t pw = std::min(g.wo, gj * S + S) - gj * S;
    pl.pstart[p + 1] = pl.pstart[p] + ph * pw;
  }
  const int64_t rows = g.n * g.h;
  pl.iv.resize(rows * 2 * g.gw);
  pl.niv.resize(rows);
  pl.row_start.resize(rows + 1);
  const int64_t step = S * st;
  // last output row of patch row gi, as an input row reach (inclusive)
  auto reach = [&](int64_t gi) {
    return (std::min(g.ho, gi * S + S) - 1) * st + d;
  };
  int64_t* rcount = pl.row_start.data() + 1;
  at::parallel_for(0, rows, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / g.h, iy = r - n * g.h;
      int32_t* out_iv = pl.iv.data() + r * 2 * g.gw;
      int32_t m = 0;
      int64_t cnt = 0;
      const int64_t gi_hi = std::min(g.gh - 1, (iy + d) / step);
      int64_t gi_lo = gi_hi + 1;
      while (gi_lo > 0 && reach(gi_lo - 1) >= iy) --gi_lo;
      if (gi_lo <= gi_hi) {
        const uint8_t* a0 = pl.act.data() + n * g.gh * g.gw;
        int64_t cur0 = -1, cur1 = -1;
        for (int64_t gj = 0; gj < g.gw; ++gj) {
          bool on = false;
          for (int64_t gi = gi_lo; gi <= gi_hi && !on; ++gi)
            on = a0[gi * g.gw + gj] != 0;
          if (!on) continue;
          const int64_t x0 = gj * S, x1 = std::min(g.wo, x0 + S);
          const int64_t ix0 = std::max<int64_t>(0, x0 * st - d);
          const int64_t ix1 = std::min<int64_t>(g.w, (x1 - 1) * st + d + 1);
          if (cur1 >= ix0) {
            cur1 = std::max(cur1, ix1);
          } else {
            if (cur1 > cur0) {
              out_iv[2 * m] = static_cast<int32_t>(cur0);
              out_iv[2 * m + 1] = static_cast<int32_t>(cur1);
              ++m;
              cnt += cur1 - cur0;
            }
            cur0 = ix0;
            cur1 = ix1;
          }
        }
        if (cur1 > cur0) {
          out_iv[2 * m] = static_cast<int32_t>(cur0);
          out_iv[2 * m + 1] = static_cast<int32_t>(cur1);
          ++m;
          cnt += cur1 - cur0;
        }
      }
      pl.niv[r] = m;
      rcount[r] = cnt;
    }
  });
  pl.row_start[0] = 0;
  for (int64_t r = 0; r < rows; ++r) pl.row_start[r + 1] += pl.row_start[r];
  pl.b1.resize(parts + 1);
  pl.b2.resize(parts + 1);
  partition::even_bounds(pl.in_pixels(), parts, kAlign1, pl.b1.data());
  partition::even_bounds(pl.out_pixels(), parts,
                         phase2_align(S, pl.out_pixels(), parts),
                         pl.b2.data());
}

// Phase 1, one thread's range [b, e) of the input-pixel sequence: conv1
// (+ ReLU) into the pixel-major, zero-bordered buffer h1 (per sample
// hp x wpx x width floats, h1_stride apart).
void conv1_range(const SpatialGeometry& g, const SpatialPlan& pl, int64_t b,
                 int64_t e, const float* x, const Weights& wt, float* h1,
                 int64_t h1_stride, bool avx512) {
  if (b >= e) return;
  thread_local std::vector<int64_t> xo_buf, ho_buf, aoff_buf;
  const int64_t plane_in = g.h * g.w, wpx = g.wpx(), d = g.dil;
  const int64_t width = g.width, m = e - b;
  if (xo_buf.size() < static_cast<size_t>(m)) {
    xo_buf.resize(m);
    ho_buf.resize(m);
  }
  int64_t* xo = xo_buf.data();
  int64_t* hof = ho_buf.data();
  // the range's pixels: x offsets and h1 offsets
  const int64_t rows = g.n * g.h;
  int64_t r = std::upper_bound(pl.row_start.begin(),
                               pl.row_start.begin() + rows + 1, b) -
              pl.row_start.begin() - 1;
  int64_t k = 0, skip = b - pl.row_start[r];
  for (; k < m && r < rows; ++r) {
    const int64_t n = r / g.h, iy = r - n * g.h;
    const int32_t* iv = pl.iv.data() + r * 2 * g.gw;
    for (int32_t q = 0; q < pl.niv[r] && k < m; ++q) {
      int64_t x0 = iv[2 * q];
      const int64_t x1 = iv[2 * q + 1];
      if (skip >= x1 - x0) {
        skip -= x1 - x0;
        continue;
      }
      x0 += skip;
      skip = 0;
      for (int64_t ixx = x0; ixx < x1 && k < m; ++ixx, ++k) {
        xo[k] = g.nhwc ? (n * plane_in + iy * g.w + ixx) * g.c_in
                       : n * g.c_in * plane_in + iy * g.w + ixx;
        hof[k] = n * h1_stride + ((iy + d) * wpx + ixx + d) * width;
      }
    }
  }
  // With AVX-512, two or more panel blocks, a map of at least
  // kPixelMajorMinPixels pixels and a range of at least
  // kPixelMajorMinFloats input values, the range is taken in chunks of at most
  // kChunkFloats input values, each transposed run by run to pixel-major
  // (to_pixel_major) into a buffer that stays in L2 and read there by
  // every panel block's tiles: x is read once, in sequential streams.
  // Otherwise the tiles read x's NCHW rows in place (with one panel block
  // they read it once anyway: transposing the short runs of 56 x 56 maps
  // cost more than it saved, docs/benchmark_history.md, eleventh round).
  // (In NHWC the tiles read x's pixel rows in place, the layout those
  // chunks have.)
  const bool pixel_major = !g.nhwc && width > kPanel &&
                           pixel_major_input(avx512, plane_in, g.c_in, m);
  const int64_t chunk = pixel_major ? pixel_major_chunk(g.c_in) : m;
  thread_local std::vector<float> xt_buf;
  float* xt = pixel_major ? scratch(xt_buf, static_cast<size_t>(
                                                std::min(chunk, m) * g.c_in))
                          : nullptr;
  if (aoff_buf.size() < static_cast<size_t>(g.c_in)) aoff_buf.resize(g.c_in);
  int64_t* aoff = aoff_buf.data();
  for (int64_t c = 0; c < g.c_in; ++c)
    aoff[c] = pixel_major || g.nhwc ? c : c * plane_in;
  const float* a[kRows];
  float* y[kRows];
  for (int64_t c0 = 0; c0 < m; c0 += chunk) {
    const int64_t c1 = std::min(m, c0 + chunk);
#ifdef LAUD_X86
    if (pixel_major)  // run by run: maximal stretches of consecutive offsets
      for (int64_t k0 = c0, k1; k0 < c1; k0 = k1) {
        for (k1 = k0 + 1; k1 < c1 && xo[k1] == xo[k0] + (k1 - k0); ++k1) {
        }
        to_pixel_major(x + xo[k0], plane_in, g.c_in, k1 - k0,
                       xt + (k0 - c0) * g.c_in);
      }
#endif
    for (int64_t j0 = 0; j0 < width; j0 += kPanel) {
      const int nv =
          static_cast<int>(std::min<int64_t>(kPanel, width - j0) / kLanes);
      const float* pj = wt.w1p + g.c_in * j0;
      for (int64_t p0 = c0; p0 < c1; p0 += kRows) {
        const int r7 = static_cast<int>(std::min<int64_t>(kRows, c1 - p0));
        for (int i = 0; i < r7; ++i) {
          a[i] = pixel_major ? xt + (p0 + i - c0) * g.c_in : x + xo[p0 + i];
          y[i] = h1 + hof[p0 + i] + j0;
        }
        pick<kStoreRelu>(r7, nv, avx512)(a, aoff, pj, g.c_in, wt.b1 + j0, y,
                                         nullptr);
      }
    }
  }
}

// Output pixels per sub-range of phase 2: conv2's output of a sub-range
// (pixels x width floats) stays within 256 KiB (L2), a multiple of 8.
int64_t sub_range(int64_t width) {
  const int64_t px = (256 * 1024 / 4) / std::max<int64_t>(width, 1);
  return std::max<int64_t>(56, std::min<int64_t>(1024, px / 8 * 8));
}

// Phase 2, one thread's range [b, e) of the output-pixel sequence: conv2,
// conv3 and the add into out, in sub-ranges; with part (the thread's
// N x C_out partial sums, else null) the values written added into their
// sample's row.
void conv23_range(const SpatialGeometry& g, const SpatialPlan& pl, int64_t b,
                  int64_t e, const float* h1, int64_t h1_stride,
                  const Weights& wt, const float* ident, float* out,
                  float* part, bool avx512) {
  if (b >= e) return;
  thread_local std::vector<float> h2_buf, tmp_buf;
  thread_local std::vector<int64_t> hoff_buf, poff_buf, aoff_buf, samp_buf;
  thread_local std::vector<uint8_t> kind_buf;
  const int64_t width = g.width, wpx = g.wpx(), st = g.stride, S = g.S;
  const int64_t plane_out = g.ho * g.wo;
  const int64_t sub = sub_range(width);
  const int64_t cap = std::min(sub, e - b);
  const int64_t cap8 = (cap + 7) / 8 * 8;
  float* h2 = scratch(h2_buf, static_cast<size_t>(cap * width));
  float* tmp = scratch(tmp_buf, static_cast<size_t>(cap8 * kPanel));
  if (hoff_buf.size() < static_cast<size_t>(cap8)) {
    hoff_buf.resize(cap8);
    poff_buf.resize(cap8);
    samp_buf.resize(cap8);
    kind_buf.resize(cap8 / 8);
  }
  const int64_t kmax = std::max<int64_t>(9 * width, width);
  if (aoff_buf.size() < static_cast<size_t>(kmax)) aoff_buf.resize(kmax);
  int64_t* aoff = aoff_buf.data();
  int64_t* hoff = hoff_buf.data();
  int64_t* poff = poff_buf.data();
  int64_t* samp = samp_buf.data();
  uint8_t* kinds = kind_buf.data();
  const float* a[kRows];
  float* y[kRows];
  // patch cursor
  const int64_t P = static_cast<int64_t>(pl.pstart.size()) - 1;
  int64_t p = std::upper_bound(pl.pstart.begin(), pl.pstart.end(), b) -
              pl.pstart.begin() - 1;
  int64_t off = b - pl.pstart[p];
  for (int64_t s0 = b; s0 < e; s0 += sub) {
    const int64_t m = std::min(sub, e - s0);
    // the sub-range's pixels: h1 window origins and output offsets
    for (int64_t k = 0; k < m; ++k) {
      while (off >= pl.pstart[p + 1] - pl.pstart[p] && p < P - 1) {
        off -= pl.pstart[p + 1] - pl.pstart[p];
        ++p;
      }
      const int64_t n = pl.patches[3 * p], gi = pl.patches[3 * p + 1],
                    gj = pl.patches[3 * p + 2];
      const int64_t pw = std::min(g.wo, gj * S + S) - gj * S;
      const int64_t yo = gi * S + off / pw, xo = gj * S + off % pw;
      hoff[k] = n * h1_stride + ((yo * st) * wpx + xo * st) * width;
      poff[k] = g.nhwc ? (n * plane_out + yo * g.wo + xo) * g.c_out
                       : n * g.c_out * plane_out + yo * g.wo + xo;
      samp[k] = n;
      ++off;
    }
    // ---- conv2: A = h1 (nine shifted taps), K = 9 width
    tap_offsets(aoff, g.dil, wpx, width, width);
    for (int64_t j0 = 0; j0 < width; j0 += kPanel) {
      const int nv =
          static_cast<int>(std::min<int64_t>(kPanel, width - j0) / kLanes);
      const float* pj = wt.w2p + 9 * width * j0;
      for (int64_t p0 = 0; p0 < m; p0 += kRows) {
        const int r7 = static_cast<int>(std::min<int64_t>(kRows, m - p0));
        for (int i = 0; i < r7; ++i) {
          a[i] = h1 + hoff[p0 + i];
          y[i] = h2 + (p0 + i) * width + j0;
        }
        pick<kStoreRelu>(r7, nv, avx512)(a, aoff, pj, 9 * width,
                                         wt.b2 + j0, y, nullptr);
      }
    }
    // ---- conv3 per 64-channel panel into tmp, added into out
    if (!g.nhwc)
      for (int64_t p0 = 0; p0 < m; p0 += 8)
        kinds[p0 / 8] = run_kind(poff + p0, m - p0);
    for (int64_t c = 0; c < width; ++c) aoff[c] = c;
    for (int64_t j0 = 0; j0 < g.c_out; j0 += kPanel) {
      const int wdt =
          static_cast<int>(std::min<int64_t>(kPanel, g.c_out - j0));
      const int nv = wdt / kLanes;
      const float* pj = wt.w3p + width * j0;
      for (int64_t p0 = 0; p0 < m; p0 += kRows) {
        const int r7 = static_cast<int>(std::min<int64_t>(kRows, m - p0));
        for (int i = 0; i < r7; ++i) a[i] = h2 + (p0 + i) * width;
        pick<kTile>(r7, nv, avx512)(a, aoff, pj, width, nullptr, y,
                                    tmp + p0 * kPanel);
      }
      const PanelSums sums{part, samp, g.c_out, j0};
      const PanelSums* ps = part ? &sums : nullptr;
      if (g.nhwc) {
#ifdef LAUD_X86
        if (avx512) {
          rows_epilogue_avx512(tmp, poff, m, wdt, wt.b3 + j0, ident + j0,
                               out + j0, ps);
          continue;
        }
#endif
        add_relu_rows_scattered_generic(tmp, poff, m, wdt, wt.b3 + j0,
                                        ident + j0, out + j0, ps);
        continue;
      }
#ifdef LAUD_X86
      if (avx512) {  // AVX-512F implies AVX2
        (ps ? add_relu_scattered_avx2<true> : add_relu_scattered_avx2<false>)(
            tmp, poff, kinds, m, wdt, wt.b3 + j0, ident + j0 * plane_out,
            out + j0 * plane_out, plane_out, ps);
        continue;
      }
#endif
      add_relu_scattered_generic(tmp, poff, m, wdt, wt.b3 + j0,
                                 ident + j0 * plane_out,
                                 out + j0 * plane_out, plane_out, ps);
    }
  }
}

void check_idx(const at::Tensor& idx, const SpatialGeometry& g) {
  TORCH_CHECK(idx.scalar_type() == at::kLong && idx.dim() == 2 &&
                  idx.size(1) == 3 && idx.is_contiguous(),
              "idx must be a contiguous int64 (P, 3) tensor");
  const int64_t P = idx.size(0);
  const int64_t* ix = idx.data_ptr<int64_t>();
  for (int64_t p = 0; p < P; ++p) {
    TORCH_CHECK(ix[3 * p] >= 0 && ix[3 * p] < g.n && ix[3 * p + 1] >= 0 &&
                    ix[3 * p + 1] < g.gh && ix[3 * p + 2] >= 0 &&
                    ix[3 * p + 2] < g.gw,
                "idx row ", p, " lies outside the (N, gh, gw) patch grid");
    TORCH_CHECK(p == 0 || ix[3 * p] >= ix[3 * (p - 1)],
                "idx must be sorted by sample (as nonzero() returns it)");
  }
}

SpatialGeometry geometry(int64_t n, int64_t c_in, int64_t h, int64_t w,
                         int64_t width, int64_t c_out, int64_t S,
                         int64_t stride, int64_t dilation) {
  TORCH_CHECK(S >= 1 && stride >= 1 && dilation >= 1,
              "S, stride and dilation must be >= 1");
  SpatialGeometry g;
  g.n = n; g.c_in = c_in; g.h = h; g.w = w;
  g.width = width; g.c_out = c_out;
  g.ho = (h - 1) / stride + 1; g.wo = (w - 1) / stride + 1;
  g.stride = stride; g.dil = dilation; g.S = S;
  g.gh = (g.ho + S - 1) / S; g.gw = (g.wo + S - 1) / S;
  return g;
}

}  // namespace

void spatial_branch_add_relu_cpu(at::Tensor& out, const at::Tensor& x,
                                 const at::Tensor& identity,
                                 const at::Tensor& idx, const at::Tensor& w1p,
                                 const at::Tensor& b1, const at::Tensor& w2p,
                                 const at::Tensor& b2, const at::Tensor& w3p,
                                 const at::Tensor& b3, int64_t S,
                                 int64_t stride, int64_t dilation,
                                 bool identity_nonneg, bool force_generic,
                                 const at::Tensor& sums) {
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{
           &w1p, &b1, &w2p, &b2, &w3p, &b3})
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous(),
                "spatial_branch_add_relu: float32 contiguous tensors only");
  TORCH_CHECK(x.dim() == 4 && out.dim() == 4 && identity.dim() == 4,
              "x, identity and out must be 4-D");
  TORCH_CHECK(identity.sizes() == out.sizes(),
              "identity and out must have the same shape");
  // NCHW, or channels_last for x, identity and out (a tensor that is both,
  // one pixel or one channel, counts as NCHW; identity and out then follow
  // x's layout)
  const bool nhwc = !x.is_contiguous() &&
                    x.is_contiguous(at::MemoryFormat::ChannelsLast);
  const auto fmt = nhwc ? at::MemoryFormat::ChannelsLast
                        : at::MemoryFormat::Contiguous;
  for (const at::Tensor* t :
       std::initializer_list<const at::Tensor*>{&out, &x, &identity})
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous(fmt),
                "spatial_branch_add_relu: x, identity and out must be "
                "float32, all contiguous or all channels_last");
  SpatialGeometry g =
      geometry(x.size(0), x.size(1), x.size(2), x.size(3), b1.size(0),
               out.size(1), S, stride, dilation);
  g.nhwc = nhwc;
  TORCH_CHECK(out.size(0) == g.n, "out must have x's batch size");
  TORCH_CHECK(g.width % kLanes == 0 && g.c_out % kLanes == 0,
              "width and C_out must be multiples of 16");
  TORCH_CHECK(w1p.numel() == g.c_in * g.width &&
                  w2p.numel() == 9 * g.width * g.width &&
                  w3p.numel() == g.width * g.c_out && b2.numel() == g.width &&
                  b3.numel() == g.c_out,
              "packed weights must hold C_in x width, 9 width x width and "
              "width x C_out floats, b2 width and b3 C_out");
  TORCH_CHECK(out.size(2) == g.ho && out.size(3) == g.wo,
              "out's spatial size does not match conv2's output");
  const bool aliased = out.data_ptr() == identity.data_ptr();
  TORCH_CHECK(aliased || out.data_ptr() != x.data_ptr(),
              "out may alias x only together with identity (an identity "
              "block written in place)");
  check_idx(idx, g);
  const bool with_sums = sums.defined();
  if (with_sums)
    TORCH_CHECK(sums.scalar_type() == at::kFloat && sums.is_contiguous() &&
                    sums.dim() == 2 && sums.size(0) == g.n &&
                    sums.size(1) == g.c_out,
                "sums must be a contiguous float32 (N, C_out) tensor");
  if (g.n == 0) return;
  const int64_t P = idx.size(0);
  const int64_t parts = std::max<int64_t>(1, at::get_num_threads());
  // the caller's plan and conv1 buffer: reused between calls, only grow
  // (a thread_local named in the lambdas below would be each worker's own:
  // they use this reference to the caller's)
  thread_local SpatialPlan caller_plan;
  SpatialPlan& pl = caller_plan;
  thread_local std::vector<float> h1_buf;
  plan_spatial(g, idx.data_ptr<int64_t>(), P, parts, pl);
  const bool relu_before = !aliased;
  const bool relu_after = aliased && !identity_nonneg;
  const bool avx512 = cpu_avx512f() && !force_generic;
  const Weights wt{w1p.data_ptr<float>(), b1.data_ptr<float>(),
                   w2p.data_ptr<float>(), b2.data_ptr<float>(),
                   w3p.data_ptr<float>(), b3.data_ptr<float>()};
  const float* xp = x.data_ptr<float>();
  const float* ip = identity.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t total_out = g.n * g.c_out * g.ho * g.wo;
  const int64_t h1_stride = g.hp() * g.wpx() * g.width;
  float* h1 = P > 0 ? scratch(h1_buf, static_cast<size_t>(g.n * h1_stride))
                    : nullptr;
  // phase 1: conv1 on the dilated mask, the buffer's border, relu(identity)
  at::parallel_for(0, parts, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      if (P > 0) {
        for (int64_t s = t; s < g.n; s += parts)
          zero_border(h1 + s * h1_stride, g.hp(), g.wpx(), g.dil, g.width);
        conv1_range(g, pl, pl.b1[t], pl.b1[t + 1], xp, wt, h1, h1_stride,
                    avx512);
      }
      if (relu_before) {
        const int64_t e0 = total_out * t / parts;
        const int64_t e1 = total_out * (t + 1) / parts;
        relu_copy(op + e0, ip + e0, e1 - e0);
      }
    }
  });
  // phase 2: conv2, conv3 and the add at the active pixels (with sums,
  // each thread's sums of the values it writes, added up in thread order)
  // (each thread zeroes its own partial rows: no serial pass over them)
  thread_local std::vector<float> part_buf;
  const int64_t row = g.n * g.c_out;
  float* part = with_sums && P > 0
                    ? scratch(part_buf, static_cast<size_t>(parts * row))
                    : nullptr;
  if (P > 0) {
    at::parallel_for(0, parts, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        if (with_sums) std::fill(part + t * row, part + (t + 1) * row, 0.f);
        conv23_range(g, pl, pl.b2[t], pl.b2[t + 1], h1, h1_stride, wt, ip,
                     op, with_sums ? part + t * row : nullptr, avx512);
      }
    });
    if (with_sums)
      row_epilogue::add_partials(part, parts, row, sums.data_ptr<float>());
  } else if (with_sums) {
    sums.zero_();
  }
  // phase 3: the ReLU of an in-place identity that may be negative
  if (relu_after) {
    at::parallel_for(0, parts, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t e0 = total_out * t / parts;
        const int64_t e1 = total_out * (t + 1) / parts;
        relu_copy(op + e0, op + e0, e1 - e0);
      }
    });
  }
}

// Per-thread work of spatial_branch_add_relu_cpu's plan for `threads`
// threads, without running it: a (2, threads) float64 tensor, row 0 the
// MACs of phase 1 (c_in x width per conv1 input pixel), row 1 those of
// phase 2 (9 width^2 + width C_out per active output pixel). The phases are
// separated by a barrier, so the kernel's time is bounded by the sum over
// the phases of the busiest thread's work.
at::Tensor spatial_partition_work(const at::Tensor& idx, int64_t n,
                                  int64_t c_in, int64_t h, int64_t w,
                                  int64_t width, int64_t c_out, int64_t S,
                                  int64_t stride, int64_t dilation,
                                  int64_t threads) {
  TORCH_CHECK(threads >= 1, "threads must be >= 1");
  TORCH_CHECK(n >= 0 && c_in >= 1 && h >= 1 && w >= 1 && width >= 1 &&
                  c_out >= 1,
              "sizes must be positive (n >= 0)");
  const SpatialGeometry g =
      geometry(n, c_in, h, w, width, c_out, S, stride, dilation);
  check_idx(idx, g);
  SpatialPlan pl;
  plan_spatial(g, idx.data_ptr<int64_t>(), idx.size(0), threads, pl);
  at::Tensor res = at::zeros({2, threads}, at::kDouble);
  double* r = res.data_ptr<double>();
  const double mac1 = 1. * c_in * width;
  const double mac2 = 9. * width * width + 1. * width * c_out;
  for (int64_t t = 0; t < threads; ++t) {
    r[t] = mac1 * static_cast<double>(pl.b1[t + 1] - pl.b1[t]);
    r[threads + t] = mac2 * static_cast<double>(pl.b2[t + 1] - pl.b2[t]);
  }
  return res;
}

}  // namespace laud_mm
