// Argument checks and layout handling shared by the CPU and CUDA kernels of threshold_sample.
// The pure-PyTorch kernels (binary_neurons/_fallback.py) check the same things with the same
// words and exception types, so both backends accept and reject the same arguments.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <limits>

namespace binary_neurons {

inline void check_estimator(const char* op, c10::string_view estimator) {
  TORCH_CHECK_VALUE(estimator == "identity" || estimator == "sigmoid" || estimator == "clipped" ||
                        estimator == "gumbel",
                    op, ": unknown estimator '", estimator,
                    "'; expected 'identity', 'sigmoid', 'clipped' or 'gumbel'");
}

inline void check_input(const char* op, const at::Tensor& input) {
  TORCH_CHECK_TYPE(at::isFloatingType(input.scalar_type()), op,
                   ": expected a floating-point input (Half, BFloat16, Float or Double), got ",
                   input.scalar_type());
}

// A one-value argument (slope, seed): 0-dim, of the right dtype, on the CPU or the input's device.
inline void check_scalar(const char* op, const char* name, const at::Tensor& value,
                         bool floating, const at::Tensor& input) {
  TORCH_CHECK_VALUE(value.dim() == 0 && (floating ? at::isFloatingType(value.scalar_type())
                                                  : value.scalar_type() == at::kLong),
                    op, ": expected ", name, " to be a 0-dim ",
                    floating ? "floating-point" : "int64", " tensor, got shape ", value.sizes(),
                    " and dtype ", value.scalar_type());
  TORCH_CHECK_VALUE(value.device().is_cpu() || value.device() == input.device(), op,
                    ": expected ", name, " on the CPU or on ", input.device(), ", got ",
                    value.device());
}

// The Gumbel estimator regenerates the forward's uniforms: it needs the seed and a temperature.
inline void check_gumbel(const char* op, c10::string_view estimator,
                         const std::optional<at::Tensor>& seed,
                         const std::optional<at::Tensor>& tau, const at::Tensor& input) {
  if (tau.has_value()) {
    check_scalar(op, "tau", *tau, /*floating=*/true, input);
  }
  if (estimator == "gumbel") {
    TORCH_CHECK_VALUE(seed.has_value(), op,
                      ": the 'gumbel' estimator needs a seed (it applies to stochastic neurons)");
    TORCH_CHECK_VALUE(tau.has_value(), op, ": the 'gumbel' estimator needs tau");
  }
}

inline void check_forward(const char* op, const at::Tensor& input, const at::Tensor& slope,
                          const std::optional<at::Tensor>& seed, c10::string_view estimator,
                          const std::optional<at::Tensor>& tau) {
  check_estimator(op, estimator);
  check_input(op, input);
  check_scalar(op, "slope", slope, /*floating=*/true, input);
  if (seed.has_value()) {
    check_scalar(op, "seed", *seed, /*floating=*/false, input);
  }
  check_gumbel(op, estimator, seed, tau, input);
}

inline void check_backward(const char* op, const at::Tensor& grad_output,
                           const at::Tensor& input, const at::Tensor& slope,
                           c10::string_view estimator, const std::optional<at::Tensor>& seed,
                           const std::optional<at::Tensor>& tau) {
  check_estimator(op, estimator);
  check_input(op, input);
  TORCH_CHECK_VALUE(grad_output.sizes() == input.sizes(), op,
                    ": expected grad_output of the input's shape ", input.sizes(), ", got ",
                    grad_output.sizes());
  TORCH_CHECK_TYPE(grad_output.scalar_type() == input.scalar_type(), op,
                   ": expected grad_output of the input's dtype ", input.scalar_type(), ", got ",
                   grad_output.scalar_type());
  TORCH_CHECK_VALUE(grad_output.device() == input.device(), op,
                    ": expected grad_output on the input's device ", input.device(), ", got ",
                    grad_output.device());
  check_scalar(op, "slope", slope, /*floating=*/true, input);
  if (seed.has_value()) {
    check_scalar(op, "seed", *seed, /*floating=*/false, input);
  }
  check_gumbel(op, estimator, seed, tau, input);
}

// The value of a slope (or tau) held on the CPU, checked: a finite number > 0 in the type the
// input is computed in (float for Half, BFloat16 and Float inputs), where 1e300 would be inf.
inline double host_positive(const char* op, const char* name, const at::Tensor& value_tensor,
                            const at::Tensor& input) {
  const double value = value_tensor.item<double>();
  const bool in_float = input.scalar_type() != at::kDouble;
  const double used = in_float ? static_cast<double>(static_cast<float>(value)) : value;
  TORCH_CHECK_VALUE(used > 0 && used <= std::numeric_limits<double>::max(), op,
                    ": expected ", name, " to be a finite number > 0",
                    in_float ? " and at most 3.4e38 in Float, the type Half, BFloat16 and "
                               "Float inputs are computed in"
                             : "",
                    ", got ", value);
  return value;
}

// Whether `tensor` holds one value for all its elements: a stride-0 expansion of one element,
// which is what `y.sum().backward()` passes as grad_output. The kernels then read that one value
// instead of a dense copy.
inline bool is_one_value(const at::Tensor& tensor) {
  if (tensor.numel() <= 1) {
    return false;
  }
  for (int64_t dim = 0; dim < tensor.dim(); ++dim) {
    if (tensor.size(dim) != 1 && tensor.stride(dim) != 0) {
      return false;
    }
  }
  return true;
}

// `tensor` itself if it already has the dtype and strides of `like` (a dense empty_like of the
// input), else a copy that has them: the kernels then walk both tensors' memory in one flat loop.
inline at::Tensor in_layout_of(const at::Tensor& tensor, const at::Tensor& like) {
  if (tensor.scalar_type() == like.scalar_type() && tensor.strides() == like.strides() &&
      tensor.is_non_overlapping_and_dense()) {
    return tensor;
  }
  at::Tensor copy = at::empty_like(like);
  copy.copy_(tensor);
  return copy;
}

}  // namespace binary_neurons
