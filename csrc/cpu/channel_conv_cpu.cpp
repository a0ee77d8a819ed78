// C++ CPU kernel for LAUDNet channel skipping: the whole sparse branch of a
// channel-skipping bottleneck (conv1 -> ReLU -> conv2 -> ReLU -> conv3, BN
// folded), accumulated into the shortcut with the final ReLU, computing only
// each sample's kept channels.
//
// channel_branch_add_relu_cpu(out, x, chs, counts, w1t, b1, w2t, b2, w3p, b3,
//                             stride, padding, dilation):
//   for every sample n with kept channels K_n = chs[n, :counts[n]]:
//     h1 = relu(W1[K_n] x_n + b1[K_n])                       (1x1)
//     h2 = relu(W2[K_n, K_n] * h1 + b2[K_n])                 (3x3)
//     out_n = relu(out_n + W3[:, K_n] h2 + b3)               (1x1, in place)
//   which is the masked-dense block (a dropped channel's activations are 0).
//
// Why a kernel: the per-sample products are thin. At 7 x 7 (ResNet stage 4)
// a sample's conv1 is a (k x C_in) x (C_in x 49) GEMM, which MKL runs far
// below the efficiency of the static network's batched GEMMs, so channel
// skipping barely pays there with batched GEMMs (1.06 - 1.08x for the 7 x 7
// blocks at r = 0.5: docs/benchmark_history.md, "Per block" table, channel
// column, tools/analysis_tools/benchmark_latency.py --per-block). This
// kernel puts the *output channels* on the vector lanes: a
// tile is 7 output pixels x 64 kept output channels (28 AVX-512
// accumulators); the pixels' input values are broadcast, so any pixel set
// and input layout (conv1's input in NCHW, or transposed to pixel-major
// in L2-sized chunks on maps larger than the row-blocked ones; the
// zero-bordered pixel-major conv1 output for conv2's nine taps, stride and
// dilation included) is read the same way, and 49 pixels are exactly seven
// tiles. The kept weights of
// conv1 and conv2 are first gathered into per-sample panels (64 output
// channels wide, contiguous for the tiles) in one pass over the weights
// shared by all samples (gather_all; a pass per sample would read the
// weights once per sample). On small maps (conv1 on input maps of at most
// kBlockedMaxPixels1 pixels, conv2 and conv3 on output maps of at most
// kBlockedMaxPixels2) a phase instead runs row-blocked: the weight rows in
// blocks of about 256 KB, each block's panel gathered by every sample of
// the thread just before its tiles, while the block sits in L2, the sums
// split over the blocks in their unsplit order (conv1_blocked,
// conv23_blocked). With AVX-512 a row's kept
// columns are copied as chunks of 16 source columns, compressed in a
// register (ColChunks), where that takes fewer instructions than moving
// them one by one (or pair by pair). conv3 runs per 64-channel
// panel of its weight (w3p: W3 transposed, in 64-column panels), whose
// kept rows the tiles read in place, over the pixels into a pixel-major
// buffer, then one pass adds it into out's
// channel rows with 8 x 8 in-register transposes (add_relu_transposed_avx2;
// a scalar epilogue per tile is memory- and branch-bound).
// x and out may instead both be channels_last (NHWC, Geometry::nhwc): a
// pixel's channels are then contiguous as in the tiles' rows, so conv1
// reads x in place (no pixel-major chunks) and conv3's rows are added
// with plain vector adds (add_relu_rows_avx512); the same sums in the
// same order, so out holds the same values bit for bit in either layout
// (the channel sums for the next masker may differ in the last bits).
//
// Threads (partition.h): three phases over the whole batch, separated by
// barriers:
//   0. the panel gathers, over blocks of 16 weight rows (conv1) and (tap,
//      16-channel block) pairs (conv2), every sample's panels per item
//      (only for the phases that are not row-blocked);
//   1. conv1 over the batch's input pixels (sample-major), cut into one
//      contiguous range per thread of near-equal cost (a sample's pixel
//      costs C_in x its padded kept count); with it the conv1 buffers'
//      zero border;
//   2. conv2, conv3 and the add over the output pixels, cost per pixel
//      9 k kp + k C_out + the epilogue's kEpilogueMacs C_out, in
//      sub-ranges whose conv2 output stays in L2 (row-blocked: all of the
//      thread's pixels at once, at most kBlockedMaxPixels2 a sample).
// A range may span samples and a sample may span ranges, so one sample
// (batch 1) splits over all threads.
// Column split (fewer samples than threads, output maps of at most
// kColumnMaxPixels pixels, conv1's input of at most kBlockedMaxPixels1):
// split by pixels, every thread would need the whole of its samples'
// panels (gathered up front, then read by each thread). Instead the
// threads split each sample's columns, in units of 16, every phase
// row-blocked, each thread gathering only its own columns' panels:
//   1. conv1 over (sample, kept output channels) units, all pixels;
//   2. conv2 likewise, into a buffer all threads share;
//   3. conv3 and the add over (sample, output channels) units, cost
//      p_out (k + kEpilogueMacs) per channel.
// A channel's sums then run over all of its pixels in one thread, so the
// output channel sums (sums) are the one-thread result as well.
// Every pixel's sums run in the same order whatever the partition: the
// result is the same bit for bit at any thread count. The serial work is
// O(N k) bookkeeping (plan_channel); buffers only grow.
// channel_partition_work exposes the same plan.
//
// The AVX-512 tile kernel is compiled with a target attribute and chosen at
// run time; without AVX-512F the same loops run on plain arrays (the
// compiler's vectorisation; correct, not tuned): laud_mm.ops reports which
// (channel_branch_isa) and laud_mm/models/resnet/dynamic.py uses this kernel only
// where it is the fast one.
//
// Source: LAUDNet paper sec. 3.2 (channel skipping), sec. 3.4 (scheduling:
// weights gathered per sample, conv3 fused with the residual add); Python API
// and reference in laud_mm/ops/channel_conv.py.
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

// cost of conv3's epilogue per output element, in MACs of the tiles (a
// transposed load, a read-modify-write of out: about a cycle an element
// against 32 MACs a cycle for the FMAs); only weighs samples with
// different kept counts against each other
constexpr double kEpilogueMacs = 16.;
// the threads' ranges start at any pixel (a sample's pixels cost up to
// 9 k kp + k C_out MACs each: coarser ranges would unbalance a sample that
// keeps many channels; a range's last tile and epilogue block may be
// partial)
constexpr int64_t kAlign1 = 1;
constexpr int64_t kAlign2 = 1;
// Phases that run row-blocked (conv1_blocked, conv23_blocked) instead of
// on panels gathered up front for the whole batch (gather_all): conv1 on
// input maps of at most kBlockedMaxPixels1 pixels, conv2 and conv3 on
// output maps of at most kBlockedMaxPixels2 (7 x 7 and 14 x 14 at 224 px).
// On such maps a panel block serves few tiles (7 on a 7 x 7 map, 28 on
// 14 x 14), and the batch's panels (N C_in kp floats for conv1, N 9 k kp
// for conv2: about 50 and 13 MB at R50 stages 4 and 3, conv2's 28 and 8
// MB of them, batch 8, r = 0.5) would go out of L2 and back; row-blocked,
// a tile reads its weight block from L1 instead of a 64-column panel of
// 9 k rows (370 KB at stage 3) from L2. Larger maps reuse a panel over
// enough tiles that the up-front gather pays (the measurements behind the
// thresholds: docs/benchmark_history.md, thirteenth round, and
// docs/benchmarks.md, "Row-blocked conv2 on 14 x 14 outputs").
constexpr int64_t kBlockedMaxPixels1 = 196;
constexpr int64_t kBlockedMaxPixels2 = 196;
// The column split (ChannelPlan::colsplit) runs on output maps of at most
// this many pixels (7 x 7 at 224 px): at batch 1 on 14 x 14 outputs it
// was slower than the pixel split with panels gathered up front
// (docs/benchmarks.md, "Row-blocked conv2 on 14 x 14 outputs").
constexpr int64_t kColumnMaxPixels = 49;
// The column split (ChannelPlan::colsplit) needs at least this many units
// of 16 kept columns per thread, summed over the batch: fewer leave
// threads idle in conv1 and conv2.
constexpr int64_t kColUnits = 4;

