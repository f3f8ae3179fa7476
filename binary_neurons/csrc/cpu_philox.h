// For the CPU kernels: which instruction set to run (chosen at run time), and Philox4x32-10 for
// many counters at a time, vectorized by hand for AVX2 and AVX-512 (csrc/elementwise.h has the
// scalar version that the portable path and the CUDA kernels use; all give the same words).
//
// BINARY_NEURONS_CPU_CAPABILITY=avx2|default lowers the instruction set chosen (for tests and
// for comparing timings).
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "elementwise.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#include <immintrin.h>
#endif

namespace binary_neurons {

// ---------------------------------------------------------------------------------------------
// Run-time ISA selection.

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define BN_MULTI_ISA 1
#define BN_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#define BN_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#else
#define BN_MULTI_ISA 0
#endif

enum class Isa { kDefault, kAvx2, kAvx512 };

inline Isa detect_isa() {
#if BN_MULTI_ISA
  __builtin_cpu_init();
  Isa best = Isa::kDefault;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    best = Isa::kAvx2;
  }
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
    best = Isa::kAvx512;
  }
  // BINARY_NEURONS_CPU_CAPABILITY lowers the ISA (for tests and for comparing timings).
  if (const char* cap = std::getenv("BINARY_NEURONS_CPU_CAPABILITY")) {
    const std::string want(cap);
    if (want == "default") {
      best = Isa::kDefault;
    } else if (want == "avx2" && best == Isa::kAvx512) {
      best = Isa::kAvx2;
    }
  }
  return best;
#else
  return Isa::kDefault;
#endif
}

inline Isa cpu_isa() {
  static const Isa isa = detect_isa();
  return isa;
}

// ---------------------------------------------------------------------------------------------
// Philox4x32-10, many counters at a time (the loop over blocks vectorizes). Bit-identical to
// at::Philox4_32(seed, /*subsequence=*/0, /*offset=*/block): counter = (block, 0), key = seed.

// Portable version: one block at a time (gcc vectorizes the loop, but widens, multiplies and
// narrows every round, so the AVX2 and AVX-512 versions below keep the state in 64-bit lanes).
C10_ALWAYS_INLINE void philox_blocks_portable(
    uint64_t first_block, int64_t num_blocks, uint64_t seed, uint32_t* __restrict words) {
  for (int64_t b = 0; b < num_blocks; ++b) {
    philox4x32_10(first_block + static_cast<uint64_t>(b), seed, words + 4 * b);
  }
}

#if BN_MULTI_ISA
// gcc 12's _mm512_undefined_epi32 self-initializes, and every AVX-512 intrinsic built on it then
// draws a false -Wmaybe-uninitialized (gcc bug 105593, fixed in gcc 13).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// 8 blocks at a time, one per 64-bit lane: each 32-bit state word sits in the low half of its
// lane, so _mm512_mul_epu32 gives the whole 64-bit product and the high halves may hold garbage
// (the multiplies ignore them and the stores drop them). Two such groups run interleaved.
BN_TARGET_AVX512 C10_ALWAYS_INLINE void philox_rounds_avx512(__m512i& c0, __m512i& c1,
                                                             __m512i& c2, __m512i& c3,
                                                             uint64_t seed) {
  const __m512i mul_a = _mm512_set1_epi64(kPhiloxMulA);
  const __m512i mul_b = _mm512_set1_epi64(kPhiloxMulB);
  uint32_t k0 = static_cast<uint32_t>(seed);
  uint32_t k1 = static_cast<uint32_t>(seed >> 32);
#pragma GCC unroll 10
  for (int round = 0; round < 10; ++round) {
    const __m512i product0 = _mm512_mul_epu32(c0, mul_a);
    const __m512i product1 = _mm512_mul_epu32(c2, mul_b);
    c0 = _mm512_ternarylogic_epi32(_mm512_srli_epi64(product1, 32), c1,
                                   _mm512_set1_epi64(k0), 0x96);
    c2 = _mm512_ternarylogic_epi32(_mm512_srli_epi64(product0, 32), c3,
                                   _mm512_set1_epi64(k1), 0x96);
    c1 = product1;
    c3 = product0;
    k0 += kPhiloxA;
    k1 += kPhiloxB;
  }
}

// Stores the 8 blocks of one group: block l's words c0..c3 at words[4 l .. 4 l + 3].
BN_TARGET_AVX512 C10_ALWAYS_INLINE void store_blocks_avx512(__m512i c0, __m512i c1, __m512i c2,
                                                            __m512i c3, uint32_t* out) {
  const __m512i words01 = _mm512_mask_blend_epi32(0xAAAA, c0, _mm512_slli_epi64(c1, 32));
  const __m512i words23 = _mm512_mask_blend_epi32(0xAAAA, c2, _mm512_slli_epi64(c3, 32));
  const __m512i first = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11);
  const __m512i second = _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15);
  _mm512_storeu_si512(out, _mm512_permutex2var_epi64(words01, first, words23));
  _mm512_storeu_si512(out + 16, _mm512_permutex2var_epi64(words01, second, words23));
}

