// How the threshold_sample kernels turn Philox4x32-10 output words into uniforms in [0, 1).
// Shared by the CPU (threshold_sample.cpp) and CUDA (cuda/threshold_sample.cu) kernels, and
// mirrored by the Python reference in tests/test_native.py.
//
// Element i of a float, half or bfloat16 tensor uses word i % 4 of the Philox block with counter
// i / 4 (24 bits); element i of a double tensor uses words 2 (i % 2) (low) and 2 (i % 2) + 1
// (high) of the block with counter i / 2 (53 bits). The key is the 64-bit seed.
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

namespace binary_neurons {

template <typename T>
struct PhiloxUniform;

template <>
struct PhiloxUniform<float> {
  static constexpr int kPerBlock = 4;
  C10_HOST_DEVICE static inline float from_words(const uint32_t* words, int64_t k) {
    return static_cast<float>(static_cast<int32_t>(words[k] >> 8)) * 0x1p-24f;
  }
};

template <>
struct PhiloxUniform<double> {
  static constexpr int kPerBlock = 2;
  C10_HOST_DEVICE static inline double from_words(const uint32_t* words, int64_t k) {
    const uint64_t bits =
        (static_cast<uint64_t>(words[2 * k + 1]) << 32) | static_cast<uint64_t>(words[2 * k]);
    return static_cast<double>(static_cast<int64_t>(bits >> 11)) * 0x1p-53;
  }
};

}  // namespace binary_neurons
