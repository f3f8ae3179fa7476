// The uniforms the kernels draw, computed one at a time with ATen's own at::Philox4_32 engine:
// what tests check the vectorized generator and a NumPy reference against, at offsets past 2^32
// too. A test helper, compiled by tests/philox_engine.py and loaded with ctypes; it is not part
// of the package.
#include <ATen/core/PhiloxRNGEngine.h>

#include <cstdint>

#include "../binary_neurons/csrc/elementwise.h"

extern "C" void philox_uniform(int64_t seed, int64_t offset, int64_t numel, bool float64,
                               void* out) {
  const int per_block = float64 ? 2 : 4;
  for (int64_t i = 0; i < numel; ++i) {
    const uint64_t index = static_cast<uint64_t>(offset + i);
    at::Philox4_32 engine(static_cast<uint64_t>(seed), 0, index / per_block);
    uint32_t words[4];
    for (uint32_t& word : words) {
      word = engine();
    }
    const int64_t k = static_cast<int64_t>(index % per_block);
    if (float64) {
      static_cast<double*>(out)[i] = binary_neurons::PhiloxUniform<double>::from_words(words, k);
    } else {
      static_cast<float*>(out)[i] = binary_neurons::PhiloxUniform<float>::from_words(words, k);
    }
  }
}
