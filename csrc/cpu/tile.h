// Register-tiled matrix kernels shared by the fused CPU branch kernels
// (channel_conv_cpu.cpp: channel skipping; spatial_conv_cpu.cpp: spatial
// skipping).
//
// A tile computes R <= 7 output pixels x 16 V (V <= 4) output channels of a
// product with K terms: acc[i][l] = sum_q a[i][aoff[q]] * b[q * 16 V + l].
// The pixels' inputs are broadcast (pointer a[i] plus the shared offsets
// aoff[q]), so any pixel set and any input layout (NCHW rows, pixel-major
// rows, the zero-bordered conv1 output with conv2's nine shifted taps) is
// read the same way (at the same cost from cache; from memory, pixel-major
// rows stream better: to_pixel_major); the output channels lie on the
// vector lanes, the weights b are one 64-channel panel (K rows of 16 V
// floats, contiguous; rows_tile_* instead picks its K rows of a panel by
// offset). 7 x 4
// AVX-512 accumulators keep the FMA units busy with the panel streamed
// from L2. Without AVX-512F the same loops run on plain arrays (the
// compiler's vectorisation; correct, not tuned).
//
// Source: LAUDNet paper sec. 3.4 (dynamic operators); used by
// laud_mm/ops/channel_conv.py and laud_mm/ops/spatial_conv.py.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "isa.h"  // LAUD_X86, LAUD_TARGET, the run-time ISA choice

