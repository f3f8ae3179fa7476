// The per-element arithmetic of the threshold_sample kernels, for the CPU and the CUDA build.
//
// Every value a kernel computes comes from the functions here: the CPU kernels call them in
// loops that gcc vectorizes (threshold_sample.cpp), the CUDA kernels once per element
// (cuda/threshold_sample.cu), which keep only indexing, vector access and launch. So the CPU test
// suite exercises the arithmetic the GPU runs, and both devices give bit-identical samples and
// gradients for the same seed, dtype and layout. That takes the same IEEE operations in the same
// order on both: exp is the polynomial below, not a library call, and fused multiply-adds are
// written out (multiply_add) where they are wanted and nowhere else (the CPU build passes
// -ffp-contract=off, the CUDA build -fmad=false, so that no compiler fuses others).
//
// Uniforms: element i of a float, half or bfloat16 tensor uses word i % 4 of the Philox4x32-10
// block with counter i / 4; element i of a double tensor uses words 2 (i % 2) (low) and
// 2 (i % 2) + 1 (high) of the block with counter i / 2. The key is the 64-bit seed. A uniform is
// the midpoint of one of 2^23 (float) or 2^52 (double) equal cells of [0, 1), exactly
// representable: never 0 and never 1, so that p = 0 never fires and p = 1 always does, and
// P(fire) is p rounded to the cell grid (error at most 2^-24, resp. 2^-53).
// tests/test_native.py mirrors this in NumPy.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

// Host and device, always inlined (the CPU loops vectorize only with the bodies inlined).
#define BN_INLINE C10_HOST_DEVICE C10_ALWAYS_INLINE

// Unroll the loop that follows, for nvcc and gcc alike.
#if defined(__CUDACC__) || defined(__clang__)
#define BN_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define BN_UNROLL _Pragma("GCC unroll 16")
#else
#define BN_UNROLL
#endif

namespace binary_neurons {

template <typename To, typename From>
BN_INLINE To bit_cast_value(const From& from) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast_value: sizes differ");
  To to;
  memcpy(&to, &from, sizeof(To));
  return to;
}

// a * b + c rounded once. One instruction on the GPU and in the CPU kernels built for AVX2 and
// AVX-512 (gcc vectorizes it there); the baseline-ISA CPU kernel calls libm's exact fma.
template <typename T>
BN_INLINE T multiply_add(T a, T b, T c) {
  if constexpr (std::is_same_v<T, float>) {
    return fmaf(a, b, c);
  } else {
    return fma(a, b, c);
  }
}

// ---------------------------------------------------------------------------------------------
// Philox4x32-10 and the uniforms drawn from its words.

constexpr uint32_t kPhiloxA = 0x9E3779B9;
constexpr uint32_t kPhiloxB = 0xBB67AE85;
constexpr uint32_t kPhiloxMulA = 0xD2511F53;
constexpr uint32_t kPhiloxMulB = 0xCD9E8D57;