#ifdef LAUD_X86
// conv3's epilogue, vectorised: o[l][p] = relu(o[l][p] + tmp[p][l] +
// bias[l]) for pixels p < count and channels l < wdt (a multiple of 8),
// o[l] = out + l * stride; tmp has count rows of kPanel, rounded up to 8.
// Blocks of 8 pixels x 8 channels of tmp are transposed in registers, so
// each channel row of out is read and written in 8-float runs; a pass per
// panel, not per 7-pixel tile, keeps 8 sequential streams (a scalar loop
// per tile costs about a fifth of an R50 stage-3 block at r = 0.25, by
// perf).
LAUD_TARGET("avx2") inline float hsum_avx2(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// ... and with csum non-null, csum[l] += the sum over the count pixels of
// the new o[l] (the output's channel sums, for the next block's masker).
LAUD_TARGET("avx2") void add_relu_transposed_avx2(
    const float* tmp, int64_t count, int wdt, const float* bias, float* out,
    int64_t stride, float* csum) {
  const int64_t tail = count % 8;
  alignas(32) int32_t lanes[8];
  for (int i = 0; i < 8; ++i) lanes[i] = i < tail ? -1 : 0;
  const __m256i mask = _mm256_load_si256(reinterpret_cast<const __m256i*>(lanes));
  const __m256 fmask = _mm256_castsi256_ps(mask);
  const __m256 zero = _mm256_setzero_ps();
  for (int l0 = 0; l0 < wdt; l0 += 8) {
    __m256 b[8], acc[8];
    for (int l = 0; l < 8; ++l) {
      b[l] = _mm256_set1_ps(bias[l0 + l]);
      acc[l] = zero;
    }
    for (int64_t p0 = 0; p0 < count; p0 += 8) {
      __m256 col[8];
      for (int i = 0; i < 8; ++i)
        col[i] = _mm256_loadu_ps(tmp + (p0 + i) * kPanel + l0);
      transpose8x8(col);
      const bool full = p0 + 8 <= count;
      for (int l = 0; l < 8; ++l) {
        float* o = out + (l0 + l) * stride + p0;
        const __m256 v0 = full ? _mm256_loadu_ps(o) : _mm256_maskload_ps(o, mask);
        // max(0, v): NaN stays NaN, as relu_of
        const __m256 v = _mm256_max_ps(
            zero, _mm256_add_ps(_mm256_add_ps(v0, col[l]), b[l]));
        if (full)
          _mm256_storeu_ps(o, v);
        else
          _mm256_maskstore_ps(o, mask, v);
        // lanes past count hold tmp's padding rows: not summed
        if (csum != nullptr)
          acc[l] = _mm256_add_ps(acc[l], full ? v : _mm256_and_ps(v, fmask));
      }
    }
    if (csum != nullptr)
      for (int l = 0; l < 8; ++l) csum[l0 + l] += hsum_avx2(acc[l]);
  }
}

// The same epilogue for channels_last output: pixel p's channels at o0 +
// p * stride, contiguous like tmp's rows, so a row is wdt / 16 vector
// adds (wdt a multiple of 16, at most kPanel). The values are those of
// add_relu_transposed_avx2 bit for bit ((o + tmp) + bias, then the ReLU);
// csum's sums run in another order (per lane over the pixels).
LAUD_TARGET("avx512f") void add_relu_rows_avx512(
    const float* tmp, int64_t count, int wdt, const float* bias, float* o0,
    int64_t stride, float* csum) {
  const int nv = wdt / 16;
  const __m512 zero = _mm512_setzero_ps();
  __m512 b[kPanel / 16], acc[kPanel / 16];
  for (int v = 0; v < nv; ++v) {
    b[v] = _mm512_loadu_ps(bias + 16 * v);
    acc[v] = zero;
  }
  for (int64_t p = 0; p < count; ++p) {
    float* o = o0 + p * stride;
    const float* t = tmp + p * kPanel;
    for (int v = 0; v < nv; ++v) {
      // max(0, v): NaN stays NaN, as relu_of
      const __m512 r = _mm512_max_ps(
          zero, _mm512_add_ps(_mm512_add_ps(_mm512_loadu_ps(o + 16 * v),
                                            _mm512_loadu_ps(t + 16 * v)),
                              b[v]));
      _mm512_storeu_ps(o + 16 * v, r);
      acc[v] = _mm512_add_ps(acc[v], r);
    }
  }
  if (csum != nullptr)
    for (int v = 0; v < nv; ++v)
      _mm512_storeu_ps(csum + 16 * v,
                       _mm512_add_ps(_mm512_loadu_ps(csum + 16 * v), acc[v]));
}
#endif


struct Geometry {
  int64_t n, c_in, h, w, width, c_out, ho, wo, stride, pad, dil;
  // x and out channels_last (NHWC): a pixel's channels contiguous, which is
  // the layout the tiles read and write, so conv1 reads x in place and
  // conv3's results are added row by row (no transposition either way)
  bool nhwc = false;
  int64_t hp() const { return h + 2 * pad; }
  int64_t wpx() const { return w + 2 * pad; }
  // x's offset of channel c of pixel p within a sample, and of pixel p's
  // first channel (a tile's row): NCHW c * h * w + p, NHWC p * c_in + c
  int64_t x_chan(int64_t c) const { return nhwc ? c : c * h * w; }
  int64_t x_pix(int64_t p) const { return nhwc ? p * c_in : p; }
};

// The kept columns of one panel block, cols[0, kv) (strictly ascending),
// as chunks of 16 source columns counted from c0 = cols[0]: chunk i covers
// src[c0 + 16 chunk[i], + 16), mask[i] marks its kept lanes, which land,
// compressed, at dst[off[i], off[i] + count). A row is then n masked
// loads, register compresses and masked stores instead of kv / 2 pair
// moves (kv scalar moves), each of which loads on its own: a 64-wide block
// of R50 stage 4 at r = 0.5 (G = 2) spans about 110 source columns, 7
// chunks against 32 moves (docs/benchmark_history.md, tenth round). n = 0: not
// used (no AVX-512, columns not ascending, or chunks no cheaper than the
// moves).
struct ColChunks {
  int64_t c0 = 0;
  int n = 0;
  int32_t chunk[kPanel];
  int32_t off[kPanel];
  uint16_t mask[kPanel];
  uint16_t store[kPanel];  // (1 << count) - 1: the compressed lanes
};

inline void build_chunks(const int32_t* cols, int64_t kv, bool pairs,
                         ColChunks& p) {
  p.n = 0;
  if (kv <= 0 || kv > kPanel) return;
  for (int64_t l = 1; l < kv; ++l)
    if (cols[l] <= cols[l - 1]) return;
  p.c0 = cols[0];
  int n = 0;
  int32_t cur = -1;
  for (int64_t l = 0; l < kv; ++l) {
    const int32_t c = cols[l] - static_cast<int32_t>(p.c0);
    if ((c >> 4) != cur) {
      cur = c >> 4;
      p.chunk[n] = cur;
      p.off[n] = static_cast<int32_t>(l);
      p.mask[n] = 0;
      ++n;
    }
    p.mask[n - 1] = static_cast<uint16_t>(p.mask[n - 1] | (1u << (c & 15)));
  }
  for (int i = 0; i < n; ++i) {
    const int32_t count = (i + 1 < n ? p.off[i + 1] : static_cast<int32_t>(kv)) - p.off[i];
    p.store[i] = static_cast<uint16_t>((1u << count) - 1u);
  }
  // three instructions a chunk against two a pair move (one a scalar move)
  if (3 * n <= (pairs ? kv : 2 * kv)) p.n = n;
}

#ifdef LAUD_X86
// d[off[i] ...] = the kept lanes of src chunk i, for every chunk of p
// (p.n > 0). Masked-off lanes are neither read nor written (a chunk may
// reach past the end of the source matrix).
LAUD_TARGET("avx512f")
void copy_chunks_avx512(float* d, const float* s, const ColChunks& p) {
  const float* b = s + p.c0;
  for (int i = 0; i < p.n; ++i) {
    const __mmask16 m = p.mask[i];
    const __m512 v = _mm512_maskz_compress_ps(
        m, _mm512_maskz_loadu_ps(m, b + 16 * static_cast<int64_t>(p.chunk[i])));
    _mm512_mask_storeu_ps(d + p.off[i], p.store[i], v);
  }
}
#endif

// d[l] = s[cj[l]] for l < kv, 0 for kv <= l < wdt (pairs: cj[l + 1] ==
// cj[l] + 1 for even l < kv, a pair one 8-byte move; ch: the columns'
// chunks, used when ch->n > 0, which build_chunks allows only with
// AVX-512).
inline void copy_cols(float* d, const float* s, const int32_t* cj,
                      int64_t kv, int64_t wdt, bool pairs,
                      const ColChunks* ch) {
#ifdef LAUD_X86
  if (ch != nullptr && ch->n > 0) {
    copy_chunks_avx512(d, s, *ch);
  } else
#endif
  if (pairs) {
    for (int64_t l = 0; l < kv; l += 2) {
      uint64_t v;
      std::memcpy(&v, s + cj[l], 8);
      std::memcpy(d + l, &v, 8);
    }
  } else {
    for (int64_t l = 0; l < kv; ++l) d[l] = s[cj[l]];
  }
  for (int64_t l = kv; l < wdt; ++l) d[l] = 0.f;
}

// Gathers the kept columns of K weight rows into the panel layout of the
// tile kernel: panel[j][q][l] = src[row(q) + cols[64 j + l]] for q < K and
// l < 64 (the last panel kp - 64 j wide), in one pass over the rows (a pass
// per panel re-read the whole matrix). Columns from k on are
// padding: zero weights, written as zeros. With pairs (every cols[2i + 1] ==
// cols[2i] + 1 below k: kept channels come in runs of the gate's G = 2, 4,
// ... channels) a pair is one 8-byte move. The rows two ahead (row_len
// floats each) are prefetched: the kept rows are increasing but irregular,
// which the hardware prefetcher misses. (A 16-lane AVX-512 gather
// instruction instead made the block slower on this CPU.)
template <typename RowFn>
void gather_panels(const float* src, int64_t K, int64_t q_begin,
                   int64_t q_end, RowFn row, const int32_t* cols, int64_t k,
                   int64_t kp, int64_t row_len, bool pairs,
                   const ColChunks* chunks, float* panel) {
  for (int64_t q = q_begin; q < q_end; ++q) {
    const float* s = src + row(q);
#ifdef LAUD_X86
    if (q + 2 < q_end) {
      const char* nx = reinterpret_cast<const char*>(src + row(q + 2));
      for (int64_t b = 0; b < row_len * 4; b += 64)
        _mm_prefetch(nx + b, _MM_HINT_T0);
    }
#endif
    for (int64_t j0 = 0; j0 < kp; j0 += kPanel) {
      const int64_t wdt = std::min<int64_t>(kPanel, kp - j0);
      const int64_t kv = std::max<int64_t>(0, std::min(wdt, k - j0));
      copy_cols(panel + K * j0 + q * wdt, s, cols + j0, kv, wdt, pairs,
                chunks + j0 / kPanel);
    }
  }
}

// One panel block of gather_panels' layout, for a single sample's columns
// cols[0, wdt) (kv of them kept, the rest padding): dst[q * wdt + l] =
// src[row(q) + cols[l]] for q < K. The span of the block's columns in the
// row two ahead is prefetched (the whole row is not needed).
template <typename RowFn>
void gather_block(const float* src, int64_t K, RowFn row, const int32_t* cols,
                  int64_t kv, int64_t wdt, bool pairs, const ColChunks* ch,
                  float* dst) {
  const int64_t c0 = kv > 0 ? cols[0] : 0;
  const int64_t span = kv > 0 ? (cols[kv - 1] - c0 + 1) * 4 : 0;
  for (int64_t q = 0; q < K; ++q) {
#ifdef LAUD_X86
    if (q + 2 < K) {
      const char* nx = reinterpret_cast<const char*>(src + row(q + 2) + c0);
      for (int64_t b = 0; b < span; b += 64)
        _mm_prefetch(nx + b, _MM_HINT_T0);
    }
#endif
    copy_cols(dst + q * wdt, src + row(q), cols, kv, wdt, pairs, ch);
  }
}

// The work of one call, a pure function of (counts, kept channels,
// geometry, threads). Per sample n: k[n] kept channels (kept + n * kk,
// ascending), kp[n] = k rounded up to 16, cols (kp entries: the kept
// channels, then the zero padding channel `width`), pairs (see
// gather_panels), the offsets of its conv1 / conv2 panels in the panel
// buffer and of its conv1 output in the h1 buffer. b1 / b2: the threads'
// ranges of the phase-1 sequence (n * H * W + input pixel) and the phase-2
// sequence (n * Ho * Wo + output pixel), count1 / count2 (pixels a sample)
// and cost1 / cost2 (per pixel) the segments they cut. With the column
// split (colsplit) the sequences are units of 16 columns instead: count1
// = count2 = kp / 16 kept-channel units (conv1, conv2), count3 = C_out /
// 16 output-channel units (conv3, b3 its ranges), each unit over all the
// sample's pixels, and h2off / h2_total place conv2's output (Ho Wo kp a
// sample) in the buffer the threads share.
struct ChannelPlan {
  const int64_t* kept = nullptr;
  int64_t kk = 0, kpmax = 0, panel_total = 0, h1_total = 0, h2_total = 0,
          parts = 1;
  bool avx512 = false;
  // phases run row-blocked (kBlockedMaxPixels1 / 2): conv1 (blocked1),
  // conv2 and conv3 (blocked2); the others' panels come from gather_all
  bool blocked1 = false, blocked2 = false;
  // fewer samples than threads on a small map (column split, below): the
  // phases split each sample's columns, not its pixels; three phases
  // (conv1; conv2; conv3 and the add), every one row-blocked, conv2's
  // output in a buffer shared by the threads (h2off, h2_total)
  bool colsplit = false;
  std::vector<int64_t> k, kp, w1off, w2off, h1off, h2off, b1, b2, b3, count1,
      count2, count3;
  std::vector<int32_t> cols;
  std::vector<uint8_t> pairs;
  std::vector<double> cost1, cost2, cost3;
  // per sample, per 64-channel panel block (npmax of them): the kept
  // columns' chunks for the AVX-512 gathers (ColChunks)
  int64_t npmax = 0;
  std::vector<ColChunks> chunks;
  const ColChunks* chunks_of(int64_t s) const {
    return chunks.data() + s * npmax;
  }
};

// The entries [lo, hi) of sample s's kept list that conv2 takes for the
// source channels [c_lo, c_hi) of a tap: the channels in that range when
// the list is ascending (as the callers pass it). Both ends are binary
// searches over the whole list, and a binary search's result never
// decreases as the value grows, whatever the order, so consecutive ranges
// tile the list: every entry once, in list order, as in the unsplit sum
// (a list out of order only gathers from rows outside the range).
inline void kept_range(const ChannelPlan& pl, int64_t s, int64_t c_lo,
                       int64_t c_hi, int64_t& lo, int64_t& hi) {
  const int64_t k = pl.k[s];
  const int64_t* kept = pl.kept + s * pl.kk;
  lo = std::lower_bound(kept, kept + k, c_lo) - kept;
  hi = std::lower_bound(kept, kept + k, c_hi) - kept;
}

void plan_channel(const Geometry& g, const int64_t* cnt, const int64_t* kept,
                  int64_t kk, int64_t parts, bool avx512, bool row_blocked,
                  ChannelPlan& pl) {
  const int64_t n = g.n;
  pl.kept = kept;
  pl.kk = kk;
  pl.parts = parts;
  pl.avx512 = avx512;
  for (auto* v : {&pl.k, &pl.kp, &pl.w1off, &pl.w2off, &pl.h1off, &pl.h2off,
                  &pl.count1, &pl.count2, &pl.count3})
    v->resize(n);
  pl.pairs.resize(n);
  pl.cost1.resize(n);
  pl.cost2.resize(n);
  pl.cost3.resize(n);
  pl.kpmax = 0;
  for (int64_t s = 0; s < n; ++s) {
    pl.k[s] = cnt[s];
    pl.kp[s] = (cnt[s] + kLanes - 1) / kLanes * kLanes;
    pl.kpmax = std::max(pl.kpmax, pl.kp[s]);
  }
  pl.cols.resize(std::max<int64_t>(1, n * pl.kpmax));
  pl.npmax = (pl.kpmax + kPanel - 1) / kPanel;
  if (pl.chunks.size() < static_cast<size_t>(std::max<int64_t>(1, n * pl.npmax)))
    pl.chunks.resize(std::max<int64_t>(1, n * pl.npmax));
  int64_t panels = 0, h1 = 0, h2 = 0;
  const int64_t p_in = g.h * g.w, p_out = g.ho * g.wo;
  // with fewer samples than threads a sample's pixels would split over
  // threads, each of which would gather the whole of its panels: on small
  // maps the threads split the columns instead (each gathers its own, all
  // row-blocked), with enough column units for every thread (kColUnits),
  // elsewhere the panels are gathered up front
  int64_t units = 0;
  for (int64_t s = 0; s < n; ++s) units += pl.kp[s] / kLanes;
  pl.colsplit = row_blocked && n < parts && p_in <= kBlockedMaxPixels1 &&
                p_out <= kColumnMaxPixels && units >= kColUnits * parts;
  const bool rb = row_blocked && n >= parts;
  pl.blocked1 = pl.colsplit || (rb && p_in <= kBlockedMaxPixels1);
  pl.blocked2 = pl.colsplit || (rb && p_out <= kBlockedMaxPixels2);
  for (int64_t s = 0; s < n; ++s) {
    const int64_t k = pl.k[s], kp = pl.kp[s];
    const int64_t* ks = kept + s * kk;
    int32_t* cols = pl.cols.data() + s * pl.kpmax;
    for (int64_t m = 0; m < kp; ++m)
      cols[m] = static_cast<int32_t>(m < k ? ks[m] : g.width);
    bool pairs = k % 2 == 0;  // runs of >= 2 channels: 8-byte moves
    for (int64_t m = 0; pairs && m < k; m += 2)
      pairs = cols[m + 1] == cols[m] + 1;
    pl.pairs[s] = pairs;
    for (int64_t j0 = 0; j0 < kp; j0 += kPanel) {
      ColChunks& ch = pl.chunks[s * pl.npmax + j0 / kPanel];
      ch.n = 0;
      if (avx512)
        build_chunks(cols + j0,
                     std::max<int64_t>(0, std::min<int64_t>(
                                              std::min<int64_t>(kPanel, kp - j0),
                                              k - j0)),
                     pairs, ch);
    }
    pl.w1off[s] = panels;
    if (!pl.blocked1) panels += g.c_in * kp;
    pl.w2off[s] = panels;
    if (!pl.blocked2) panels += 9 * k * kp;
    pl.h1off[s] = h1;
    h1 += g.hp() * g.wpx() * kp;
    pl.h2off[s] = h2;
    if (pl.colsplit) {
      // units of 16 columns: conv1's and conv2's kept output channels,
      // conv3's output channels (C_out % 16 == 0), each over every pixel
      h2 += p_out * kp;
      pl.count1[s] = pl.count2[s] = kp / kLanes;
      pl.count3[s] = g.c_out / kLanes;
      pl.cost1[s] = static_cast<double>(p_in * g.c_in * kLanes);
      pl.cost2[s] = static_cast<double>(p_out * 9 * k * kLanes);
      pl.cost3[s] = static_cast<double>(p_out * kLanes) *
                    (static_cast<double>(k) + kEpilogueMacs);
    } else {
      pl.count1[s] = p_in;
      pl.count2[s] = p_out;
      pl.count3[s] = 0;
      pl.cost1[s] = static_cast<double>(g.c_in * kp);
      pl.cost2[s] = static_cast<double>(9 * k * kp + k * g.c_out) +
                    kEpilogueMacs * static_cast<double>(g.c_out);
      pl.cost3[s] = 0.;
    }
  }
  pl.panel_total = panels;
  pl.h1_total = h1;
  pl.h2_total = h2;
  pl.b1.resize(parts + 1);
  pl.b2.resize(parts + 1);
  pl.b3.resize(parts + 1);
  const int64_t align1 = pl.colsplit ? 1 : kAlign1;
  const int64_t align2 = pl.colsplit ? 1 : kAlign2;
  partition::balanced_bounds(pl.count1.data(), pl.cost1.data(), n, parts,
                             align1, pl.b1.data());
  partition::balanced_bounds(pl.count2.data(), pl.cost2.data(), n, parts,
                             align2, pl.b2.data());
  partition::balanced_bounds(pl.count3.data(), pl.cost3.data(), n, parts, 1,
                             pl.b3.data());
}

// Phase 0: every sample's conv1 and conv2 weight panels. Items: blocks of
// 16 source rows of w1t, then (tap, 16-channel block) pairs of w2t; an item
// gathers its rows for all samples (a row block stays in L2 while each
// sample takes its columns), so the weights are read once per call, not
// once per sample (R50 stage 4, 8 x 7 x 7, r = 0.5: 28 ms a block, 30 ms
// with a pass per sample).
void gather_all(const Geometry& g, const ChannelPlan& pl, const float* w1t,
                const float* w2t, float* panels) {
  const int64_t wp1 = g.width + 1;
  constexpr int64_t kBlock = 16;
  const int64_t nb1 = pl.blocked1 ? 0 : (g.c_in + kBlock - 1) / kBlock;
  // source channels 0 .. width: an entry `width` (the zero padding
  // channel) within a sample's count is gathered like any other
  const int64_t nbw = pl.blocked2 ? 0 : (wp1 + kBlock - 1) / kBlock;
  at::parallel_for(0, nb1 + 9 * nbw, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t it = i0; it < i1; ++it) {
      for (int64_t s = 0; s < g.n; ++s) {
        const int64_t k = pl.k[s];
        if (k == 0) continue;
        const int32_t* cols = pl.cols.data() + s * pl.kpmax;
        if (it < nb1) {
          const int64_t q0 = it * kBlock;
          const int64_t q1 = std::min(g.c_in, q0 + kBlock);
          gather_panels(w1t, g.c_in, q0, q1,
                        [&](int64_t q) { return q * wp1; }, cols, k,
                        pl.kp[s], wp1, pl.pairs[s], pl.chunks_of(s),
                        panels + pl.w1off[s]);
        } else {
          const int64_t t = (it - nb1) / nbw;
          const int64_t ch0 = (it - nb1 - t * nbw) * kBlock;
          const int64_t* kept = pl.kept + s * pl.kk;
          int64_t lo, hi;
          kept_range(pl, s, ch0, ch0 + kBlock, lo, hi);
          if (hi > lo)
            gather_panels(
                w2t, 9 * k, t * k + lo, t * k + hi,
                [&](int64_t q) { return (q / k * wp1 + kept[q % k]) * wp1; },
                cols, k, pl.kp[s], wp1, pl.pairs[s], pl.chunks_of(s),
                panels + pl.w2off[s]);
        }
      }
    }
  });
}

