// CUDA kernels of the threshold-and-sample op (the schema is defined once, in
// binary_neurons/_ops.py; the gradient kernels come from the generated kernel_list.h).
//
// Only indexing, vector access and launch are here: every value comes from ../elementwise.h,
// which the CPU kernels call too, so both devices give the same bits for a given seed, dtype and
// layout. Each thread handles one group of kPerBlock consecutive elements (4 for float, half and
// bfloat16, 2 for double): one Philox4x32-10 block gives that group's uniforms. Loads and stores
// are one vector per group when the pointers allow it; indexes are 64-bit; slope and seed are
// read on the device when they are CUDA tensors, so no call synchronizes with the host.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "../elementwise.h"
#include "../op_arguments.h"

namespace binary_neurons {
namespace {

constexpr int kThreadsPerBlock = 256;

// A one-element argument that is either a device pointer or a value passed by the host.
template <typename T>
struct DeviceScalar {
  const T* pointer;
  T value;
  __device__ T get() const { return pointer != nullptr ? *pointer : value; }
};

template <typename scalar_t, int kVec>
struct alignas(sizeof(scalar_t) * kVec) Pack {
  scalar_t v[kVec];
};

// Calls op(group, a, g, y) for each group of kVec elements: a and g hold the group's input and
// gradient (opmath), y receives its outputs. Elements past n are never read or written. With
// one_grad, grad points at a single value that is every element's gradient.
template <typename scalar_t, int kVec, typename Op>
__global__ void elementwise_kernel(const scalar_t* __restrict__ input,
                                   const scalar_t* __restrict__ grad, bool one_grad,
                                   scalar_t* __restrict__ out, int64_t n, bool vector_access,
                                   Op op) {
  using opmath_t = at::opmath_type<scalar_t>;
  using PackT = Pack<scalar_t, kVec>;
  const int64_t num_groups = (n + kVec - 1) / kVec;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t group = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       group < num_groups; group += stride) {
    const int64_t first = group * kVec;
    const bool whole = vector_access && first + kVec <= n;
    opmath_t a[kVec];
    opmath_t g[kVec];
    opmath_t y[kVec];
    if (whole) {
      const PackT in_pack = *reinterpret_cast<const PackT*>(input + first);
#pragma unroll
      for (int k = 0; k < kVec; ++k) a[k] = static_cast<opmath_t>(in_pack.v[k]);
      if (grad != nullptr && !one_grad) {
        const PackT grad_pack = *reinterpret_cast<const PackT*>(grad + first);
#pragma unroll
        for (int k = 0; k < kVec; ++k) g[k] = static_cast<opmath_t>(grad_pack.v[k]);
      }
    } else {
#pragma unroll
      for (int k = 0; k < kVec; ++k) {
        const bool inside = first + k < n;
        a[k] = inside ? static_cast<opmath_t>(input[first + k]) : opmath_t(0);
        g[k] = (inside && grad != nullptr && !one_grad) ? static_cast<opmath_t>(grad[first + k])
                                                        : opmath_t(0);
      }
    }
    if (one_grad) {
      const opmath_t value = static_cast<opmath_t>(grad[0]);
#pragma unroll
      for (int k = 0; k < kVec; ++k) g[k] = value;
    }
    op(group, a, g, y);
    if (whole) {
      PackT out_pack;
#pragma unroll
      for (int k = 0; k < kVec; ++k) out_pack.v[k] = static_cast<scalar_t>(y[k]);
      *reinterpret_cast<PackT*>(out + first) = out_pack;
    } else {
#pragma unroll
      for (int k = 0; k < kVec; ++k) {
        if (first + k < n) out[first + k] = static_cast<scalar_t>(y[k]);
      }
    }
  }
}

template <typename opmath_t>
struct ThresholdOp {
  static constexpr int kVec = PhiloxUniform<opmath_t>::kPerBlock;
  __device__ void operator()(int64_t, const opmath_t* a, const opmath_t*, opmath_t* y) const {
#pragma unroll
    for (int k = 0; k < kVec; ++k) y[k] = threshold(a[k]);
  }
};

template <typename opmath_t>
struct SampleOp {
  static constexpr int kVec = PhiloxUniform<opmath_t>::kPerBlock;
  DeviceScalar<double> slope;
  DeviceScalar<int64_t> seed;
  __device__ void operator()(int64_t group, const opmath_t* a, const opmath_t*, opmath_t* y) const {
    const opmath_t s = static_cast<opmath_t>(slope.get());
    const bool valid = slope_is_valid(s);
    uint32_t words[4];
    philox4x32_10(static_cast<uint64_t>(group), static_cast<uint64_t>(seed.get()), words);
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const opmath_t value = sample(PhiloxUniform<opmath_t>::from_words(words, k), a[k], s);
      y[k] = valid ? value : std::numeric_limits<opmath_t>::quiet_NaN();
    }
  }
};