// The four words of Philox4x32-10 for counter (block, 0) under the 64-bit key `seed`: what
// at::Philox4_32(seed, /*subsequence=*/0, /*offset=*/block) returns first (a test checks it).
BN_INLINE void philox4x32_10(uint64_t block, uint64_t seed, uint32_t words[4]) {
  uint32_t c0 = static_cast<uint32_t>(block);
  uint32_t c1 = static_cast<uint32_t>(block >> 32);
  uint32_t c2 = 0;
  uint32_t c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(seed);
  uint32_t k1 = static_cast<uint32_t>(seed >> 32);
  BN_UNROLL
  for (int round = 0; round < 10; ++round) {
    const uint64_t product0 = static_cast<uint64_t>(kPhiloxMulA) * c0;
    const uint64_t product1 = static_cast<uint64_t>(kPhiloxMulB) * c2;
    const uint32_t next0 = static_cast<uint32_t>(product1 >> 32) ^ c1 ^ k0;
    const uint32_t next2 = static_cast<uint32_t>(product0 >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(product1);
    c3 = static_cast<uint32_t>(product0);
    c0 = next0;
    c2 = next2;
    k0 += kPhiloxA;
    k1 += kPhiloxB;
  }
  words[0] = c0;
  words[1] = c1;
  words[2] = c2;
  words[3] = c3;
}

template <typename T>
struct PhiloxUniform;

// (2 (word >> 9) + 1) 2^-24: an odd multiple of 2^-24, below 2^24 so exact in float.
template <>
struct PhiloxUniform<float> {
  static constexpr int kPerBlock = 4;
  BN_INLINE static float from_words(const uint32_t* words, int64_t k) {
    const int32_t odd = static_cast<int32_t>((words[k] >> 9) << 1) | 1;
    return static_cast<float>(odd) * 0x1p-24f;
  }
};

// (2 (bits >> 12) + 1) 2^-53 for the 64 bits of two words: exact in double.
template <>
struct PhiloxUniform<double> {
  static constexpr int kPerBlock = 2;
  BN_INLINE static double from_words(const uint32_t* words, int64_t k) {
    const uint64_t bits =
        (static_cast<uint64_t>(words[2 * k + 1]) << 32) | static_cast<uint64_t>(words[2 * k]);
    const int64_t odd = static_cast<int64_t>((bits >> 12) << 1) | 1;
    return static_cast<double>(odd) * 0x1p-53;
  }
};

// ---------------------------------------------------------------------------------------------
// exp and the sigmoid, from IEEE adds, multiplies and one division.

template <typename T>
struct ExpConstants;

template <>
struct ExpConstants<float> {
  using Bits = int32_t;
  static constexpr float kLog2e = 1.44269504088896341f;
  static constexpr float kLn2Hi = 0.693359375f;
  static constexpr float kLn2Lo = -2.12194440e-4f;
  // Adding 1.5 * 2^23 rounds to an integer, which then sits in the low mantissa bits.
  static constexpr float kShifter = 12582912.0f;
  static constexpr Bits kShifterBits = 0x4B400000;
  static constexpr int kMantissaBits = 23;
  static constexpr Bits kBias = 127;
  // sigmoid saturates beyond this; exp(+-kMaxArg) and 2^n stay normal.
  static constexpr float kMaxArg = 87.0f;
};

template <>
struct ExpConstants<double> {
  using Bits = int64_t;
  static constexpr double kLog2e = 1.44269504088896340736;
  static constexpr double kLn2Hi = 6.93147180369123816490e-01;
  static constexpr double kLn2Lo = 1.90821492927058770002e-10;
  static constexpr double kShifter = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr Bits kShifterBits = 0x4338000000000000LL;
  static constexpr int kMantissaBits = 52;
  static constexpr Bits kBias = 1023;
  static constexpr double kMaxArg = 708.0;
};

// exp(x) for |x| <= kMaxArg (NaN in, NaN out): Cody-Waite reduction to |r| <= ln2/2, a Taylor
// polynomial accurate to about one ulp, and the power of two assembled from the integer bits.
template <typename T>
BN_INLINE T exp_bounded(T x) {
  using C = ExpConstants<T>;
  using Bits = typename C::Bits;
  const T shifted = multiply_add(x, C::kLog2e, C::kShifter);
  const T n = shifted - C::kShifter;
  const Bits n_int = bit_cast_value<Bits>(shifted) - C::kShifterBits;
  T r = multiply_add(-n, C::kLn2Hi, x);
  r = multiply_add(-n, C::kLn2Lo, r);
  // Taylor coefficients 1/k!, highest first (float: k = 7..2, double: k = 13..2).
  constexpr int kTerms = std::is_same_v<T, float> ? 6 : 12;
  constexpr double kCoefficients[12] = {
      1.0 / 6227020800.0, 1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0,
      1.0 / 362880.0,     1.0 / 40320.0,     1.0 / 5040.0,     1.0 / 720.0,
      1.0 / 120.0,        1.0 / 24.0,        1.0 / 6.0,        0.5};
  T poly = T(kCoefficients[12 - kTerms]);
  BN_UNROLL
  for (int k = 12 - kTerms + 1; k < 12; ++k) {
    poly = multiply_add(poly, r, T(kCoefficients[k]));
  }
  poly = multiply_add(poly, r, T(1));
  poly = multiply_add(poly, r, T(1));
  const T scale = bit_cast_value<T>(static_cast<Bits>((n_int + C::kBias) << C::kMantissaBits));
  return poly * scale;
}

// log(x) for a positive normal x (the uniforms): x = m 2^e with m in [sqrt(1/2), sqrt(2)), and
// log(m) = 2 atanh(t) with t = (m - 1) / (m + 1), |t| <= 0.172, from its odd series.
template <typename T>
BN_INLINE T log_normal(T x) {
  using C = ExpConstants<T>;
  using Bits = typename C::Bits;
  constexpr Bits kMantissaMask = (Bits(1) << C::kMantissaBits) - 1;
  const Bits bits = bit_cast_value<Bits>(x);
  // sqrt(2) as the mantissa bits of [1, 2): 0x3504F3 (float), 0x6A09E667F3BCD (double).
  constexpr Bits kSqrt2Mantissa =
      std::is_same_v<T, float> ? Bits(0x3504F3) : Bits(0x6A09E667F3BCDLL);
  // m >= sqrt(2) is halved (exactly), so that m lies in [sqrt(1/2), sqrt(2)). Branch-free, so
  // that the CPU loops vectorize.
  const Bits halve = (bits & kMantissaMask) >= kSqrt2Mantissa ? Bits(1) : Bits(0);
  const Bits exponent = (bits >> C::kMantissaBits) - C::kBias + halve;
  const Bits mantissa_bits =
      ((bits & kMantissaMask) | ((C::kBias - halve) << C::kMantissaBits));
  const T m = bit_cast_value<T>(mantissa_bits);
  const T t = (m - T(1)) / (m + T(1));
  const T t2 = t * t;
  // 1 + t^2/3 + t^4/5 + ...: to t^14 (float) or t^30 (double), past the type's precision.
  constexpr int kTerms = std::is_same_v<T, float> ? 7 : 15;
  T series = T(1.0 / (2 * kTerms + 1));
  BN_UNROLL
  for (int k = kTerms - 1; k >= 0; --k) {
    series = multiply_add(series, t2, T(1.0 / (2 * k + 1)));
  }
  const T n = static_cast<T>(exponent);
  return multiply_add(n, C::kLn2Hi, multiply_add(n, C::kLn2Lo, T(2) * t * series));
}

// Clamps to [-limit, limit]; written with compares so that NaN passes through.
template <typename T>
BN_INLINE T clamp_keep_nan(T x, T limit) {
  x = x < -limit ? -limit : x;
  return x > limit ? limit : x;
}

// 1[u < sigmoid(x)], as u (1 + exp(-x)) < 1: the same test without a division.
template <typename T>
BN_INLINE bool below_sigmoid(T u, T x) {
  const T e = exp_bounded(clamp_keep_nan(-x, ExpConstants<T>::kMaxArg));
  return u * (T(1) + e) < T(1);
}

// sigmoid(x) sigmoid(-x) = e / (1 + e)^2 with e = exp(-|x|): no cancellation, no overflow.
// Past kMaxArg, e = exp(-|x| / 2)^2 keeps the subnormal tail (and underflows to 0 only where
// the true value does), so that an infinite gradient times it stays infinite, not NaN.
template <typename T>
BN_INLINE T sigmoid_derivative(T x) {
  const T ax = x < T(0) ? -x : x;
  const bool tail = ax > ExpConstants<T>::kMaxArg;
  const T half = exp_bounded(clamp_keep_nan(tail ? -ax * T(0.5) : -ax, ExpConstants<T>::kMaxArg));
  const T e = tail ? half * half : half;
  const T one_plus_e = T(1) + e;
  return e / (one_plus_e * one_plus_e);
}

// ---------------------------------------------------------------------------------------------
// The op's per-element functions, in the opmath type T (float for half types). NaN inputs give
// NaN outputs in the forward functions.

// Whether a slope can be used with inputs computed in T: a finite number > 0 in T. (A slope
// on the host is checked before the kernels run; one read on the GPU cannot be without a
// synchronization, so the CUDA kernels make every output that uses it NaN instead.)
template <typename T>
BN_INLINE bool slope_is_valid(T slope) {
  return slope > T(0) && slope <= std::numeric_limits<T>::max();
}

// Deterministic neuron: 1[a > 0].
template <typename T>
BN_INLINE T threshold(T a) {
  const T y = a > T(0) ? T(1) : T(0);
  return a != a ? a : y;
}

// Stochastic neuron with uniform u: 1[u < sigmoid(slope a)].
template <typename T>
BN_INLINE T sample(T u, T a, T slope) {
  const T y = below_sigmoid(u, a * slope) ? T(1) : T(0);
  return a != a ? a : y;
}

// The gradient kernels. Each is listed, with what it reads, in the kernel list
// (binary_neurons/_kernel_list.py), from which the build generates the dispatch (kernel_list.h):
// a new fused estimator is one function here, with this signature, and one entry there. g is the
// incoming gradient, a the input, args the op's arguments, u the forward's uniform (0 for
// kernels that do not read it).
template <typename T>
struct KernelArgs {
  T slope;
  T clip_value;  // rounded to the input's dtype
  T tau;
};

// Straight-through: g.
template <typename T>
BN_INLINE T identity_grad(T g, T, const KernelArgs<T>&, T) {
  return g;
}

// Sigmoid-adjusted straight-through: g slope sigmoid'(slope a).
template <typename T>
BN_INLINE T sigmoid_grad(T g, T a, const KernelArgs<T>& args, T) {
  return g * (args.slope * sigmoid_derivative(a * args.slope));
}

// Binary Gumbel (concrete) straight-through with the forward's uniform u and temperature tau:
// g (slope / tau) q (1 - q), q = sigmoid((slope a - logit(u)) / tau). 1 - u is exact for the
// uniforms' grid, so logit(u) = log(u) - log(1 - u) is as accurate as log.
template <typename T>
BN_INLINE T gumbel_grad(T g, T a, const KernelArgs<T>& args, T u) {
  const T logit_u = log_normal(u) - log_normal(T(1) - u);
  const T z = (a * args.slope - logit_u) / args.tau;
  return g * ((args.slope / args.tau) * sigmoid_derivative(z));
}

// Clipped straight-through: g 1[|a| <= clip].
template <typename T>
BN_INLINE T clipped_grad(T g, T a, const KernelArgs<T>& args, T) {
  const T magnitude = a < T(0) ? -a : a;
  return magnitude <= args.clip_value ? g : T(0);
}

}  // namespace binary_neurons