// Calls fn(sample, first pixel, end pixel) for the pieces of the global
// range [b, e) of a sample-major sequence of `per` pixels per sample.
template <typename Fn>
void for_pieces(int64_t b, int64_t e, int64_t per, Fn fn) {
  while (b < e) {
    const int64_t s = b / per, p0 = b - s * per;
    const int64_t p1 = std::min(per, p0 + (e - b));
    fn(s, p0, p1);
    b += p1 - p0;
  }
}

// Phase 1, pixels [p0, p1) of sample s: conv1 (+ ReLU) into its
// zero-bordered pixel-major buffer h1s (hp x wpx x kp). With AVX-512, on
// maps of at least kPixelMajorMinPixels pixels and for pieces of at least
// kPixelMajorMinFloats input values, the piece is taken in
// chunks of at most kChunkFloats input values, each transposed to
// pixel-major (to_pixel_major) into a buffer that stays in L2 and
// read there by every panel block's tiles: x is read once, in sequential
// streams. Otherwise the tiles read x's NCHW rows in place.
void conv1_piece(const Geometry& g, const ChannelPlan& pl, int64_t s,
                 int64_t p0, int64_t p1, const float* x, const float* b1,
                 const float* panels, float* h1s, bool avx512) {
  const int64_t kp = pl.kp[s];
  if (kp == 0 || p0 >= p1) return;
  thread_local std::vector<float> xt_buf;
  const int64_t p_in = g.h * g.w, wpx = g.wpx();
  const bool pixel_major =
      !g.nhwc && pixel_major_input(avx512, p_in, g.c_in, p1 - p0);
  const int64_t chunk = pixel_major ? pixel_major_chunk(g.c_in) : p1 - p0;
  float* xt = pixel_major
                  ? scratch(xt_buf, static_cast<size_t>(
                                        std::min(chunk, p1 - p0) * g.c_in))
                  : nullptr;
  thread_local std::vector<int64_t> aoff_buf;
  if (aoff_buf.size() < static_cast<size_t>(g.c_in)) aoff_buf.resize(g.c_in);
  int64_t* aoff = aoff_buf.data();
  for (int64_t c = 0; c < g.c_in; ++c)
    aoff[c] = pixel_major ? c : g.x_chan(c);
  const int32_t* cols = pl.cols.data() + s * pl.kpmax;
  const float* xs = x + s * g.c_in * p_in;
  float bias[kPanel];
  const float* a[kRows];
  float* y[kRows];
  for (int64_t c0 = p0; c0 < p1; c0 += chunk) {
    const int64_t c1 = std::min(p1, c0 + chunk);
#ifdef LAUD_X86
    if (pixel_major) to_pixel_major(xs + c0, p_in, g.c_in, c1 - c0, xt);
#endif
    for (int64_t j0 = 0; j0 < kp; j0 += kPanel) {
      const int nv =
          static_cast<int>(std::min<int64_t>(kPanel, kp - j0) / kLanes);
      for (int l = 0; l < nv * kLanes; ++l) bias[l] = b1[cols[j0 + l]];
      const float* pj = panels + pl.w1off[s] + g.c_in * j0;
      for (int64_t q0 = c0; q0 < c1; q0 += kRows) {
        const int r = static_cast<int>(std::min<int64_t>(kRows, c1 - q0));
        for (int i = 0; i < r; ++i) {
          const int64_t p = q0 + i, yy = p / g.w, xx = p - yy * g.w;
          a[i] = pixel_major ? xt + (p - c0) * g.c_in : xs + g.x_pix(p);
          y[i] = h1s + ((yy + g.pad) * wpx + xx + g.pad) * kp + j0;
        }
        pick<kStoreRelu>(r, nv, avx512)(a, aoff, pj, g.c_in, bias, y,
                                        nullptr);
      }
    }
  }
}

