// The threshold-and-sample op: schema and CPU kernels.
//
// forward:  seed None -> y = 1[a > 0];  seed given -> y = 1[u < sigmoid(s a)]; NaN -> NaN.
// backward: "identity" -> g;  "sigmoid" -> g s sigmoid(s a) sigmoid(-s a);
//           "clipped" -> g 1[|a| <= clip_value];
//           "gumbel" -> g (s / tau) q (1 - q), q = sigmoid((s a - logit(u)) / tau), with the
//           forward's uniforms u regenerated from the seed (never saved).
//
// The uniforms come from counter-based Philox4x32-10 (the algorithm of at::Philox4_32) keyed by
// the 64-bit seed, with the element's position in memory as the counter. So the samples depend
// only on the seed and the layout, never on the thread count or how the work is split. Every
// per-element value comes from elementwise.h, which the CUDA kernels (cuda/threshold_sample.cu)
// call too: both devices compute the same bits.
//
// The elementwise loops are written for gcc's auto-vectorizer (built with -O3
// -fno-trapping-math -ffp-contract=off), Philox for AVX2 and AVX-512 with intrinsics
// (cpu_philox.h); each kernel is compiled for AVX-512, AVX2 and the baseline ISA and the best
// one the CPU supports is picked at run time (BINARY_NEURONS_CPU_CAPABILITY=avx2|default lowers
// it), so that one build runs on any x86-64 CPU.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/PhiloxRNGEngine.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include "cpu_philox.h"
#include "elementwise.h"
#include "op_arguments.h"

#include <algorithm>
#include <cstdint>

