// The threshold-and-sample op: its CPU kernels (the schema is defined once, in
// binary_neurons/_ops.py; this library registers implementations only).
//
// forward:  seed None -> y = 1[a > 0];  seed given -> y = 1[u < sigmoid(s a)]; NaN -> NaN.
// backward: the named kernel of the kernel list (binary_neurons/_kernel_list.py, generated here as
//           kernel_list.h), one function of elementwise.h per element; a kernel that reads the
//           forward's uniforms u regenerates them from the seed (they are never saved).
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
#include <ATen/core/Tensor.h>
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

// The gradient kernel K, over [begin, end). The backward kernels take `one_grad` when grad
// holds a single value for all elements; a kernel that reads uniforms regenerates the forward's.
template <Isa kIsa, typename scalar_t, typename K>
C10_ALWAYS_INLINE void gradient_range_impl(
    const scalar_t* __restrict grad, bool one_grad, const scalar_t* __restrict in,
    scalar_t* __restrict out, int64_t begin, int64_t end,
    const KernelArgs<at::opmath_type<scalar_t>> args, uint64_t seed) {
  using opmath_t = at::opmath_type<scalar_t>;
  if constexpr (K::kReadsUniform) {
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
                      K::gradient(g, static_cast<opmath_t>(tile_in[j]), args, u));
                }
                return;
              }
              const scalar_t* __restrict tile_grad = grad + start;
              for (int64_t j = 0; j < count; ++j) {
                const opmath_t u = U::from_words(words, skip + j);
                tile_out[j] = static_cast<scalar_t>(K::gradient(
                    static_cast<opmath_t>(tile_grad[j]), static_cast<opmath_t>(tile_in[j]),
                    args, u));
              }
            });
  } else {
    if (one_grad) {
      const opmath_t g = static_cast<opmath_t>(grad[0]);
      for (int64_t i = begin; i < end; ++i) {
        out[i] = static_cast<scalar_t>(
            K::gradient(g, static_cast<opmath_t>(in[i]), args, opmath_t(0)));
      }
      return;
    }
    for (int64_t i = begin; i < end; ++i) {
      out[i] = static_cast<scalar_t>(K::gradient(static_cast<opmath_t>(grad[i]),
                                                 static_cast<opmath_t>(in[i]), args,
                                                 opmath_t(0)));
    }
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

// One version of each kernel per ISA; the always-inline bodies take the caller's ISA.
#define BN_DEFINE_ISA_VARIANTS(SUFFIX, ATTRIBUTE, ISA)                                      \
  template <typename scalar_t>                                                              \
  ATTRIBUTE void sample_range_##SUFFIX(const scalar_t* in, scalar_t* out, int64_t begin,    \
                                       int64_t end, at::opmath_type<scalar_t> slope,        \
                                       uint64_t seed) {                                     \
    sample_range_impl<ISA, scalar_t>(in, out, begin, end, slope, seed);                     \
  }                                                                                         \
  template <typename scalar_t, typename K>                                                  \
  ATTRIBUTE void gradient_range_##SUFFIX(                                                   \
      const scalar_t* grad, bool one_grad, const scalar_t* in, scalar_t* out, int64_t begin, \
      int64_t end, const KernelArgs<at::opmath_type<scalar_t>> args, uint64_t seed) {       \
    gradient_range_impl<ISA, scalar_t, K>(grad, one_grad, in, out, begin, end, args, seed); \
  }                                                                                         \
  template <typename scalar_t>                                                              \
  ATTRIBUTE void threshold_range_##SUFFIX(const scalar_t* in, scalar_t* out, int64_t begin, \
                                          int64_t end) {                                    \
    threshold_range_impl<scalar_t>(in, out, begin, end);                                    \
  }

BN_DEFINE_ISA_VARIANTS(default, , Isa::kDefault)
#if BN_MULTI_ISA
BN_DEFINE_ISA_VARIANTS(avx2, BN_TARGET_AVX2, Isa::kAvx2)
BN_DEFINE_ISA_VARIANTS(avx512, BN_TARGET_AVX512, Isa::kAvx512)
// CALL(SUFFIX) names the kernel's version for one ISA.
#define BN_CALL_BEST_ISA(CALL)    \
  switch (cpu_isa()) {            \
    case Isa::kAvx512:            \
      return CALL(avx512);        \
    case Isa::kAvx2:              \
      return CALL(avx2);          \
    case Isa::kDefault:           \
      return CALL(default);       \
  }
#else
#define BN_CALL_BEST_ISA(CALL) return CALL(default)
#endif

template <typename scalar_t>
void sample_range(const scalar_t* in, scalar_t* out, int64_t begin, int64_t end,
                  at::opmath_type<scalar_t> slope, uint64_t seed) {
#define BN_SAMPLE(SUFFIX) sample_range_##SUFFIX<scalar_t>(in, out, begin, end, slope, seed)
  BN_CALL_BEST_ISA(BN_SAMPLE);
#undef BN_SAMPLE
}