// conv3 of m output pixels for output channels [j0, j0 + wdt) of the
// 64-column panel that starts at channel b0: tmp[p][l] = sum_c h2[p * kp +
// c] * W3t[kept[c]][j0 + l]; zeros when k = 0. w3p is W3t ((width + 1) x
// C_out, `rows` = width + 1) in pack_panels' layout (the panel at b0: rows
// of min(64, C_out - b0) floats from w3p + rows * b0), whose kept rows the
// tiles read in place (rows_tile_*): a panel's rows lie at most 256 B
// apart and the panel stays in L2 while the thread's samples use it, so
// the kept rows stream from it (docs/benchmark_history.md, twenty-second
// round). boff: scratch for k row offsets.
void conv3_panel(const float* h2, int64_t kp, int64_t m, const int64_t* kept,
                 int64_t k, const float* w3p, int64_t rows, int64_t c_out,
                 int64_t b0, int64_t j0, int wdt, int64_t* boff, float* tmp,
                 bool avx512) {
  if (k == 0) {
    std::fill(tmp, tmp + m * kPanel, 0.f);
    return;
  }
  const int64_t pw = std::min<int64_t>(kPanel, c_out - b0);
  for (int64_t c = 0; c < k; ++c) boff[c] = kept[c] * pw;
  const float* b = w3p + rows * b0 + (j0 - b0);
  const int nv = wdt / kLanes;
  const RowsTileFn full = pick_rows(kRows, nv, avx512);
  const float* a[kRows];
  for (int64_t r0 = 0; r0 < m; r0 += kRows) {
    const int r = static_cast<int>(std::min<int64_t>(kRows, m - r0));
    for (int i = 0; i < r; ++i) a[i] = h2 + (r0 + i) * kp;
    (r == kRows ? full : pick_rows(r, nv, avx512))(a, boff, b, k,
                                                    tmp + r0 * kPanel);
  }
}