BN_TARGET_AVX512 inline void philox_blocks_avx512(
    uint64_t first_block, int64_t num_blocks, uint64_t seed, uint32_t* __restrict words) {
  const __m512i lanes = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
  int64_t b = 0;
  for (; b + 16 <= num_blocks; b += 16) {
    // 64-bit counters: the carry into the high word comes for free.
    const __m512i counter_a =
        _mm512_add_epi64(_mm512_set1_epi64(static_cast<int64_t>(first_block + b)), lanes);
    const __m512i counter_b = _mm512_add_epi64(counter_a, _mm512_set1_epi64(8));
    __m512i a0 = counter_a, a1 = _mm512_srli_epi64(counter_a, 32);
    __m512i b0 = counter_b, b1 = _mm512_srli_epi64(counter_b, 32);
    __m512i a2 = _mm512_setzero_si512(), a3 = a2, b2 = a2, b3 = a2;
    philox_rounds_avx512(a0, a1, a2, a3, seed);
    philox_rounds_avx512(b0, b1, b2, b3, seed);
    store_blocks_avx512(a0, a1, a2, a3, words + 4 * b);
    store_blocks_avx512(b0, b1, b2, b3, words + 4 * b + 32);
  }
  philox_blocks_portable(first_block + b, num_blocks - b, seed, words + 4 * b);
}
#pragma GCC diagnostic pop

// The same scheme with 4 blocks per vector.
BN_TARGET_AVX2 C10_ALWAYS_INLINE void philox_rounds_avx2(__m256i& c0, __m256i& c1, __m256i& c2,
                                                         __m256i& c3, uint64_t seed) {
  const __m256i mul_a = _mm256_set1_epi64x(kPhiloxMulA);
  const __m256i mul_b = _mm256_set1_epi64x(kPhiloxMulB);
  uint32_t k0 = static_cast<uint32_t>(seed);
  uint32_t k1 = static_cast<uint32_t>(seed >> 32);
#pragma GCC unroll 10
  for (int round = 0; round < 10; ++round) {
    const __m256i product0 = _mm256_mul_epu32(c0, mul_a);
    const __m256i product1 = _mm256_mul_epu32(c2, mul_b);
    c0 = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(product1, 32), c1),
                          _mm256_set1_epi64x(k0));
    c2 = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(product0, 32), c3),
                          _mm256_set1_epi64x(k1));
    c1 = product1;
    c3 = product0;
    k0 += kPhiloxA;
    k1 += kPhiloxB;
  }
}

BN_TARGET_AVX2 C10_ALWAYS_INLINE void store_blocks_avx2(__m256i c0, __m256i c1, __m256i c2,
                                                        __m256i c3, uint32_t* out) {
  const __m256i words01 = _mm256_blend_epi32(c0, _mm256_slli_epi64(c1, 32), 0xAA);
  const __m256i words23 = _mm256_blend_epi32(c2, _mm256_slli_epi64(c3, 32), 0xAA);
  const __m256i even = _mm256_unpacklo_epi64(words01, words23);  // blocks 0 | 2
  const __m256i odd = _mm256_unpackhi_epi64(words01, words23);   // blocks 1 | 3
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_permute2x128_si256(even, odd, 0x20));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 8),
                      _mm256_permute2x128_si256(even, odd, 0x31));
}

BN_TARGET_AVX2 inline void philox_blocks_avx2(
    uint64_t first_block, int64_t num_blocks, uint64_t seed, uint32_t* __restrict words) {
  const __m256i lanes = _mm256_setr_epi64x(0, 1, 2, 3);
  int64_t b = 0;
  for (; b + 8 <= num_blocks; b += 8) {
    const __m256i counter_a =
        _mm256_add_epi64(_mm256_set1_epi64x(static_cast<int64_t>(first_block + b)), lanes);
    const __m256i counter_b = _mm256_add_epi64(counter_a, _mm256_set1_epi64x(4));
    __m256i a0 = counter_a, a1 = _mm256_srli_epi64(counter_a, 32);
    __m256i b0 = counter_b, b1 = _mm256_srli_epi64(counter_b, 32);
    __m256i a2 = _mm256_setzero_si256(), a3 = a2, b2 = a2, b3 = a2;
    philox_rounds_avx2(a0, a1, a2, a3, seed);
    philox_rounds_avx2(b0, b1, b2, b3, seed);
    store_blocks_avx2(a0, a1, a2, a3, words + 4 * b);
    store_blocks_avx2(b0, b1, b2, b3, words + 4 * b + 16);
  }
  philox_blocks_portable(first_block + b, num_blocks - b, seed, words + 4 * b);
}
#endif

template <Isa kIsa>
C10_ALWAYS_INLINE void philox_blocks(
    uint64_t first_block, int64_t num_blocks, uint64_t seed, uint32_t* __restrict words) {
#if BN_MULTI_ISA
  if constexpr (kIsa == Isa::kAvx512) {
    return philox_blocks_avx512(first_block, num_blocks, seed, words);
  } else if constexpr (kIsa == Isa::kAvx2) {
    return philox_blocks_avx2(first_block, num_blocks, seed, words);
  }
#endif
  philox_blocks_portable(first_block, num_blocks, seed, words);
}

}  // namespace binary_neurons