namespace binary_neurons {
namespace {

// ---------------------------------------------------------------------------------------------
// Kernels over a flat range [begin, end) of elements (input and output share one dense layout).

// Calls body(start, count, words, skip) for consecutive tiles of [begin, end), with the Philox
// words of each tile's blocks: element start + j uses uniform U::from_words(words, skip + j).
// Tiles start at multiples of kTile, so each Philox block is generated whole; the first tile of
// a chunk may start inside a block, and `skip` steps over the words before it.
template <Isa kIsa, typename opmath_t, typename Body>
C10_ALWAYS_INLINE void for_each_uniform_tile(int64_t begin, int64_t end, uint64_t seed,
                                             const Body& body) {
  using U = PhiloxUniform<opmath_t>;
  constexpr int64_t kTile = 1024;
  alignas(64) uint32_t words[4 * (kTile / U::kPerBlock + 1)];
  for (int64_t start = begin; start < end;) {
    const int64_t stop = std::min(end, (start / kTile + 1) * kTile);
    const int64_t first_block = start / U::kPerBlock;
    const int64_t num_blocks = (stop - 1) / U::kPerBlock - first_block + 1;
    philox_blocks<kIsa>(static_cast<uint64_t>(first_block), num_blocks, seed, words);
    body(start, stop - start, words, start - first_block * U::kPerBlock);
    start = stop;
  }
}

template <Isa kIsa, typename scalar_t>
C10_ALWAYS_INLINE void sample_range_impl(
    const scalar_t* __restrict in, scalar_t* __restrict out, int64_t begin, int64_t end,
    at::opmath_type<scalar_t> slope, uint64_t seed) {
  using opmath_t = at::opmath_type<scalar_t>;
  using U = PhiloxUniform<opmath_t>;
  for_each_uniform_tile<kIsa, opmath_t>(
      begin, end, seed,
      [&](int64_t start, int64_t count, const uint32_t* words, int64_t skip)
          __attribute__((always_inline)) {
            const scalar_t* __restrict tile_in = in + start;
            scalar_t* __restrict tile_out = out + start;
            for (int64_t j = 0; j < count; ++j) {
              const opmath_t u = U::from_words(words, skip + j);
              tile_out[j] =
                  static_cast<scalar_t>(sample(u, static_cast<opmath_t>(tile_in[j]), slope));
            }
          });
}

// The Gumbel pseudo-gradient regenerates the forward's uniforms from the same seed.
template <Isa kIsa, typename scalar_t>
C10_ALWAYS_INLINE void gumbel_grad_range_impl(
    const scalar_t* __restrict grad, bool one_grad, const scalar_t* __restrict in,
    scalar_t* __restrict out, int64_t begin, int64_t end, at::opmath_type<scalar_t> slope,
    at::opmath_type<scalar_t> tau, uint64_t seed) {
  using opmath_t = at::opmath_type<scalar_t>;
  using U = PhiloxUniform<opmath_t>;
  for_each_uniform_tile<kIsa, opmath_t>(
      begin, end, seed,
      [&](int64_t start, int64_t count, const uint32_t* words, int64_t skip)
          __attribute__((always_inline)) {
            const scalar_t* __restrict tile_in = in + start;
            scalar_t* __restrict tile_out = out + start;
            if (one_grad) {
              const opmath_t g = static_cast<opmath_t>(grad[0]);
              for (int64_t j = 0; j < count; ++j) {
                const opmath_t u = U::from_words(words, skip + j);
                tile_out[j] = static_cast<scalar_t>(
                    gumbel_grad(g, static_cast<opmath_t>(tile_in[j]), slope, tau, u));
              }
              return;
            }
            const scalar_t* __restrict tile_grad = grad + start;
            for (int64_t j = 0; j < count; ++j) {
              const opmath_t u = U::from_words(words, skip + j);
              tile_out[j] = static_cast<scalar_t>(gumbel_grad(
                  static_cast<opmath_t>(tile_grad[j]), static_cast<opmath_t>(tile_in[j]), slope,
                  tau, u));
            }
          });
}

// The backward kernels take `one_grad` when grad holds a single value for all elements.
template <typename scalar_t>
C10_ALWAYS_INLINE void sigmoid_grad_range_impl(
    const scalar_t* __restrict grad, bool one_grad, const scalar_t* __restrict in,
    scalar_t* __restrict out, int64_t begin, int64_t end, at::opmath_type<scalar_t> slope) {
  using opmath_t = at::opmath_type<scalar_t>;
  if (one_grad) {
    const opmath_t g = static_cast<opmath_t>(grad[0]);
    for (int64_t i = begin; i < end; ++i) {
      out[i] = static_cast<scalar_t>(sigmoid_grad(g, static_cast<opmath_t>(in[i]), slope));
    }
    return;
  }
  for (int64_t i = begin; i < end; ++i) {
    const opmath_t g = static_cast<opmath_t>(grad[i]);
    out[i] = static_cast<scalar_t>(sigmoid_grad(g, static_cast<opmath_t>(in[i]), slope));
  }
}

template <typename scalar_t>
C10_ALWAYS_INLINE void threshold_range_impl(const scalar_t* __restrict in,
                                            scalar_t* __restrict out, int64_t begin,
                                            int64_t end) {
  using opmath_t = at::opmath_type<scalar_t>;
  for (int64_t i = begin; i < end; ++i) {
    out[i] = static_cast<scalar_t>(threshold(static_cast<opmath_t>(in[i])));
  }
}

template <typename scalar_t>
C10_ALWAYS_INLINE void clipped_grad_range_impl(
    const scalar_t* __restrict grad, bool one_grad, const scalar_t* __restrict in,
    scalar_t* __restrict out, int64_t begin, int64_t end, at::opmath_type<scalar_t> clip_value) {
  using opmath_t = at::opmath_type<scalar_t>;
  if (one_grad) {
    const opmath_t g = static_cast<opmath_t>(grad[0]);
    for (int64_t i = begin; i < end; ++i) {
      out[i] = static_cast<scalar_t>(clipped_grad(g, static_cast<opmath_t>(in[i]), clip_value));
    }
    return;
  }
  for (int64_t i = begin; i < end; ++i) {
    const opmath_t g = static_cast<opmath_t>(grad[i]);
    out[i] = static_cast<scalar_t>(clipped_grad(g, static_cast<opmath_t>(in[i]), clip_value));
  }
}

// One version of each kernel per ISA; the always-inline bodies take the caller's ISA.
#define BN_DEFINE_ISA_VARIANTS(SUFFIX, ATTRIBUTE, ISA)                                      \
  template <typename scalar_t>                                                              \
  ATTRIBUTE void sample_range_##SUFFIX(const scalar_t* in, scalar_t* out, int64_t begin,    \
                                       int64_t end, at::opmath_type<scalar_t> slope,        \
                                       uint64_t seed) {                                     \
    sample_range_impl<ISA, scalar_t>(in, out, begin, end, slope, seed);                     \
  }                                                                                         \
  template <typename scalar_t>                                                              \
  ATTRIBUTE void sigmoid_grad_range_##SUFFIX(const scalar_t* grad, bool one_grad,           \
                                             const scalar_t* in, scalar_t* out,             \
                                             int64_t begin, int64_t end,                    \
                                             at::opmath_type<scalar_t> slope) {             \
    sigmoid_grad_range_impl<scalar_t>(grad, one_grad, in, out, begin, end, slope);          \
  }                                                                                         \
  template <typename scalar_t>                                                              \
  ATTRIBUTE void gumbel_grad_range_##SUFFIX(                                                \
      const scalar_t* grad, bool one_grad, const scalar_t* in, scalar_t* out, int64_t begin, \
      int64_t end, at::opmath_type<scalar_t> slope, at::opmath_type<scalar_t> tau,          \
      uint64_t seed) {                                                                      \
    gumbel_grad_range_impl<ISA, scalar_t>(grad, one_grad, in, out, begin, end, slope, tau,  \
                                          seed);                                            \
  }                                                                                         \
  template <typename scalar_t>                                                              \
  ATTRIBUTE void threshold_range_##SUFFIX(const scalar_t* in, scalar_t* out, int64_t begin, \
                                          int64_t end) {                                    \
    threshold_range_impl<scalar_t>(in, out, begin, end);                                    \
  }                                                                                         \
  template <typename scalar_t>                                                              \
  ATTRIBUTE void clipped_grad_range_##SUFFIX(const scalar_t* grad, bool one_grad,           \
                                             const scalar_t* in, scalar_t* out,             \
                                             int64_t begin, int64_t end,                    \
                                             at::opmath_type<scalar_t> clip_value) {        \
    clipped_grad_range_impl<scalar_t>(grad, one_grad, in, out, begin, end, clip_value);     \
  }