// The gradient kernel K of the kernel list. A slope or tau read on the device that cannot be
// used makes every output NaN (it cannot be checked without a synchronization).
template <typename opmath_t, typename K>
struct GradientOp {
  static constexpr int kVec = PhiloxUniform<opmath_t>::kPerBlock;
  DeviceScalar<double> slope;
  DeviceScalar<double> tau;
  DeviceScalar<int64_t> seed;
  opmath_t clip_value;
  __device__ void operator()(int64_t group, const opmath_t* a, const opmath_t* g,
                             opmath_t* y) const {
    const KernelArgs<opmath_t> args{
        K::kReadsSlope ? static_cast<opmath_t>(slope.get()) : opmath_t(0), clip_value,
        K::kReadsTau ? static_cast<opmath_t>(tau.get()) : opmath_t(0)};
    const bool valid = (!K::kReadsSlope || slope_is_valid(args.slope)) &&
                       (!K::kReadsTau || slope_is_valid(args.tau));
    uint32_t words[4] = {0, 0, 0, 0};
    if constexpr (K::kReadsUniform) {
      philox4x32_10(static_cast<uint64_t>(group), static_cast<uint64_t>(seed.get()), words);
    }
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const opmath_t u =
          K::kReadsUniform ? PhiloxUniform<opmath_t>::from_words(words, k) : opmath_t(0);
      y[k] = valid ? K::gradient(g[k], a[k], args, u) : std::numeric_limits<opmath_t>::quiet_NaN();
    }
  }
};

template <typename scalar_t, typename Op>
void launch(const at::Tensor& input, const at::Tensor* grad, bool one_grad, at::Tensor& out,
            const Op& op) {
  constexpr int kVec = Op::kVec;
  const int64_t n = input.numel();
  if (n == 0) return;
  const scalar_t* input_data = input.const_data_ptr<scalar_t>();
  const scalar_t* grad_data = grad != nullptr ? grad->const_data_ptr<scalar_t>() : nullptr;
  scalar_t* out_data = out.mutable_data_ptr<scalar_t>();
  constexpr uintptr_t kAlign = sizeof(scalar_t) * kVec;
  const bool vector_access =
      reinterpret_cast<uintptr_t>(input_data) % kAlign == 0 &&
      (one_grad || reinterpret_cast<uintptr_t>(grad_data) % kAlign == 0) &&
      reinterpret_cast<uintptr_t>(out_data) % kAlign == 0;
  const int64_t num_groups = (n + kVec - 1) / kVec;
  const int64_t blocks = std::min<int64_t>((num_groups + kThreadsPerBlock - 1) / kThreadsPerBlock,
                                           int64_t{1} << 20);
  elementwise_kernel<scalar_t, kVec, Op>
      <<<static_cast<unsigned int>(blocks), kThreadsPerBlock, 0,
         c10::cuda::getCurrentCUDAStream()>>>(input_data, grad_data, one_grad, out_data, n,
                                              vector_access, op);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// A slope or tau on the GPU is converted to double there (no host synchronization, so its value
// is checked in the kernels); one on the CPU is read and checked here.
DeviceScalar<double> positive_argument(const char* op, const char* name, const at::Tensor& value,
                                       const at::Tensor& input, at::Tensor& holder) {
  if (value.device().is_cpu()) {
    return {nullptr, host_positive(op, name, value, input)};
  }
  holder = value.reshape({1}).to(at::kDouble).contiguous();
  return {holder.const_data_ptr<double>(), 0.0};
}

// A seed on the GPU is read there; one on the CPU is passed by value.
DeviceScalar<int64_t> seed_argument(const at::Tensor& seed, at::Tensor& holder) {
  if (seed.device().is_cpu()) {
    return {nullptr, seed.item<int64_t>()};
  }
  holder = seed.reshape({1}).contiguous();
  return {holder.const_data_ptr<int64_t>(), 0};
}

at::Tensor threshold_sample_cuda(const at::Tensor& input, const at::Tensor& slope,
                                 const std::optional<at::Tensor>& seed,
                                 c10::string_view kernel, double /*clip_value*/,
                                 const std::optional<at::Tensor>& tau) {
  constexpr const char* kOp = "threshold_sample";
  const KernelInfo info = check_forward(kOp, input, slope, seed, kernel, tau);
  const c10::cuda::CUDAGuard guard(input.device());
  at::Tensor slope_holder;
  const DeviceScalar<double> slope_arg =
      positive_argument(kOp, "slope", slope, input, slope_holder);
  if (info.reads_tau && tau->device().is_cpu()) {  // the backward's; checked where given
    host_positive(kOp, "tau", *tau, input);
  }
  at::Tensor out = at::empty_like(input);
  const at::Tensor in = in_layout_of(input, out);
  if (!seed.has_value()) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scalar_type(), kOp, [&] {
      launch<scalar_t>(in, nullptr, false, out, ThresholdOp<at::opmath_type<scalar_t>>{});
    });
    return out;
  }
  at::Tensor seed_holder;
  const DeviceScalar<int64_t> seed_arg = seed_argument(*seed, seed_holder);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scalar_type(), kOp, [&] {
    launch<scalar_t>(in, nullptr, false, out,
                     SampleOp<at::opmath_type<scalar_t>>{slope_arg, seed_arg});
  });
  return out;
}