namespace laud_mm {
namespace tile {
constexpr int kRows = 7;     // output pixels per tile
constexpr int kLanes = 16;   // fp32 lanes of a 512-bit vector
constexpr int kPanel = 64;   // output channels per panel (4 vectors)
// conv1's input, transposed to pixel-major (to_pixel_major), in
// chunks of at most this many floats (128 KiB, so that a chunk stays in L2
// beside a panel block), at least one tile of pixels
constexpr int64_t kChunkFloats = 32768;
// ... only on maps of at least this many pixels: on a 7 x 7 map a sample's
// NCHW input (C_in x 49 floats) stays in L2 across the panel blocks, and
// transposing it gained nothing (docs/benchmark_history.md, eleventh round)
constexpr int64_t kPixelMajorMinPixels = 50;
// ... and only when the input one thread's conv1 reads (its pixels x C_in
// floats) is at least this large (512 KiB): a smaller one stays in L2
// between the panel blocks, where the two layouts read alike and the
// transposition is pure cost (batch 1 at 224 px: 1 - 3 % slower with it,
// docs/benchmark_history.md, eleventh round)
constexpr int64_t kPixelMajorMinFloats = 4 * kChunkFloats;

// Whether conv1 reads np pixels of a plane-pixel map with c_in channels
// as pixel-major chunks (the three rules above; AVX-512 tiles only).
inline bool pixel_major_input(bool avx512, int64_t plane, int64_t c_in,
                              int64_t np) {
  return avx512 && plane >= kPixelMajorMinPixels && c_in > 0 &&
         np * c_in >= kPixelMajorMinFloats;
}

// Pixels per pixel-major chunk of c_in channels (>= 1): at most
// kChunkFloats values, whole tiles, at least one tile.
inline int64_t pixel_major_chunk(int64_t c_in) {
  return std::max<int64_t>(kRows, kChunkFloats / c_in / kRows * kRows);
}

// Start and epilogue of a tile: kStoreRelu writes relu(acc + bias) to the
// pixel rows y[i] (pixel-major, 16 V channels each); kTile writes acc to
// tmp[R][64]. The other modes split a product's K terms over several calls
// (the weight rows in blocks: channel_conv_cpu.cpp, row-blocked panels):
// kFirst writes the raw sums to y[i], kMiddle adds its terms to y[i] (the
// accumulators start from y[i]), kLast does so and then writes
// relu(acc + bias). The sums run in the order of one unsplit call (an
// fp32 store and reload is exact), so a split product equals the unsplit
// one bit for bit.
enum Mode { kStoreRelu = 0, kTile = 1, kFirst = 2, kMiddle = 3, kLast = 4 };

// acc[i][l] = sum_q a[i][aoff[q]] * b[q * 16V + l], i < R, l < 16 V.
template <int R, int V, int M>
void tile_generic(const float* const* a, const int64_t* aoff, const float* b,
                  int64_t K, const float* bias, float* const* y, float* tmp) {
  float acc[R][kLanes * V];
  for (int i = 0; i < R; ++i)
    for (int l = 0; l < kLanes * V; ++l)
      acc[i][l] = (M == kMiddle || M == kLast) ? y[i][l] : 0.f;
  for (int64_t q = 0; q < K; ++q) {
    const float* bq = b + q * kLanes * V;
    const int64_t o = aoff[q];
    for (int i = 0; i < R; ++i) {
      const float av = a[i][o];
      for (int l = 0; l < kLanes * V; ++l) acc[i][l] += av * bq[l];
    }
  }
  for (int i = 0; i < R; ++i)
    for (int l = 0; l < kLanes * V; ++l) {
      if (M == kStoreRelu || M == kLast) {
        const float v = acc[i][l] + bias[l];
        y[i][l] = v > 0.f ? v : 0.f;
      } else if (M == kTile) {
        tmp[i * kPanel + l] = acc[i][l];
      } else {
        y[i][l] = acc[i][l];
      }
    }
}

#ifdef LAUD_X86
template <int R, int V, int M>
LAUD_TARGET("avx512f") void tile_avx512(
    const float* const* a, const int64_t* aoff, const float* b, int64_t K,
    const float* bias, float* const* y, float* tmp) {
  __m512 acc[R][V];
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < V; ++v)
      acc[i][v] = (M == kMiddle || M == kLast)
                      ? _mm512_loadu_ps(y[i] + kLanes * v)
                      : _mm512_setzero_ps();
  for (int64_t q = 0; q < K; ++q) {
    const float* bq = b + q * kLanes * V;
    const int64_t o = aoff[q];
    __m512 bv[V];
    for (int v = 0; v < V; ++v) bv[v] = _mm512_loadu_ps(bq + kLanes * v);
    for (int i = 0; i < R; ++i) {
      const __m512 av = _mm512_set1_ps(a[i][o]);
      for (int v = 0; v < V; ++v)
        acc[i][v] = _mm512_fmadd_ps(av, bv[v], acc[i][v]);
    }
  }
  if (M == kStoreRelu || M == kLast) {
    const __m512 z = _mm512_setzero_ps();
    for (int v = 0; v < V; ++v) {
      const __m512 bb = _mm512_loadu_ps(bias + kLanes * v);
      for (int i = 0; i < R; ++i)
        _mm512_storeu_ps(y[i] + kLanes * v,
                         _mm512_max_ps(z, _mm512_add_ps(acc[i][v], bb)));
    }
  } else if (M == kTile) {
    for (int i = 0; i < R; ++i)
      for (int v = 0; v < V; ++v)
        _mm512_storeu_ps(tmp + i * kPanel + kLanes * v, acc[i][v]);
  } else {
    for (int i = 0; i < R; ++i)
      for (int v = 0; v < V; ++v)
        _mm512_storeu_ps(y[i] + kLanes * v, acc[i][v]);
  }
}
#endif

using TileFn = void (*)(const float* const*, const int64_t*, const float*,
                        int64_t, const float*, float* const*, float*);

template <int R, int V, int M>
TileFn pick_one(bool avx512) {
#ifdef LAUD_X86
  if (avx512) return &tile_avx512<R, V, M>;
#endif
  (void)avx512;
  return &tile_generic<R, V, M>;
}

template <int R, int M>
TileFn pick_v(int v, bool avx512) {
  switch (v) {
    case 1: return pick_one<R, 1, M>(avx512);
    case 2: return pick_one<R, 2, M>(avx512);
    case 3: return pick_one<R, 3, M>(avx512);
    default: return pick_one<R, 4, M>(avx512);
  }
}

template <int M>
TileFn pick(int r, int v, bool avx512) {
  switch (r) {
    case 1: return pick_v<1, M>(v, avx512);
    case 2: return pick_v<2, M>(v, avx512);
    case 3: return pick_v<3, M>(v, avx512);
    case 4: return pick_v<4, M>(v, avx512);
    case 5: return pick_v<5, M>(v, avx512);
    case 6: return pick_v<6, M>(v, avx512);
    default: return pick_v<7, M>(v, avx512);
  }
}

// pick<M> for a mode chosen at run time
inline TileFn pick_mode(Mode m, int r, int v, bool avx512) {
  switch (m) {
    case kStoreRelu: return pick<kStoreRelu>(r, v, avx512);
    case kTile: return pick<kTile>(r, v, avx512);
    case kFirst: return pick<kFirst>(r, v, avx512);
    case kMiddle: return pick<kMiddle>(r, v, avx512);
    default: return pick<kLast>(r, v, avx512);
  }
}

// A tile whose K weight rows are picked by index (kTile's epilogue):
// tmp[i][l] = sum_q a[i][q] * b[boff[q] + l], i < R, l < 16 V; the pixels'
// inputs a[i] are contiguous. The channel kernel's conv3 reads a sample's
// kept rows of one panel of its weight this way, in place (pack_panels'
// layout: a panel's rows lie its width, 64 floats or fewer, apart, and the
// panel stays in L2 while the thread's samples use it), so no per-sample
// panel is written.
template <int R, int V>
void rows_tile_generic(const float* const* a, const int64_t* boff,
                       const float* b, int64_t K, float* tmp) {
  float acc[R][kLanes * V] = {};
  for (int64_t q = 0; q < K; ++q) {
    const float* bq = b + boff[q];
    for (int i = 0; i < R; ++i) {
      const float av = a[i][q];
      for (int l = 0; l < kLanes * V; ++l) acc[i][l] += av * bq[l];
    }
  }
  for (int i = 0; i < R; ++i)
    for (int l = 0; l < kLanes * V; ++l) tmp[i * kPanel + l] = acc[i][l];
}

#ifdef LAUD_X86
template <int R, int V>
LAUD_TARGET("avx512f") void rows_tile_avx512(
    const float* const* a, const int64_t* boff, const float* b, int64_t K,
    float* tmp) {
  __m512 acc[R][V];
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < V; ++v) acc[i][v] = _mm512_setzero_ps();
  for (int64_t q = 0; q < K; ++q) {
    const float* bq = b + boff[q];
    __m512 bv[V];
    for (int v = 0; v < V; ++v) bv[v] = _mm512_loadu_ps(bq + kLanes * v);
    for (int i = 0; i < R; ++i) {
      const __m512 av = _mm512_set1_ps(a[i][q]);
      for (int v = 0; v < V; ++v)
        acc[i][v] = _mm512_fmadd_ps(av, bv[v], acc[i][v]);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < V; ++v)
      _mm512_storeu_ps(tmp + i * kPanel + kLanes * v, acc[i][v]);
}
#endif

using RowsTileFn = void (*)(const float* const*, const int64_t*,
                            const float*, int64_t, float*);

template <int R>
RowsTileFn pick_rows_v(int v, bool avx512) {
#ifdef LAUD_X86
  if (avx512) {
    switch (v) {
      case 1: return &rows_tile_avx512<R, 1>;
      case 2: return &rows_tile_avx512<R, 2>;
      case 3: return &rows_tile_avx512<R, 3>;
      default: return &rows_tile_avx512<R, 4>;
    }
  }
#endif
  (void)avx512;
  switch (v) {
    case 1: return &rows_tile_generic<R, 1>;
    case 2: return &rows_tile_generic<R, 2>;
    case 3: return &rows_tile_generic<R, 3>;
    default: return &rows_tile_generic<R, 4>;
  }
}

// rows_tile_*<r, v> (r <= 7 pixels, v <= 4 vectors)
inline RowsTileFn pick_rows(int r, int v, bool avx512) {
  switch (r) {
    case 1: return pick_rows_v<1>(v, avx512);
    case 2: return pick_rows_v<2>(v, avx512);
    case 3: return pick_rows_v<3>(v, avx512);
    case 4: return pick_rows_v<4>(v, avx512);
    case 5: return pick_rows_v<5>(v, avx512);
    case 6: return pick_rows_v<6>(v, avx512);
    default: return pick_rows_v<7>(v, avx512);
  }
}

// AVX-512 tiles in use (isa.h: CPU support, LAUD_MM_CPU_ISA)
inline bool cpu_avx512f() { return isa::cpu_avx512f(); }
#ifdef LAUD_X86
// In-register transpose of 8 x 8 floats (rows r[i] -> columns r[j]).
LAUD_TARGET("avx2") inline void transpose8x8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]);
  const __m256 t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]);
  const __m256 t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]);
  const __m256 t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]);
  const __m256 t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// In-register transpose of 16 x 16 floats (rows r[i] -> columns r[j]):