// out's channel rows o0 + l * p_out (l < wdt), pixels [0, m): o = relu(o +
// tmp[p][l] + bias[l]); with csum non-null, csum[l] += the new values' sum.
// NHWC (g.nhwc): o0 is pixel 0's channel 0 of the panel, pixel p at o0 +
// p * C_out.
void add_conv3(const Geometry& g, const float* tmp, int64_t m, int wdt,
               const float* bias, float* o0, float* csum, bool avx512) {
  (void)avx512;
  const int64_t p_out = g.ho * g.wo;
  if (g.nhwc) {
#ifdef LAUD_X86
    if (avx512) {
      add_relu_rows_avx512(tmp, m, wdt, bias, o0, g.c_out, csum);
      return;
    }
#endif
    for (int64_t p = 0; p < m; ++p) {
      float* o = o0 + p * g.c_out;
      for (int l = 0; l < wdt; ++l) {
        o[l] = relu_of(o[l] + tmp[p * kPanel + l] + bias[l]);
        if (csum != nullptr) csum[l] += o[l];
      }
    }
    return;
  }
#ifdef LAUD_X86
  if (avx512) {  // AVX-512F implies AVX2
    add_relu_transposed_avx2(tmp, m, wdt, bias, o0, p_out, csum);
    return;
  }
#endif
  for (int l = 0; l < wdt; ++l) {
    float* o = o0 + l * p_out;
    float cs = 0.f;
    for (int64_t p = 0; p < m; ++p) {
      o[p] = relu_of(o[p] + tmp[p * kPanel + l] + bias[l]);
      cs += o[p];
    }
    if (csum != nullptr) csum[l] += cs;
  }
}

// Phase 2, output pixels [p0, p1) of sample s: conv2 (+ ReLU), conv3 per
// 64-channel panel, added into out_s with bn3's shift and the ReLU; in
// sub-ranges whose conv2 output (pixels x kp) stays within 256 KiB.
void conv23_piece(const Geometry& g, const ChannelPlan& pl, int64_t s,
                  int64_t p0, int64_t p1, const float* h1s, const float* b2,
                  const float* w3p, const float* b3, const float* panels,
                  float* outs, float* psum, bool avx512) {
  if (p0 >= p1) return;
  const int64_t k = pl.k[s], kp = pl.kp[s];
  const int64_t p_out = g.ho * g.wo, wpx = g.wpx();
  const int64_t sub = std::max<int64_t>(
      56, std::min<int64_t>(1024, (65536 / std::max<int64_t>(kp, 1)) / 8 * 8));
  const int64_t cap = std::min(sub, p1 - p0);
  thread_local std::vector<float> h2_buf, tmp_buf;
  thread_local std::vector<int64_t> aoff_buf;
  float* h2 = scratch(h2_buf, static_cast<size_t>(std::max<int64_t>(1, cap * kp)));
  // conv3 results of a panel, pixel-major, rows rounded up to 8 (the
  // transposed epilogue reads blocks of 8 rows)
  float* tmp = scratch(tmp_buf, static_cast<size_t>((cap + 7) / 8 * 8 * kPanel));
  const int64_t kmax = std::max<int64_t>(9 * k, 1);
  if (aoff_buf.size() < static_cast<size_t>(kmax)) aoff_buf.resize(kmax);
  int64_t* aoff = aoff_buf.data();
  const int32_t* cols = pl.cols.data() + s * pl.kpmax;
  const int64_t* kept = pl.kept + s * pl.kk;
  float bias[kPanel];
  const float* a[kRows];
  float* y[kRows];
  for (int64_t q0 = p0; q0 < p1; q0 += sub) {
    const int64_t m = std::min(sub, p1 - q0);
    if (k > 0) {
      // ---- conv2: rows = output pixels, A = h1 (nine shifted taps), K = 9 k
      tap_offsets(aoff, g.dil, wpx, kp, k);
      for (int64_t j0 = 0; j0 < kp; j0 += kPanel) {
        const int nv =
            static_cast<int>(std::min<int64_t>(kPanel, kp - j0) / kLanes);
        const int wdt = nv * kLanes;
        const float* pj = panels + pl.w2off[s] + 9 * k * j0;
        for (int l = 0; l < wdt; ++l) bias[l] = b2[cols[j0 + l]];
        for (int64_t r0 = 0; r0 < m; r0 += kRows) {
          const int r = static_cast<int>(std::min<int64_t>(kRows, m - r0));
          for (int i = 0; i < r; ++i) {
            const int64_t p = q0 + r0 + i, yo = p / g.wo, xo = p - yo * g.wo;
            a[i] = h1s + ((yo * g.stride) * wpx + xo * g.stride) * kp;
            y[i] = h2 + (r0 + i) * kp + j0;
          }
          pick<kStoreRelu>(r, nv, avx512)(a, aoff, pj, 9 * k, bias, y,
                                          nullptr);
        }
      }
    }
    // ---- conv3: rows = output pixels, A = h2, K = k; accumulated into out
    // (aoff serves as conv3's row-offset scratch; conv2 rewrites it at the
    // next sub-range)
    for (int64_t j0 = 0; j0 < g.c_out; j0 += kPanel) {
      const int wdt =
          static_cast<int>(std::min<int64_t>(kPanel, g.c_out - j0));
      conv3_panel(h2, kp, m, kept, k, w3p, g.width + 1, g.c_out, j0, j0, wdt,
                  aoff, tmp, avx512);
      add_conv3(g, tmp, m, wdt, b3 + j0,
                outs + (g.nhwc ? q0 * g.c_out + j0 : j0 * p_out + q0),
                psum != nullptr ? psum + j0 : nullptr, avx512);
    }
  }
}

// Row-blocked phases (kBlockedMaxPixels1 / 2). Sample by sample, every
// sample would stream the whole of w1t and its rows of w2t (R50 stage 4:
// 4 MB + about 6 MB a sample), its gathers stalling on those loads. Here
// the weight rows are taken in blocks (kRowBlock1 rows of w1t;
// kChannelBlock2 source channels of one tap of w2t: 256 KB at width 512)
// and every sample of the thread's range gathers its panel blocks from a
// block while it sits in L2, its tiles adding that block's terms to the
// sums kept in the output buffer (tile modes kFirst / kMiddle / kLast).
// conv3 runs per 64-channel panel over all the thread's samples, so a
// panel of w3p (128 KB at width 512) is likewise read once per thread.
// The terms of every sum run in the order of the unsplit tiles: the
// results are the same bit for bit as with panels gathered up front, at
// any thread count.
constexpr int64_t kRowBlock1 = 128;
constexpr int64_t kChannelBlock2 = 128;


// A thread's piece of a phase: pixels [p0, p1) of sample s, columns
// [j0, j1) (conv1 / conv2: of its kept-channel list; conv3: output
// channels), multiples of 16.
struct Piece {
  int64_t s, p0, p1, j0, j1;
};

// The pieces of the range [b, e) of the pixel sequence (`per` pixels a
// sample), each over all the sample's columns: kp (conv1, conv2:
// cols_all < 0) or cols_all (conv3: C_out).
inline void collect_pieces(const ChannelPlan& pl, int64_t b, int64_t e,
                           int64_t per, int64_t cols_all,
                           std::vector<Piece>& out) {
  out.clear();
  for_pieces(b, e, per, [&](int64_t s, int64_t p0, int64_t p1) {
    out.push_back(Piece{s, p0, p1, 0, cols_all < 0 ? pl.kp[s] : cols_all});
  });
}

// The pieces of the range [b, e) of a column-unit sequence (counts[s]
// units of 16 columns for sample s; ChannelPlan::colsplit), each over
// all `per` pixels of its sample.
inline void collect_column_pieces(const std::vector<int64_t>& counts,
                                  int64_t b, int64_t e, int64_t per,
                                  std::vector<Piece>& out) {
  out.clear();
  int64_t start = 0;
  for (size_t s = 0; s < counts.size() && start < e; ++s) {
    const int64_t end = start + counts[s];
    const int64_t u0 = std::max(b, start), u1 = std::min(e, end);
    if (u0 < u1)
      out.push_back(Piece{static_cast<int64_t>(s), 0, per,
                          (u0 - start) * kLanes, (u1 - start) * kLanes});
    start = end;
  }
}