BN_DEFINE_ISA_VARIANTS(default, , Isa::kDefault)
#if BN_MULTI_ISA
BN_DEFINE_ISA_VARIANTS(avx2, BN_TARGET_AVX2, Isa::kAvx2)
BN_DEFINE_ISA_VARIANTS(avx512, BN_TARGET_AVX512, Isa::kAvx512)
#define BN_CALL_BEST_ISA(KERNEL, ...)                  \
  switch (cpu_isa()) {                                 \
    case Isa::kAvx512:                                 \
      return KERNEL##_avx512<scalar_t>(__VA_ARGS__);   \
    case Isa::kAvx2:                                   \
      return KERNEL##_avx2<scalar_t>(__VA_ARGS__);     \
    case Isa::kDefault:                                \
      return KERNEL##_default<scalar_t>(__VA_ARGS__);  \
  }
#else
#define BN_CALL_BEST_ISA(KERNEL, ...) return KERNEL##_default<scalar_t>(__VA_ARGS__)
#endif

template <typename scalar_t>
void sample_range(const scalar_t* in, scalar_t* out, int64_t begin, int64_t end,
                  at::opmath_type<scalar_t> slope, uint64_t seed) {
  BN_CALL_BEST_ISA(sample_range, in, out, begin, end, slope, seed);
}