// The backward with kernel K, the op's arguments checked. Arguments K does not read are 0.
template <typename K>
at::Tensor gradient_cuda(const char* op, const at::Tensor& grad_output, const at::Tensor& input,
                         const DeviceScalar<double>& slope_arg, double clip_value,
                         const std::optional<at::Tensor>& seed,
                         const std::optional<at::Tensor>& tau) {
  at::Tensor out = at::empty_like(input);
  if constexpr (K::kIdentity) {  // reads nothing: the identity (the kernel list's rule)
    out.copy_(grad_output);
  } else {
    const at::Tensor in = in_layout_of(input, out);
    const bool one_grad = is_one_value(grad_output);
    const at::Tensor grad = one_grad ? grad_output : in_layout_of(grad_output, out);
    at::Tensor tau_holder;
    at::Tensor seed_holder;
    const DeviceScalar<double> tau_arg =
        K::kReadsTau ? positive_argument(op, "tau", *tau, input, tau_holder)
                     : DeviceScalar<double>{nullptr, 0.0};
    const DeviceScalar<int64_t> seed_arg =
        K::kReadsUniform ? seed_argument(*seed, seed_holder) : DeviceScalar<int64_t>{nullptr, 0};
    constexpr const char* kDispatchName = "threshold_sample_backward";
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scalar_type(), kDispatchName,
                                    [&] {
      using opmath_t = at::opmath_type<scalar_t>;
      // Like torch.where(input.abs() <= clip_value, ...): the bound is rounded to the dtype.
      const opmath_t clip = K::kReadsClipValue
                                ? static_cast<opmath_t>(static_cast<scalar_t>(clip_value))
                                : opmath_t(0);
      launch<scalar_t>(in, &grad, one_grad, out,
                       GradientOp<opmath_t, K>{slope_arg, tau_arg, seed_arg, clip});
    });
  }
  return out;
}

at::Tensor threshold_sample_backward_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                          const at::Tensor& slope, c10::string_view kernel,
                                          double clip_value,
                                          const std::optional<at::Tensor>& seed,
                                          const std::optional<at::Tensor>& tau) {
  constexpr const char* kOp = "threshold_sample_backward";
  check_backward(kOp, grad_output, input, slope, kernel, seed, tau);
  const c10::cuda::CUDAGuard guard(input.device());
  at::Tensor slope_holder;
  const DeviceScalar<double> slope_arg =
      positive_argument(kOp, "slope", slope, input, slope_holder);
#define BN_RUN(K)                                                                      \
  if (kernel == K::kName) {                                                            \
    return gradient_cuda<K>(kOp, grad_output, input, slope_arg, clip_value, seed, tau); \
  }
  BN_FOR_EACH_KERNEL(BN_RUN)
#undef BN_RUN
  TORCH_INTERNAL_ASSERT(false, "check_backward let an unknown kernel through");
  return {};
}

}  // namespace

TORCH_LIBRARY_IMPL(binary_neurons, CUDA, m) {
  m.impl("threshold_sample", &threshold_sample_cuda);
  m.impl("threshold_sample_backward", &threshold_sample_backward_cuda);
}

}  // namespace binary_neurons