// Calls fn(a, b, i) for the panels of the columns [j0, j1) of a piece: 64
// columns from j0 on, the last one narrower, i counting them from 0 (with
// j0 = 0 the plan's panel blocks; a column-split piece that starts inside
// a block takes full-width panels of its own).
template <typename Fn>
void for_panel_parts(int64_t j0, int64_t j1, Fn fn) {
  for (int64_t a = j0, i = 0; a < j1; a += kPanel, ++i)
    fn(a, std::min(j1, a + kPanel), i);
}

// The column chunks of every panel of the pieces, once per phase:
// chunks[first[i] + p] for panel p of piece i (for_panel_parts). The
// plan's where a panel is one of its blocks, else built into `built` (the
// panels of a column-split piece that starts inside a block), which the
// row-block loops then reuse.
struct PieceChunks {
  std::vector<ColChunks> built;
  std::vector<const ColChunks*> chunks;
  std::vector<int64_t> first;

  void build(const ChannelPlan& pl, const std::vector<Piece>& pieces) {
    first.resize(pieces.size());
    int64_t total = 0, own = 0;
    for (size_t i = 0; i < pieces.size(); ++i) {
      first[i] = total;
      for_panel_parts(pieces[i].j0, pieces[i].j1,
                      [&](int64_t a, int64_t b, int64_t) {
                        ++total;
                        own += !plans(pl, pieces[i].s, a, b - a);
                      });
    }
    if (built.size() < static_cast<size_t>(own)) built.resize(own);
    chunks.resize(total);
    own = 0;
    for (size_t i = 0; i < pieces.size(); ++i) {
      const int64_t s = pieces[i].s;
      for_panel_parts(pieces[i].j0, pieces[i].j1,
                      [&](int64_t a, int64_t b, int64_t p) {
        if (plans(pl, s, a, b - a)) {
          chunks[first[i] + p] = pl.chunks_of(s) + a / kPanel;
          return;
        }
        ColChunks& c = built[own++];
        c.n = 0;
        if (pl.avx512)
          build_chunks(pl.cols.data() + s * pl.kpmax + a,
                       std::max<int64_t>(0, std::min(b - a, pl.k[s] - a)),
                       pl.pairs[s], c);
        chunks[first[i] + p] = &c;
      });
    }
  }

  const ColChunks* of(size_t piece, int64_t panel) const {
    return chunks[first[piece] + panel];
  }

 private:
  // whether sample s's columns [j0, j0 + wdt) are one of the plan's
  // 64-column panel blocks
  static bool plans(const ChannelPlan& pl, int64_t s, int64_t j0,
                    int64_t wdt) {
    return j0 % kPanel == 0 &&
           wdt == std::min<int64_t>(kPanel, pl.kp[s] - j0);
  }
};

inline Mode split_mode(bool first, bool last) {
  return first ? (last ? kStoreRelu : kFirst) : (last ? kLast : kMiddle);
}

// Phase 1, row-blocked (blocked1): conv1 (+ ReLU) of the thread's pieces
// (pixels and kept columns of a sample), x read in NCHW.
void conv1_blocked(const Geometry& g, const ChannelPlan& pl,
                   const std::vector<Piece>& pieces, const float* x,
                   const float* b1, const float* w1t, float* h1,
                   bool avx512) {
  const int64_t p_in = g.h * g.w, wp1 = g.width + 1, wpx = g.wpx();
  thread_local std::vector<float> block_buf;
  float* block = scratch(block_buf, kRowBlock1 * kPanel);
  int64_t aoff[kRowBlock1];
  float bias[kPanel];
  const float* a[kRows];
  float* y[kRows];
  thread_local PieceChunks pchunks;
  pchunks.build(pl, pieces);
  for (int64_t q0 = 0; q0 < g.c_in; q0 += kRowBlock1) {
    const int64_t nq = std::min(kRowBlock1, g.c_in - q0);
    const bool last = q0 + nq == g.c_in;
    const Mode mode = split_mode(q0 == 0, last);
    for (int64_t c = 0; c < nq; ++c) aoff[c] = g.x_chan(q0 + c);
    for (size_t i = 0; i < pieces.size(); ++i) {
      const Piece& pc = pieces[i];
      const int64_t s = pc.s, kp = pl.kp[s];
      if (kp == 0) continue;
      const int32_t* cols = pl.cols.data() + s * pl.kpmax;
      const float* xs = x + s * g.c_in * p_in;
      float* h1s = h1 + pl.h1off[s];
      for_panel_parts(pc.j0, pc.j1, [&](int64_t j0, int64_t j1,
                                        int64_t panel) {
        const int64_t wdt = j1 - j0;
        const int nv = static_cast<int>(wdt / kLanes);
        gather_block(w1t + q0 * wp1, nq, [wp1](int64_t q) { return q * wp1; },
                     cols + j0,
                     std::max<int64_t>(0, std::min(wdt, pl.k[s] - j0)), wdt,
                     pl.pairs[s], pchunks.of(i, panel), block);
        if (last)
          for (int l = 0; l < wdt; ++l) bias[l] = b1[cols[j0 + l]];
        const TileFn full = pick_mode(mode, kRows, nv, avx512);
        for (int64_t p = pc.p0; p < pc.p1; p += kRows) {
          const int r = static_cast<int>(std::min<int64_t>(kRows, pc.p1 - p));
          for (int i = 0; i < r; ++i) {
            const int64_t pp = p + i, yy = pp / g.w, xx = pp - yy * g.w;
            a[i] = xs + g.x_pix(pp);
            y[i] = h1s + ((yy + g.pad) * wpx + xx + g.pad) * kp + j0;
          }
          (r == kRows ? full : pick_mode(mode, r, nv, avx512))(
              a, aoff, block, nq, bias, y, nullptr);
        }
      });
    }
  }
}

// conv2 (+ ReLU), row-blocked, of the pieces (pixels and kept columns of
// a sample): piece i's output pixel p (from its p0), kept column j, at
// h2[h2off[i] + (p - p0) * kp + j].
void conv2_blocked(const Geometry& g, const ChannelPlan& pl,
                   const std::vector<Piece>& pieces, const int64_t* h2off,
                   const float* h1, const float* b2, const float* w2t,
                   float* h2, bool avx512) {
  const int64_t wp1 = g.width + 1, wpx = g.wpx();
  thread_local std::vector<float> block_buf;
  float* block = scratch(block_buf, kChannelBlock2 * kPanel);
  int64_t aoff[kChannelBlock2];
  float bias[kPanel];
  const float* a[kRows];
  float* y[kRows];
  thread_local PieceChunks pchunks;
  pchunks.build(pl, pieces);
  // tap by tap, kChannelBlock2 source channels at a time
  for (int64_t t = 0; t < 9; ++t) {
    const int64_t dy = t / 3, dx = t % 3;
    for (int64_t c_lo = 0; c_lo < wp1; c_lo += kChannelBlock2) {
      for (size_t i = 0; i < pieces.size(); ++i) {
        const Piece& pc = pieces[i];
        const int64_t s = pc.s, k = pl.k[s], kp = pl.kp[s];
        if (k == 0) continue;
        const int64_t* kept = pl.kept + s * pl.kk;
        int64_t lo, hi;
        kept_range(pl, s, c_lo, c_lo + kChannelBlock2, lo, hi);
        const int32_t* cols = pl.cols.data() + s * pl.kpmax;
        const float* h1s = h1 + pl.h1off[s];
        float* h2p = h2 + h2off[i];
        // entries [e0, e1) of the list at a time, at most a block's rows
        // (more only when the list is out of order or repeats channels)
        for (int64_t e0 = lo; e0 < hi; e0 += kChannelBlock2) {
          const int64_t e1 = std::min(hi, e0 + kChannelBlock2);
          const bool last = t == 8 && e1 == k;
          const Mode mode = split_mode(t == 0 && e0 == 0, last);
          const int64_t base = (dy * g.dil * wpx + dx * g.dil) * kp + e0;
          for (int64_t c = 0; c < e1 - e0; ++c) aoff[c] = base + c;
          for_panel_parts(pc.j0, pc.j1, [&](int64_t j0, int64_t j1,
                                            int64_t panel) {
            const int64_t wdt = j1 - j0;
            const int nv = static_cast<int>(wdt / kLanes);
            gather_block(
                w2t, e1 - e0,
                [&](int64_t q) { return (t * wp1 + kept[e0 + q]) * wp1; },
                cols + j0, std::max<int64_t>(0, std::min(wdt, k - j0)), wdt,
                pl.pairs[s], pchunks.of(i, panel), block);
            if (last)
              for (int l = 0; l < wdt; ++l) bias[l] = b2[cols[j0 + l]];
            for (int64_t p = pc.p0; p < pc.p1; p += kRows) {
              const int r =
                  static_cast<int>(std::min<int64_t>(kRows, pc.p1 - p));
              for (int i2 = 0; i2 < r; ++i2) {
                const int64_t pp = p + i2, yo = pp / g.wo,
                              xo = pp - yo * g.wo;
                a[i2] = h1s + ((yo * g.stride) * wpx + xo * g.stride) * kp;
                y[i2] = h2p + (pp - pc.p0) * kp + j0;
              }
              pick_mode(mode, r, nv, avx512)(a, aoff, block, e1 - e0, bias,
                                             y, nullptr);
            }
          });
        }
      }
    }
  }
}