template <typename scalar_t>
void sigmoid_grad_range(const scalar_t* grad, bool one_grad, const scalar_t* in, scalar_t* out,
                        int64_t begin, int64_t end, at::opmath_type<scalar_t> slope) {
  BN_CALL_BEST_ISA(sigmoid_grad_range, grad, one_grad, in, out, begin, end, slope);
}

template <typename scalar_t>
void gumbel_grad_range(const scalar_t* grad, bool one_grad, const scalar_t* in, scalar_t* out,
                       int64_t begin, int64_t end, at::opmath_type<scalar_t> slope,
                       at::opmath_type<scalar_t> tau, uint64_t seed) {
  BN_CALL_BEST_ISA(gumbel_grad_range, grad, one_grad, in, out, begin, end, slope, tau, seed);
}

template <typename scalar_t>
void threshold_range(const scalar_t* in, scalar_t* out, int64_t begin, int64_t end) {
  BN_CALL_BEST_ISA(threshold_range, in, out, begin, end);
}

template <typename scalar_t>
void clipped_grad_range(const scalar_t* grad, bool one_grad, const scalar_t* in, scalar_t* out,
                        int64_t begin, int64_t end, at::opmath_type<scalar_t> clip_value) {
  BN_CALL_BEST_ISA(clipped_grad_range, grad, one_grad, in, out, begin, end, clip_value);
}

// ---------------------------------------------------------------------------------------------
// Op entry points.

constexpr int64_t kGrainSize = 32768;  // at::internal::GRAIN_SIZE

at::Tensor threshold_sample_cpu(const at::Tensor& input, const at::Tensor& slope,
                                const std::optional<at::Tensor>& seed,
                                c10::string_view estimator, double /*clip_value*/,
                                const std::optional<at::Tensor>& tau) {
  constexpr const char* kOp = "threshold_sample";
  check_forward(kOp, input, slope, seed, estimator, tau);
  const double slope_double = host_positive(kOp, "slope", slope, input);
  if (estimator == "gumbel") {  // used by the backward; checked here, where it is given
    host_positive(kOp, "tau", *tau, input);
  }
  at::Tensor out = at::empty_like(input);
  const at::Tensor in = in_layout_of(input, out);
  const int64_t numel = in.numel();
  if (!seed.has_value()) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scalar_type(), kOp, [&] {
      const scalar_t* in_data = in.const_data_ptr<scalar_t>();
      scalar_t* out_data = out.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, numel, kGrainSize, [&](int64_t begin, int64_t end) {
        threshold_range<scalar_t>(in_data, out_data, begin, end);
      });
    });
    return out;
  }
  const uint64_t seed_bits = static_cast<uint64_t>(seed->item<int64_t>());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scalar_type(), kOp, [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const opmath_t slope_op = static_cast<opmath_t>(slope_double);
    const scalar_t* in_data = in.const_data_ptr<scalar_t>();
    scalar_t* out_data = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, numel, kGrainSize, [&](int64_t begin, int64_t end) {
      sample_range<scalar_t>(in_data, out_data, begin, end, slope_op, seed_bits);
    });
  });
  return out;
}