template <typename scalar_t, typename K>
void gradient_range(const scalar_t* grad, bool one_grad, const scalar_t* in, scalar_t* out,
                    int64_t begin, int64_t end, const KernelArgs<at::opmath_type<scalar_t>> args,
                    uint64_t seed) {
#define BN_GRADIENT(SUFFIX) \
  gradient_range_##SUFFIX<scalar_t, K>(grad, one_grad, in, out, begin, end, args, seed)
  BN_CALL_BEST_ISA(BN_GRADIENT);
#undef BN_GRADIENT
}

template <typename scalar_t>
void threshold_range(const scalar_t* in, scalar_t* out, int64_t begin, int64_t end) {
#define BN_THRESHOLD(SUFFIX) threshold_range_##SUFFIX<scalar_t>(in, out, begin, end)
  BN_CALL_BEST_ISA(BN_THRESHOLD);
#undef BN_THRESHOLD
}

// ---------------------------------------------------------------------------------------------
// Op entry points.

constexpr int64_t kGrainSize = 32768;  // at::internal::GRAIN_SIZE

at::Tensor threshold_sample_cpu(const at::Tensor& input, const at::Tensor& slope,
                                const std::optional<at::Tensor>& seed,
                                c10::string_view kernel, double /*clip_value*/,
                                const std::optional<at::Tensor>& tau) {
  constexpr const char* kOp = "threshold_sample";
  const KernelInfo info = check_forward(kOp, input, slope, seed, kernel, tau);
  const double slope_double = host_positive(kOp, "slope", slope, input);
  if (info.reads_tau) {  // used by the backward; checked here, where it is given
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

// The backward with kernel K, the op's arguments checked. Arguments K does not read are 0 (on
// every device and backend, so that a kernel reading one it does not declare fails everywhere).
template <typename K>
at::Tensor gradient_cpu(const char* op, const at::Tensor& grad_output, const at::Tensor& input,
                        double slope, double clip_value, const std::optional<at::Tensor>& seed,
                        const std::optional<at::Tensor>& tau) {
  at::Tensor out = at::empty_like(input);
  if constexpr (K::kIdentity) {  // reads nothing: the identity (the kernel list's rule)
    out.copy_(grad_output);
  } else {
    const at::Tensor in = in_layout_of(input, out);
    const bool one_grad = is_one_value(grad_output);
    const at::Tensor grad = one_grad ? grad_output : in_layout_of(grad_output, out);
    const double tau_double = K::kReadsTau ? host_positive(op, "tau", *tau, input) : 0.0;
    const uint64_t seed_bits =
        K::kReadsUniform ? static_cast<uint64_t>(seed->item<int64_t>()) : 0;
    const int64_t numel = in.numel();
    constexpr const char* kDispatchName = "threshold_sample_backward";
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scalar_type(), kDispatchName,
                                    [&] {
      using opmath_t = at::opmath_type<scalar_t>;
      // Like torch.where(input.abs() <= clip_value, ...): the bound is rounded to the dtype.
      const KernelArgs<opmath_t> args{
          K::kReadsSlope ? static_cast<opmath_t>(slope) : opmath_t(0),
          K::kReadsClipValue ? static_cast<opmath_t>(static_cast<scalar_t>(clip_value))
                             : opmath_t(0),
          static_cast<opmath_t>(tau_double)};
      const scalar_t* grad_data = grad.const_data_ptr<scalar_t>();
      const scalar_t* in_data = in.const_data_ptr<scalar_t>();
      scalar_t* out_data = out.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, numel, kGrainSize, [&](int64_t begin, int64_t end) {
        gradient_range<scalar_t, K>(grad_data, one_grad, in_data, out_data, begin, end, args,
                                    seed_bits);
      });
    });
  }
  return out;
}

at::Tensor threshold_sample_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                         const at::Tensor& slope, c10::string_view kernel,
                                         double clip_value, const std::optional<at::Tensor>& seed,
                                         const std::optional<at::Tensor>& tau) {
  constexpr const char* kOp = "threshold_sample_backward";
  check_backward(kOp, grad_output, input, slope, kernel, seed, tau);
  const double slope_double = host_positive(kOp, "slope", slope, input);
#define BN_RUN(K)                                                                   \
  if (kernel == K::kName) {                                                         \
    return gradient_cpu<K>(kOp, grad_output, input, slope_double, clip_value, seed, tau); \
  }
  BN_FOR_EACH_KERNEL(BN_RUN)
#undef BN_RUN
  TORCH_INTERNAL_ASSERT(false, "check_backward let an unknown kernel through");
  return {};
}

}  // namespace

TORCH_LIBRARY_IMPL(binary_neurons, CPU, m) {
  m.impl("threshold_sample", &threshold_sample_cpu);
  m.impl("threshold_sample_backward", &threshold_sample_backward_cpu);
}

}  // namespace binary_neurons
