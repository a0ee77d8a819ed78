// Work partition of the fused CPU branch kernels over the intra-op thread
// pool: pure functions of (mask, geometry, threads), shared by the kernels
// (spatial_conv_cpu.cpp, channel_conv_cpu.cpp) and by the load-balance
// report (laud_mm.ops.partition, which calls the same code through the
// extension), so that the balance a kernel gets can be computed without
// running it.
//
// A kernel's work is a sequence of phases separated by barriers (one
// at::parallel_for each). In a phase the work items are pixels, laid out
// as the concatenation of per-sample segments (sample n: count[n] pixels
// of cost[n] MAC-equivalents each; spatial skipping: one segment, the
// active pixels of the whole batch). balanced_bounds cuts that sequence
// into `parts` contiguous ranges of near-equal cost, one per thread:
// at::parallel_for(0, parts, 1, ...) hands range t to thread t. A range
// may span samples and a sample may span ranges, so batch 1 (detection
// inputs) splits as evenly as batch 64, and per-sample counts that differ
// (random channel masks) are weighed, not counted.
//
// Balance: a boundary is rounded to a multiple of `align` pixels from the
// start of the segment it falls in (the register tiles take 7 pixels, the
// conv3 epilogue 8), so a range's cost is within align / 2 pixels per
// boundary of total / parts, unless a phase has fewer than parts * align
// pixels (then some threads idle; docs/benchmarks.md "Load balance").
//
// Source: LAUDNet paper sec. 3.4 (scheduling of the dynamic operators);
// issue #22 (dynamic inference that scales with cores).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace laud_mm {
namespace partition {

// bounds[0 .. parts]: bounds[t] .. bounds[t + 1] is part t, in units of the
// concatenated segments (segment s: counts[s] units of cost costs[s] >= 0).
// bounds[0] = 0, bounds[parts] = sum(counts), non-decreasing. Each inner
// boundary is the unit where the cumulative cost reaches t / parts of the
// total, rounded to the nearest multiple of `align` (>= 1) from its
// segment's start (or to the segment's end).
inline void balanced_bounds(const int64_t* counts, const double* costs,
                            int64_t nseg, int64_t parts, int64_t align,
                            int64_t* bounds) {
  double total_cost = 0.;
  int64_t total = 0;
  for (int64_t s = 0; s < nseg; ++s) {
    total_cost += static_cast<double>(counts[s]) * costs[s];
    total += counts[s];
  }
  bounds[0] = 0;
  bounds[parts] = total;
  int64_t s = 0, seg_start = 0;
  double cum = 0.;  // cost before segment s
  for (int64_t t = 1; t < parts; ++t) {
    const double target = total_cost * static_cast<double>(t) /
                          static_cast<double>(parts);
    int64_t b = total;
    if (total_cost > 0.) {
      // the segment in which the cumulative cost reaches the target
      while (s < nseg &&
             cum + static_cast<double>(counts[s]) * costs[s] < target) {
        cum += static_cast<double>(counts[s]) * costs[s];
        seg_start += counts[s];
        ++s;
      }
      if (s < nseg) {
        const double units = costs[s] > 0. ? (target - cum) / costs[s] : 0.;
        int64_t u = static_cast<int64_t>(
                        std::floor(units / static_cast<double>(align) + 0.5)) *
                    align;
        u = std::min<int64_t>(std::max<int64_t>(u, 0), counts[s]);
        b = seg_start + u;
      }
    }
    bounds[t] = std::min(total, std::max(b, bounds[t - 1]));
  }
}

// Uniform cost (one segment): bounds of `total` units cut into `parts`.
inline void even_bounds(int64_t total, int64_t parts, int64_t align,
                        int64_t* bounds) {
  const double one = 1.;
  balanced_bounds(&total, &one, 1, parts, align, bounds);
}

}  // namespace partition
}  // namespace laud_mm