at::Tensor threshold_sample_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                         const at::Tensor& slope, c10::string_view estimator,
                                         double clip_value, const std::optional<at::Tensor>& seed,
                                         const std::optional<at::Tensor>& tau) {
  constexpr const char* kOp = "threshold_sample_backward";
  check_backward(kOp, grad_output, input, slope, estimator, seed, tau);
  const double slope_double = host_positive(kOp, "slope", slope, input);
  at::Tensor out = at::empty_like(input);
  if (estimator == "identity") {
    out.copy_(grad_output);
    return out;
  }
  const at::Tensor in = in_layout_of(input, out);
  const bool one_grad = is_one_value(grad_output);
  const at::Tensor grad = one_grad ? grad_output : in_layout_of(grad_output, out);
  const int64_t numel = in.numel();
  if (estimator == "sigmoid") {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scalar_type(), kOp, [&] {
      using opmath_t = at::opmath_type<scalar_t>;
      const opmath_t slope_op = static_cast<opmath_t>(slope_double);
      const scalar_t* grad_data = grad.const_data_ptr<scalar_t>();
      const scalar_t* in_data = in.const_data_ptr<scalar_t>();
      scalar_t* out_data = out.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, numel, kGrainSize, [&](int64_t begin, int64_t end) {
        sigmoid_grad_range<scalar_t>(grad_data, one_grad, in_data, out_data, begin, end,
                                     slope_op);
      });
    });
    return out;
  }
  if (estimator == "gumbel") {
    const double tau_double = host_positive(kOp, "tau", *tau, input);
    const uint64_t seed_bits = static_cast<uint64_t>(seed->item<int64_t>());
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scalar_type(), kOp, [&] {
      using opmath_t = at::opmath_type<scalar_t>;
      const opmath_t slope_op = static_cast<opmath_t>(slope_double);
      const opmath_t tau_op = static_cast<opmath_t>(tau_double);
      const scalar_t* grad_data = grad.const_data_ptr<scalar_t>();
      const scalar_t* in_data = in.const_data_ptr<scalar_t>();
      scalar_t* out_data = out.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, numel, kGrainSize, [&](int64_t begin, int64_t end) {
        gumbel_grad_range<scalar_t>(grad_data, one_grad, in_data, out_data, begin, end, slope_op,
                                    tau_op, seed_bits);
      });
    });
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scalar_type(), kOp, [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    // Like torch.where(input.abs() <= clip_value, ...): the bound is rounded to the input's dtype.
    const opmath_t clip = static_cast<opmath_t>(static_cast<scalar_t>(clip_value));
    const scalar_t* grad_data = grad.const_data_ptr<scalar_t>();
    const scalar_t* in_data = in.const_data_ptr<scalar_t>();
    scalar_t* out_data = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, numel, kGrainSize, [&](int64_t begin, int64_t end) {
      clipped_grad_range<scalar_t>(grad_data, one_grad, in_data, out_data, begin, end, clip);
    });
  });
  return out;
}

// The uniforms the kernels draw for elements [offset, offset + numel), computed one at a time
// with ATen's own at::Philox4_32 engine. Only for tests: they check the vectorized generator and
// a Python reference against it, at offsets past 2^32 too.
at::Tensor philox_uniform(int64_t seed, int64_t offset, int64_t numel, bool float64) {
  TORCH_CHECK(offset >= 0 && numel >= 0, "_philox_uniform: expected offset >= 0 and numel >= 0, ",
              "got ", offset, " and ", numel);
  at::Tensor out =
      at::empty({numel}, at::TensorOptions().dtype(float64 ? at::kDouble : at::kFloat));
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
      out.mutable_data_ptr<double>()[i] = PhiloxUniform<double>::from_words(words, k);
    } else {
      out.mutable_data_ptr<float>()[i] = PhiloxUniform<float>::from_words(words, k);
    }
  }
  return out;
}

}  // namespace

// Keep in sync with SCHEMAS in binary_neurons/_ops.py (tests compare them).
TORCH_LIBRARY(binary_neurons, m) {
  m.def(
      "threshold_sample(Tensor input, Tensor slope, Tensor? seed, str estimator, "
      "float clip_value, Tensor? tau=None) -> Tensor");
  m.def(
      "threshold_sample_backward(Tensor grad_output, Tensor input, Tensor slope, "
      "str estimator, float clip_value, Tensor? seed=None, Tensor? tau=None) -> Tensor");
  m.def("_philox_uniform(int seed, int offset, int numel, bool float64) -> Tensor",
        &philox_uniform);
}

TORCH_LIBRARY_IMPL(binary_neurons, CPU, m) {
  m.impl("threshold_sample", &threshold_sample_cpu);
  m.impl("threshold_sample_backward", &threshold_sample_backward_cpu);
}

}  // namespace binary_neurons