// pairs of rows interleaved, then quadruples within each 128-bit lane,
// then the 128-bit lanes across rows (4 x 16 shuffles, a quarter of a
// shuffle per float against three eighths for 8 x 8 blocks).
LAUD_TARGET("avx512f") inline void transpose16x16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  for (int j = 0; j < 4; ++j) {
    t[j] = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88);
    t[4 + j] = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xDD);
    t[8 + j] = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88);
    t[12 + j] = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xDD);
  }
  for (int j = 0; j < 4; ++j) {
    r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
    r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xDD);
    r[4 + j] = _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0x88);
    r[12 + j] = _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0xDD);
  }
}

// dst[p * c + ch] = src[ch * plane + p] for pixels p < np and channels
// ch < c: np consecutive pixels of one sample's channel-major (NCHW) map,
// as pixel-major rows of c floats. The tiles then read a pixel's inputs
// as one sequential stream, where in NCHW every input channel is a new
// cache line, 784 B (14 x 14) to 12.5 KB (56 x 56) from the last: under
// the memory traffic of both cores the tiles ran about a third slower on
// NCHW input (docs/benchmark_history.md, eleventh round).
// Blocks of 16 pixels, within each 16 channels x 16 pixels transposed in
// registers (masked loads for the last pixels), so each 16-float load
// reads a whole cache line and the 16 destination rows are written front
// to back; 8 channels left over in 8 x 8 blocks (masked loads for the
// last pixels), fewer one by one.
// AVX-512F: callers check tile::cpu_avx512f (pixel_major_input).
LAUD_TARGET("avx512f") inline void to_pixel_major(
    const float* src, int64_t plane, int64_t c, int64_t np, float* dst) {
  const int64_t c16 = c / 16 * 16, c8 = c / 8 * 8;
  alignas(32) int32_t lanes[8];
  for (int64_t p0 = 0; p0 < np; p0 += 16) {
    const int64_t w = std::min<int64_t>(16, np - p0);
    const __mmask16 m = static_cast<__mmask16>((1u << w) - 1);
    float* d = dst + p0 * c;
    for (int64_t c0 = 0; c0 < c16; c0 += 16) {
      const float* s = src + c0 * plane + p0;
      __m512 r[16];
      for (int i = 0; i < 16; ++i)
        r[i] = _mm512_maskz_loadu_ps(m, s + i * plane);
      transpose16x16(r);
      for (int64_t i = 0; i < w; ++i) _mm512_storeu_ps(d + i * c + c0, r[i]);
    }
    if (c8 > c16) {  // 8 channels left: pixels h ... h + 7 at a time
      const float* s = src + c16 * plane + p0;
      for (int64_t h = 0; h < w; h += 8) {
        const int64_t wh = std::min<int64_t>(8, w - h);
        // the first wh lanes on
        for (int i = 0; i < 8; ++i) lanes[i] = i < wh ? -1 : 0;
        const __m256i mh =
            _mm256_load_si256(reinterpret_cast<const __m256i*>(lanes));
        __m256 r[8];
        for (int i = 0; i < 8; ++i)
          r[i] = _mm256_maskload_ps(s + i * plane + h, mh);
        transpose8x8(r);
        for (int64_t i = 0; i < wh; ++i)
          _mm256_storeu_ps(d + (h + i) * c + c16, r[i]);
      }
    }
    for (int64_t ch = c8; ch < c; ++ch)
      for (int64_t i = 0; i < w; ++i) d[i * c + ch] = src[ch * plane + p0 + i];
  }
}
#endif

