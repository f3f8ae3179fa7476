// Argument checks and layout handling shared by the CPU and CUDA kernels of threshold_sample.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

namespace binary_neurons {

inline void check_input(const char* op, const at::Tensor& input) {
  TORCH_CHECK_TYPE(at::isFloatingType(input.scalar_type()), op,
                   ": expected a floating-point input (Half, BFloat16, Float or Double), got ",
                   input.scalar_type());
}

inline void check_slope(const char* op, const at::Tensor& slope) {
  TORCH_CHECK(slope.numel() == 1 && at::isFloatingType(slope.scalar_type()), op,
              ": expected slope to be a floating-point tensor with one element, got shape ",
              slope.sizes(), " and dtype ", slope.scalar_type());
}

// Checks the arguments of threshold_sample_backward other than the slope.
inline void check_backward(const char* op, const at::Tensor& grad_output,
                           const at::Tensor& input, c10::string_view estimator) {
  TORCH_CHECK_VALUE(estimator == "identity" || estimator == "sigmoid" || estimator == "clipped",
                    op, ": unknown estimator '", estimator,
                    "'; expected 'identity', 'sigmoid' or 'clipped'");
  check_input(op, input);
  TORCH_CHECK(grad_output.sizes() == input.sizes(), op,
              ": expected grad_output of the input's shape ", input.sizes(), ", got ",
              grad_output.sizes());
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
