"""The threshold-and-sample custom op: schema, kernels, fake kernels and autograd.

``binary_neurons::threshold_sample(input, slope, seed, estimator, clip_value, tau)`` computes
``y = 1[a > 0]`` (``seed`` is None) or ``y = 1[u < sigmoid(slope * a)]`` with uniforms ``u``
generated from ``seed``; ``binary_neurons::threshold_sample_backward`` computes the fused
estimator's pseudo-gradient from the saved input. The op is a pure function of its inputs:
callers draw ``seed`` from a torch generator, so the op itself has no hidden state, which keeps
it correct under ``torch.compile``, AOT autograd and :func:`torch.library.opcheck`.

When the native library is loaded it defines the schema and registers its CPU (and CUDA)
kernels; otherwise the schema is defined here. Either way the pure-PyTorch kernels are
registered as ``CompositeExplicitAutograd``, so they serve every device without a native kernel,
and the fake kernels and the autograd formula below are shared by both paths.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _backend, _fallback

__all__ = ["threshold_sample", "threshold_sample_backward"]

# Keep in sync with TORCH_LIBRARY in csrc/threshold_sample.cpp (tests compare them).
SCHEMAS = {
    "threshold_sample": (
        "threshold_sample(Tensor input, Tensor slope, Tensor? seed, str estimator, "
        "float clip_value, Tensor? tau=None) -> Tensor"
    ),
    "threshold_sample_backward": (
        "threshold_sample_backward(Tensor grad_output, Tensor input, Tensor slope, "
        "str estimator, float clip_value, Tensor? seed=None, Tensor? tau=None) -> Tensor"
    ),
}

if _backend.LIBRARY is None:
    _definitions = torch.library.Library("binary_neurons", "DEF")
    for _schema in SCHEMAS.values():
        _definitions.define(_schema)

_fallback_kernels = torch.library.Library("binary_neurons", "IMPL")
_fallback_kernels.impl(
    "threshold_sample", _fallback.threshold_sample, "CompositeExplicitAutograd"
)
_fallback_kernels.impl(
    "threshold_sample_backward",
    _fallback.threshold_sample_backward,
    "CompositeExplicitAutograd",
)

threshold_sample = torch.ops.binary_neurons.threshold_sample.default
threshold_sample_backward = torch.ops.binary_neurons.threshold_sample_backward.default


# The fake kernels serve FakeTensor tracing (torch.compile) and meta tensors. They check the
# arguments as the real kernels do, so that, say, a seed on the meta device beside a CPU input
# is an error rather than an uninitialized CPU tensor.
@torch.library.register_fake("binary_neurons::threshold_sample")
def _threshold_sample_fake(input, slope, seed, estimator, clip_value, tau=None):
    _fallback.check_forward(input, slope, seed, estimator, tau)
    return torch.empty_like(input)


@torch.library.register_fake("binary_neurons::threshold_sample_backward")
def _threshold_sample_backward_fake(
    grad_output, input, slope, estimator, clip_value, seed=None, tau=None
):
    _fallback.check_backward(grad_output, input, slope, estimator, seed, tau)
    return torch.empty_like(input)


def _setup_context(ctx, inputs, output) -> None:
    input, slope, seed, estimator, clip_value, tau = inputs
    ctx.estimator = estimator
    ctx.clip_value = clip_value
    # The identity estimator needs nothing; the others need the input (and the 0-dim slope);
    # Gumbel also the seed and tau, from which its backward draws the forward's uniforms again.
    # The noise itself is never saved.
    if estimator == "identity":
        ctx.save_for_backward()
    elif estimator == "gumbel":
        ctx.save_for_backward(input, slope, seed, tau)
    else:
        ctx.save_for_backward(input, slope)


def _backward(ctx, grad_output: Tensor):
    if ctx.estimator == "identity":
        grad_input = grad_output
    else:
        input, slope, *gumbel = ctx.saved_tensors
        grad_input = threshold_sample_backward(
            grad_output, input, slope, ctx.estimator, ctx.clip_value, *gumbel
        )
    return grad_input, None, None, None, None, None


torch.library.register_autograd(
    "binary_neurons::threshold_sample", _backward, setup_context=_setup_context
)