// conv3 and the add into out for the pieces (pixels and output channels of
// a sample; conv2's output of piece i at h2 + h2off[i], as conv2_blocked
// writes it), one 64-channel panel of w3p at a time over all the pieces,
// so that a panel (128 KB at width 512) is read once per thread; part: the
// thread's (N, C_out) channel sums, or null.
void conv3_add(const Geometry& g, const ChannelPlan& pl,
               const std::vector<Piece>& pieces, const int64_t* h2off,
               const float* h2, const float* w3p, const float* b3,
               float* out, float* part, bool avx512) {
  if (pieces.empty()) return;
  const int64_t p_out = g.ho * g.wo;
  int64_t kmax = 0, mmax = 0;
  for (const Piece& pc : pieces) {
    kmax = std::max(kmax, pl.k[pc.s]);
    mmax = std::max(mmax, pc.p1 - pc.p0);
  }
  thread_local std::vector<float> tmp_buf;
  thread_local std::vector<int64_t> boff_buf;
  // conv3 results of a panel, pixel-major, rows rounded up to 8 (the
  // transposed epilogue reads blocks of 8 rows)
  float* tmp = scratch(tmp_buf, static_cast<size_t>((mmax + 7) / 8 * 8 * kPanel));
  if (boff_buf.size() < static_cast<size_t>(std::max<int64_t>(1, kmax)))
    boff_buf.resize(std::max<int64_t>(1, kmax));
  int64_t* boff = boff_buf.data();
  for (int64_t b0 = 0; b0 < g.c_out; b0 += kPanel) {
    for (size_t i = 0; i < pieces.size(); ++i) {
      const Piece& pc = pieces[i];
      const int64_t j0 = std::max(b0, pc.j0);
      const int64_t j1 = std::min(b0 + kPanel, pc.j1);
      if (j0 >= j1) continue;
      const int64_t s = pc.s, m = pc.p1 - pc.p0;
      const int wdt = static_cast<int>(j1 - j0);
      conv3_panel(h2 + h2off[i], pl.kp[s], m, pl.kept + s * pl.kk, pl.k[s],
                  w3p, g.width + 1, g.c_out, b0, j0, wdt, boff, tmp, avx512);
      add_conv3(g, tmp, m, wdt, b3 + j0,
                out + s * g.c_out * p_out +
                    (g.nhwc ? pc.p0 * g.c_out + j0 : j0 * p_out + pc.p0),
                part != nullptr ? part + s * g.c_out + j0 : nullptr, avx512);
    }
  }
}

// Phase 2, row-blocked (blocked2): conv2 (+ ReLU), conv3 and the add into
// out for the thread's pieces of the output-pixel sequence [b, e), conv2's
// output in the thread's buffer; part: the thread's (N, C_out) channel
// sums, or null.
void conv23_blocked(const Geometry& g, const ChannelPlan& pl, int64_t b,
                    int64_t e, const float* h1, const float* b2,
                    const float* w2t, const float* w3p, const float* b3,
                    float* out, float* part, bool avx512) {
  thread_local std::vector<Piece> pieces, pieces3;
  const int64_t p_out = g.ho * g.wo;
  collect_pieces(pl, b, e, p_out, -1, pieces);
  if (pieces.empty()) return;
  collect_pieces(pl, b, e, p_out, g.c_out, pieces3);
  thread_local std::vector<int64_t> h2off_buf;
  h2off_buf.resize(pieces.size());
  int64_t h2_total = 0;
  for (size_t i = 0; i < pieces.size(); ++i) {
    h2off_buf[i] = h2_total;
    h2_total += (pieces[i].p1 - pieces[i].p0) * pl.kp[pieces[i].s];
  }
  thread_local std::vector<float> h2_buf;
  float* h2 = scratch(h2_buf, static_cast<size_t>(std::max<int64_t>(1, h2_total)));
  conv2_blocked(g, pl, pieces, h2off_buf.data(), h1, b2, w2t, h2, avx512);
  conv3_add(g, pl, pieces3, h2off_buf.data(), h2, w3p, b3, out, part,
            avx512);
}

Geometry channel_geometry(int64_t n, int64_t c_in, int64_t h, int64_t w,
                          int64_t width, int64_t c_out, int64_t stride,
                          int64_t padding, int64_t dilation) {
  TORCH_CHECK(stride >= 1 && dilation >= 1 && padding >= 0,
              "stride, dilation >= 1 and padding >= 0 required");
  TORCH_CHECK(c_in >= 1 && width >= 1, "channel_branch_add_relu: C_in and "
              "width must be >= 1, got C_in=", c_in, ", width=", width);
  Geometry g;
  g.n = n; g.c_in = c_in; g.h = h; g.w = w;
  g.width = width; g.c_out = c_out;
  g.ho = (h + 2 * padding - 2 * dilation - 1) / stride + 1;
  g.wo = (w + 2 * padding - 2 * dilation - 1) / stride + 1;
  g.stride = stride; g.pad = padding; g.dil = dilation;
  TORCH_CHECK(g.ho >= 1 && g.wo >= 1, "conv2's output would be empty");
  return g;
}

void check_counts(const at::Tensor& chs, const at::Tensor& counts,
                  int64_t n, int64_t width) {
  TORCH_CHECK(chs.scalar_type() == at::kLong && chs.dim() == 2 &&
                  chs.is_contiguous() && counts.scalar_type() == at::kLong &&
                  counts.dim() == 1 && counts.is_contiguous(),
              "chs (N, k) and counts (N,) must be contiguous int64");
  TORCH_CHECK(chs.size(0) == n && counts.size(0) == n,
              "chs and counts must have x's batch size");
  const int64_t* cnt = counts.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i)
    TORCH_CHECK(cnt[i] >= 0 && cnt[i] <= chs.size(1),
                "counts must lie in [0, chs.size(1)]");
  const int64_t* kept = chs.data_ptr<int64_t>();
  for (int64_t i = 0; i < chs.numel(); ++i)
    TORCH_CHECK(kept[i] >= 0 && kept[i] <= width,
                "chs indices must lie in [0, width]");
}

}  // namespace

std::string channel_branch_isa() { return cpu_avx512f() ? "avx512f" : "generic"; }

std::vector<int64_t> channel_blocked_max_pixels() {
  return {kBlockedMaxPixels1, kBlockedMaxPixels2, kColumnMaxPixels,
          kColUnits};
}