// The A offsets of conv2's K = 9 k terms in a pixel-major conv1 buffer
// (wpx pixels a row, `stride` floats a pixel): tap (dy, dx), channel c at
// ((dy d) wpx + dx d) stride + c, taps in row-major order.
inline void tap_offsets(int64_t* aoff, int64_t d, int64_t wpx,
                        int64_t stride, int64_t k) {
  int64_t q = 0;
  for (int64_t dy = 0; dy < 3; ++dy)
    for (int64_t dx = 0; dx < 3; ++dx)
      for (int64_t c = 0; c < k; ++c)
        aoff[q++] = ((dy * d) * wpx + dx * d) * stride + c;
}

// Zeroes the border of width d (conv2's padding) of a pixel-major,
// zero-bordered conv1 buffer of hp x wpx pixels of `channels` floats; the
// interior is written by conv1.
inline void zero_border(float* buf, int64_t hp, int64_t wpx, int64_t d,
                        int64_t channels) {
  for (int64_t r = 0; r < hp; ++r) {
    float* row = buf + r * wpx * channels;
    if (r < d || r >= hp - d) {
      std::memset(row, 0, sizeof(float) * wpx * channels);
    } else {
      std::memset(row, 0, sizeof(float) * d * channels);
      std::memset(row + (wpx - d) * channels, 0,
                  sizeof(float) * d * channels);
    }
  }
}

// Thread-local scratch that only grows (no allocation per call).
inline float* scratch(std::vector<float>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

}  // namespace tile
}  // namespace laud_mm
