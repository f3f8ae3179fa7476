"""The threshold-and-sample custom op: schema, kernels, fake kernels and autograd.

``binary_neurons::threshold_sample(input, slope, seed, kernel, clip_value, tau)`` computes
``y = 1[a > 0]`` (``seed`` is None) or ``y = 1[u < sigmoid(slope * a)]`` with uniforms ``u``
generated from ``seed``; ``binary_neurons::threshold_sample_backward`` computes the named fused
kernel's pseudo-gradient (:data:`binary_neurons._kernel_list.KERNELS`) from the saved input. The op
is a pure function of its inputs: callers draw ``seed`` from a torch generator, so the op itself
has no hidden state, which keeps it correct under ``torch.compile``, AOT autograd and
:func:`torch.library.opcheck`.

The schema is defined here, once. The native library, when loaded, registers only its CPU (and
CUDA) implementations; the pure-PyTorch kernels are registered as ``CompositeExplicitAutograd``,
so they serve every device without a native kernel, and the fake kernels and the autograd
formula below serve both backends.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _backend, _fallback  # noqa: F401 - _backend loads the native kernels
from ._arguments import check_backward, check_forward
from ._kernel_list import KERNELS

__all__ = ["SCHEMAS", "threshold_sample", "threshold_sample_backward"]

SCHEMAS = {
    "threshold_sample": (
        "threshold_sample(Tensor input, Tensor slope, Tensor? seed, str kernel, "
        "float clip_value, Tensor? tau=None) -> Tensor"
    ),
    "threshold_sample_backward": (
        "threshold_sample_backward(Tensor grad_output, Tensor input, Tensor slope, "
        "str kernel, float clip_value, Tensor? seed=None, Tensor? tau=None) -> Tensor"
    ),
}

# Importing _backend has loaded the native library, if any: its implementations are registered
# under the names defined next.
_definitions = torch.library.Library("binary_neurons", "DEF")
for _schema in SCHEMAS.values():
    _definitions.define(_schema)

_definitions.impl("threshold_sample", _fallback.threshold_sample, "CompositeExplicitAutograd")
_definitions.impl(
    "threshold_sample_backward", _fallback.threshold_sample_backward, "CompositeExplicitAutograd"
)

threshold_sample = torch.ops.binary_neurons.threshold_sample.default
threshold_sample_backward = torch.ops.binary_neurons.threshold_sample_backward.default


# The fake kernels serve FakeTensor tracing (torch.compile) and meta tensors. They check the
# arguments as the real kernels do, so that, say, a seed on the meta device beside a CPU input
# is an error rather than an uninitialized CPU tensor.
@torch.library.register_fake("binary_neurons::threshold_sample")
def _threshold_sample_fake(input, slope, seed, kernel, clip_value, tau=None):
    check_forward(input, slope, seed, kernel, tau)
    return torch.empty_like(input)


@torch.library.register_fake("binary_neurons::threshold_sample_backward")
def _threshold_sample_backward_fake(
    grad_output, input, slope, kernel, clip_value, seed=None, tau=None
):
    check_backward(grad_output, input, slope, kernel, seed, tau)
    return torch.empty_like(input)


def _setup_context(ctx, inputs, output) -> None:
    input, slope, seed, kernel, clip_value, tau = inputs
    reads = KERNELS[kernel].reads  # the forward checked the name
    ctx.kernel, ctx.clip_value = kernel, clip_value
    ctx.needs_input = bool(reads)
    # Only what the kernel reads: a kernel that reads the forward's uniforms gets the seed (and
    # draws them again); the noise itself is never saved.
    ctx.save_for_backward(
        input if reads else None,
        slope if reads else None,
        seed if "uniform" in reads else None,
        tau if "tau" in reads else None,
    )


def _backward(ctx, grad_output: Tensor):
    if not ctx.needs_input:  # reads nothing: the incoming gradient, as it is
        return grad_output, None, None, None, None, None
    input, slope, seed, tau = ctx.saved_tensors
    grad_input = threshold_sample_backward(
        grad_output, input, slope, ctx.kernel, ctx.clip_value, seed, tau
    )
    return grad_input, None, None, None, None, None


torch.library.register_autograd(
    "binary_neurons::threshold_sample", _backward, setup_context=_setup_context
)