void channel_branch_add_relu_cpu(at::Tensor& out, const at::Tensor& x,
                                 const at::Tensor& chs,
                                 const at::Tensor& counts,
                                 const at::Tensor& w1t, const at::Tensor& b1,
                                 const at::Tensor& w2t, const at::Tensor& b2,
                                 const at::Tensor& w3p, const at::Tensor& b3,
                                 int64_t stride, int64_t padding,
                                 int64_t dilation, bool force_generic,
                                 const at::Tensor& sums,
                                 bool force_unblocked) {
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&w1t, &b1, &w2t, &b2, &w3p, &b3})
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous(),
                "channel_branch_add_relu: float32 contiguous tensors only");
  TORCH_CHECK(x.dim() == 4 && out.dim() == 4, "x and out must be 4-D");
  // NCHW, or channels_last (NHWC) for both x and out; a tensor that is
  // both (one pixel, or one channel) counts as NCHW
  const bool nhwc = !x.is_contiguous() &&
                    x.is_contiguous(at::MemoryFormat::ChannelsLast);
  TORCH_CHECK(x.scalar_type() == at::kFloat &&
                  out.scalar_type() == at::kFloat &&
                  (nhwc || x.is_contiguous()) &&
                  out.is_contiguous(nhwc ? at::MemoryFormat::ChannelsLast
                                         : at::MemoryFormat::Contiguous),
              "channel_branch_add_relu: x and out must be float32, both "
              "contiguous or both channels_last");
  Geometry g = channel_geometry(x.size(0), x.size(1), x.size(2), x.size(3),
                                b1.size(0) - 1, out.size(1), stride, padding,
                                dilation);
  g.nhwc = nhwc;
  TORCH_CHECK(out.size(0) == g.n, "out must have x's batch size");
  check_counts(chs, counts, g.n, g.width);
  TORCH_CHECK(w1t.dim() == 2 && w1t.size(0) == g.c_in &&
                  w1t.size(1) == g.width + 1,
              "w1t must be (C_in, width + 1)");
  TORCH_CHECK(w2t.dim() == 3 && w2t.size(0) == 9 &&
                  w2t.size(1) == g.width + 1 && w2t.size(2) == g.width + 1,
              "w2t must be (9, width + 1, width + 1)");
  TORCH_CHECK(w3p.dim() == 1 && w3p.numel() == (g.width + 1) * g.c_out,
              "w3p must be 1-D with (width + 1) * C_out elements (W3t in "
              "64-column panels)");
  TORCH_CHECK(b2.size(0) == g.width + 1 && b3.size(0) == g.c_out,
              "b2 must be (width + 1,), b3 (C_out,)");
  TORCH_CHECK(g.c_out % kLanes == 0, "C_out must be a multiple of 16");
  TORCH_CHECK(out.size(2) == g.ho && out.size(3) == g.wo,
              "out's spatial size does not match conv2's output");
  TORCH_CHECK(out.data_ptr() != x.data_ptr() || (g.h == g.ho && g.w == g.wo &&
                                                 g.c_in == g.c_out),
              "out may alias x only for an identity block");
  if (sums.defined())
    TORCH_CHECK(sums.scalar_type() == at::kFloat && sums.is_contiguous() &&
                    sums.dim() == 2 && sums.size(0) == out.size(0) &&
                    sums.size(1) == out.size(1),
                "sums must be a contiguous float32 (N, C_out) tensor");
  if (g.n == 0) return;
  const bool avx512 = cpu_avx512f() && !force_generic;
  const int64_t parts = std::max<int64_t>(1, at::get_num_threads());
  // the caller's plan and buffers: reused between calls, only grow
  // (a thread_local named in the lambdas below would be each worker's own:
  // they use this reference to the caller's)
  thread_local ChannelPlan caller_plan;
  ChannelPlan& pl = caller_plan;
  thread_local std::vector<float> panel_buf, h1_buf, h2_buf;
  plan_channel(g, counts.data_ptr<int64_t>(), chs.data_ptr<int64_t>(),
               chs.size(1), parts, avx512, !force_unblocked, pl);
  float* panels = scratch(panel_buf, static_cast<size_t>(std::max<int64_t>(1, pl.panel_total)));
  float* h1 = scratch(h1_buf, static_cast<size_t>(std::max<int64_t>(1, pl.h1_total)));
  if (pl.panel_total > 0)
    gather_all(g, pl, w1t.data_ptr<float>(), w2t.data_ptr<float>(), panels);
  const float* xp = x.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const float* b1p = b1.data_ptr<float>();
  const int64_t p_in = g.h * g.w, p_out = g.ho * g.wo;
  // phase 1: conv1 (and the conv1 buffers' border)
  at::parallel_for(0, parts, 1, [&](int64_t t0, int64_t t1) {
    thread_local std::vector<Piece> pieces;
    for (int64_t t = t0; t < t1; ++t) {
      for (int64_t s = t; s < g.n; s += parts)
        if (pl.kp[s] > 0)
          zero_border(h1 + pl.h1off[s], g.hp(), g.wpx(), g.pad, pl.kp[s]);
      if (pl.blocked1) {
        if (pl.colsplit)
          collect_column_pieces(pl.count1, pl.b1[t], pl.b1[t + 1], p_in,
                                pieces);
        else
          collect_pieces(pl, pl.b1[t], pl.b1[t + 1], p_in, -1, pieces);
        conv1_blocked(g, pl, pieces, xp, b1p, w1t.data_ptr<float>(), h1,
                      avx512);
      } else
        for_pieces(pl.b1[t], pl.b1[t + 1], p_in,
                   [&](int64_t s, int64_t q0, int64_t q1) {
                     conv1_piece(g, pl, s, q0, q1, xp, b1p, panels,
                                 h1 + pl.h1off[s], avx512);
                   });
    }
  });
  // phase 2: conv2, conv3, the add into out (and, with sums, each
  // thread's channel sums of its pixels, added up below in thread order)
  const float* b2p = b2.data_ptr<float>();
  const float* w3 = w3p.data_ptr<float>();
  const float* b3p = b3.data_ptr<float>();
  const bool with_sums = sums.defined();
  thread_local std::vector<float> part_buf;
  float* part = with_sums ? row_epilogue::zeroed_partials(
                                part_buf, parts * g.n * g.c_out)
                          : nullptr;
  if (pl.colsplit) {
    // column split: conv2 into the shared buffer, then (all of each
    // sample's conv2 output written) conv3 and the add
    float* h2 = scratch(h2_buf, static_cast<size_t>(std::max<int64_t>(1, pl.h2_total)));
    // a phase over each thread's pieces of a unit sequence, conv2's
    // output of piece i at h2 + h2off[i]
    auto column_phase = [&](const std::vector<int64_t>& counts,
                            const std::vector<int64_t>& bounds, auto fn) {
      at::parallel_for(0, parts, 1, [&](int64_t t0, int64_t t1) {
        thread_local std::vector<Piece> pieces;
        thread_local std::vector<int64_t> h2off;
        for (int64_t t = t0; t < t1; ++t) {
          collect_column_pieces(counts, bounds[t], bounds[t + 1], p_out,
                                pieces);
          h2off.resize(pieces.size());
          for (size_t i = 0; i < pieces.size(); ++i)
            h2off[i] = pl.h2off[pieces[i].s];
          fn(t, pieces, h2off.data());
        }
      });
    };
    column_phase(pl.count2, pl.b2,
                 [&](int64_t, const std::vector<Piece>& pieces,
                     const int64_t* h2off) {
                   conv2_blocked(g, pl, pieces, h2off, h1, b2p,
                                 w2t.data_ptr<float>(), h2, avx512);
                 });
    column_phase(pl.count3, pl.b3,
                 [&](int64_t t, const std::vector<Piece>& pieces,
                     const int64_t* h2off) {
                   conv3_add(g, pl, pieces, h2off, h2, w3, b3p, op,
                             with_sums ? part + t * g.n * g.c_out : nullptr,
                             avx512);
                 });
    if (with_sums)
      row_epilogue::add_partials(part, parts, g.n * g.c_out,
                                 sums.data_ptr<float>());
    return;
  }
  at::parallel_for(0, parts, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t)
      if (pl.blocked2)
        conv23_blocked(g, pl, pl.b2[t], pl.b2[t + 1], h1, b2p,
                       w2t.data_ptr<float>(), w3, b3p, op,
                       with_sums ? part + t * g.n * g.c_out : nullptr,
                       avx512);
      else
        for_pieces(pl.b2[t], pl.b2[t + 1], p_out,
                   [&](int64_t s, int64_t q0, int64_t q1) {
                     conv23_piece(g, pl, s, q0, q1, h1 + pl.h1off[s], b2p,
                                  w3, b3p, panels,
                                  op + s * g.c_out * p_out,
                                  with_sums ? part + (t * g.n + s) * g.c_out
                                            : nullptr,
                                  avx512);
                   });
  });
  if (with_sums)
    row_epilogue::add_partials(part, parts, g.n * g.c_out,
                               sums.data_ptr<float>());
}

// Per-thread work of channel_branch_add_relu_cpu's plan for `threads`
// threads, without running it: a (3, threads) float64 tensor, row 0 the
// cost of phase 1 (C_in x kp MACs per input pixel of a sample), row 1 that
// of phase 2 (9 k kp + k C_out MACs + kEpilogueMacs C_out per output
// pixel), row 2 zeros; with the column split row 1 conv2 alone (9 k kp
// per output pixel) and row 2 conv3 with the epilogue, the same totals.
// In the units the partition balances. The up-front gather phase (equal
// items of 16 weight rows, a static contiguous split) is not included.
at::Tensor channel_partition_work(const at::Tensor& chs,
                                  const at::Tensor& counts, int64_t c_in,
                                  int64_t h, int64_t w, int64_t width,
                                  int64_t c_out, int64_t stride,
                                  int64_t padding, int64_t dilation,
                                  int64_t threads) {
  TORCH_CHECK(threads >= 1, "threads must be >= 1");
  TORCH_CHECK(c_in >= 1 && h >= 1 && w >= 1 && width >= 1 && c_out >= 1,
              "sizes must be positive");
  TORCH_CHECK(c_out % kLanes == 0, "c_out must be a multiple of 16, got ",
              c_out);
  const Geometry g = channel_geometry(counts.size(0), c_in, h, w, width,
                                      c_out, stride, padding, dilation);
  check_counts(chs, counts, g.n, width);
  ChannelPlan pl;
  plan_channel(g, counts.data_ptr<int64_t>(), chs.data_ptr<int64_t>(),
               chs.size(1), threads, false, true, pl);
  at::Tensor res = at::zeros({3, threads}, at::kDouble);
  double* r = res.data_ptr<double>();
  const std::vector<int64_t>* bounds[3] = {&pl.b1, &pl.b2, &pl.b3};
  const std::vector<int64_t>* counts3[3] = {&pl.count1, &pl.count2,
                                            &pl.count3};
  const std::vector<double>* costs[3] = {&pl.cost1, &pl.cost2, &pl.cost3};
  // each phase's units (pixels, or column units with colsplit) in their
  // per-sample segments, costs[s] each
  for (int ph = 0; ph < 3; ++ph)
    for (int64_t t = 0; t < threads; ++t) {
      const int64_t b = (*bounds[ph])[t], e = (*bounds[ph])[t + 1];
      int64_t start = 0;
      for (int64_t s = 0; s < g.n && start < e; ++s) {
        const int64_t end = start + (*counts3[ph])[s];
        const int64_t u0 = std::max(b, start), u1 = std::min(e, end);
        if (u0 < u1)
          r[ph * threads + t] +=
              (*costs[ph])[s] * static_cast<double>(u1 - u0);
        start = end;
      }
    }
  return res;
}

}  // namespace laud_mm
