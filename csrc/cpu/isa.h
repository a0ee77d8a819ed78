// Portability of the CPU kernels' instruction-set paths: one place for the
// compiler-specific spellings and the run-time choice.
//
// - LAUD_X86: defined on x86-64 with GCC / Clang (per-function
//   `__attribute__((target(...)))`) and with MSVC (intrinsics need no target
//   attribute there); undefined elsewhere (ARM, other compilers) or when
//   LAUD_MM_NO_X86_PATHS is defined at compile time: the kernels then
//   compile their plain-loop ("generic") paths only.
// - LAUD_TARGET(isa): the target attribute of a function that uses `isa`'s
//   intrinsics (empty on MSVC).
// - cpu_avx512f(): whether the AVX-512 tiles (and the AVX2 epilogues that run
//   with them) are used: the CPU and OS support AVX-512F and the environment
//   variable LAUD_MM_CPU_ISA is unset or "auto"; LAUD_MM_CPU_ISA=generic runs
//   the portable kernels on any CPU with the same build (CI tests them that
//   way). Another value is an error (raised at the first kernel call).
//
// Source: engineering (no paper equation); the kernels are laud_mm's
// implementation of paper sec. 3.4.
#pragma once

#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#if (defined(__x86_64__) || defined(_M_X64)) && !defined(LAUD_MM_NO_X86_PATHS)
#if defined(__GNUC__) || defined(__clang__)
#define LAUD_X86 1
#define LAUD_TARGET(isa) __attribute__((target(isa)))
#include <immintrin.h>
#elif defined(_MSC_VER)
#define LAUD_X86 1
#define LAUD_TARGET(isa)
#include <immintrin.h>
#include <intrin.h>
#endif
#endif
#ifndef LAUD_TARGET
#define LAUD_TARGET(isa)
#endif

namespace laud_mm {
namespace isa {

// Whether this CPU and OS run AVX-512F code (ZMM state enabled).
inline bool hardware_avx512f() {
#if defined(LAUD_X86) && (defined(__GNUC__) || defined(__clang__))
  return __builtin_cpu_supports("avx512f");
#elif defined(LAUD_X86) && defined(_MSC_VER)
  int r[4];
  __cpuid(r, 0);
  if (r[0] < 7) return false;
  __cpuidex(r, 7, 0);
  const bool f = (r[1] >> 16) & 1;  // CPUID.7.0:EBX[16] AVX512F
  __cpuid(r, 1);
  const bool osxsave = (r[2] >> 27) & 1;  // CPUID.1:ECX[27]
  if (!f || !osxsave) return false;
  // XCR0: SSE, AVX, opmask, ZMM_Hi256 and Hi16_ZMM state enabled by the OS
  return (_xgetbv(0) & 0xE6) == 0xE6;
#else
  return false;
#endif
}

// LAUD_MM_CPU_ISA: "" / "auto" (default) or "generic".
inline bool generic_forced() {
  const char* v = std::getenv("LAUD_MM_CPU_ISA");
  if (v == nullptr || *v == '\0' || std::strcmp(v, "auto") == 0) return false;
  if (std::strcmp(v, "generic") == 0) return true;
  throw std::invalid_argument(
      std::string("LAUD_MM_CPU_ISA=") + v +
      " is not 'auto' or 'generic' (generic: run the portable kernels)");
}

// The AVX-512 paths are used (read once per process).
inline bool cpu_avx512f() {
  static const bool ok = !generic_forced() && hardware_avx512f();
  return ok;
}

}  // namespace isa
}  // namespace laud_mm
