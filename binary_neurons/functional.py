r"""Functional forms of the binary neurons.

Both functions map a real pre-activation :math:`a` of any shape to an output of the same shape
and dtype with values in :math:`\{0, 1\}`, and backpropagate the chosen estimator's
pseudo-gradient (see :class:`~binary_neurons.Estimator`).
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from . import _ops
from ._validation import positive_finite
from .estimators import Estimator, EstimatorLike, get_estimator

__all__ = ["deterministic_binary", "stochastic_binary", "preactivation"]

SlopeLike = Union[float, Tensor]

# Seeds are drawn from [0, 2**62): wide enough for Philox keys, and inside the range that
# torch.compile's randint lowering handles.
_SEED_HIGH = 2**62


def check_input(input: Tensor) -> None:
    """Raise ``TypeError`` unless ``input`` is a floating-point tensor."""
    if not isinstance(input, Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}")
    if not input.is_floating_point():
        raise TypeError(
            "input must be a floating-point tensor (float16, bfloat16, float32 or float64), "
            f"got {input.dtype}"
        )


def check_slope_value(slope: float) -> float:
    """Return ``slope`` as a float if it is a finite number > 0, else raise ``ValueError``."""
    return positive_finite("slope", slope, accepted="a number or a 0-dim tensor")


def _as_slope_tensor(slope: SlopeLike, input: Tensor) -> Tensor:
    if isinstance(slope, Tensor):
        if slope.numel() != 1 or not slope.is_floating_point():
            raise ValueError(
                "slope must be a floating-point tensor with one element, "
                f"got shape {tuple(slope.shape)} and dtype {slope.dtype}"
            )
        if slope.device.type != "cpu" and slope.device != input.device:
            raise ValueError(
                f"slope is on {slope.device} but input is on {input.device}; "
                "expected the input's device or the CPU"
            )
        if slope.device.type == "cpu" and not torch.compiler.is_compiling():
            # Reading a CPU scalar costs nothing; a device scalar is validated by its owner
            # (the layers check their slope whenever it is set).
            check_slope_value(slope.item())
        return slope.reshape(())
    return _number_tensor(check_slope_value(slope), input)


def _number_tensor(value: float, input: Tensor) -> Tensor:
    """A checked number as the op's 0-dim argument. Eagerly a CPU tensor: the kernels of every
    device read it as a number, with no copy to the device. In a graph compiled for a GPU, a
    constant on the GPU: a CPU tensor there would keep Inductor from using CUDA graphs
    (``mode="reduce-overhead"``)."""
    if input.device.type == "cuda" and torch.compiler.is_compiling():
        return torch.full((), value, dtype=torch.float64, device=input.device)
    return torch.tensor(value, dtype=torch.float64)


def _indexed(device: torch.device) -> torch.device:
    """``device`` with its index: a bare ``cuda`` (as ``torch.Generator("cuda")`` reports) is the
    current device, which is where that generator's draws go."""
    device = torch.device(device)
    if device.type == "cpu" or device.index is not None:
        return device
    return torch.device(device.type, torch.get_device_module(device.type).current_device())


def draw_seed(input: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    """Draw the op's seed for ``input`` from ``generator`` (or the device's default)."""
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator must be a torch.Generator or None, got {type(generator).__name__}"
            )
        if _indexed(generator.device) != input.device:
            raise ValueError(
                f"generator is on {generator.device} but input is on {input.device}; "
                "expected a generator on the input's device"
            )
    return torch.randint(
        0, _SEED_HIGH, (), dtype=torch.int64, device=input.device, generator=generator
    )


class _PythonEstimatorFunction(torch.autograd.Function):
    """Runs the op's forward with the backward of a user-defined :class:`Estimator`."""

    @staticmethod
    def forward(ctx, input, slope, seed, estimator):
        ctx.save_for_backward(input, slope)
        ctx.estimator = estimator
        return _ops.threshold_sample(input, slope, seed, "identity", 0.0)

    @staticmethod
    def backward(ctx, grad_output):
        input, slope = ctx.saved_tensors
        return ctx.estimator.backward(grad_output, input, slope), None, None, None


def _binary(
    input: Tensor,
    estimator: EstimatorLike,
    slope: SlopeLike,
    seed: Optional[Tensor],
    signed: bool,
) -> Tensor:
    estimator = get_estimator(estimator)
    if estimator.needs_loss:
        raise ValueError(
            f"estimator {estimator.name!r} needs the per-example loss, which a StochasticBinary "
            "layer collects (see binary_neurons.reinforce_loss); the functional forms cannot"
        )
    if estimator.needs_sample and seed is None:
        raise ValueError(
            f"estimator {estimator.name!r} needs a stochastic neuron's sample; use it with "
            "stochastic_binary or StochasticBinary"
        )
    return apply_binary(input, estimator, _as_slope_tensor(slope, input), seed, signed=signed)


def to_signed(y: Tensor) -> Tensor:
    """``2 y - 1``: {0, 1} to {-1, +1} (and a probability to the expected signed output)."""
    return y * 2 - 1


def apply_binary(
    input: Tensor,
    estimator: Estimator,
    slope: Tensor,
    seed: Optional[Tensor],
    tau: Optional[Tensor] = None,
    signed: bool = False,
) -> Tensor:
    """Run the op with an already validated estimator and 0-dim slope tensor.

    The layers call this directly: their slope (and tau) buffers are validated whenever they are
    set, so the per-call checks of the public functions would only add latency to small inputs.
    With ``signed``, the output is ``2 y - 1`` and the pseudo-gradient is scaled by the
    estimator's ``signed_scale``.
    """
    if estimator.kernel is None:
        y = _PythonEstimatorFunction.apply(input, slope, seed, estimator)
    else:
        if estimator.kernel == "gumbel" and tau is None:
            tau = _number_tensor(estimator.tau, input)
        y = _ops.threshold_sample(
            input, slope, seed, estimator.kernel, estimator.clip_value, tau
        )
    if not signed:
        return y
    scale = estimator.signed_scale
    if scale == 2.0:  # the surrogate's own derivative: that of 2 y - 1
        return to_signed(y)
    # 2 y - 1 in value, with `scale` times y's pseudo-gradient.
    return y * scale + (y.detach() * (2 - scale) - 1)


def deterministic_binary(
    input: Tensor,
    estimator: EstimatorLike = "sigmoid",
    slope: SlopeLike = 1.0,
    *,
    signed: bool = False,
) -> Tensor:
    r"""Deterministic binary neuron: threshold the pre-activation at zero.

    .. math::
        y = \mathbb{1}\bigl[\sigma(s a) > 0.5\bigr] = \mathbb{1}[a > 0]

    :math:`a = 0` gives 0; NaN gives NaN. The slope :math:`s` does not change the forward pass;
    it enters the pseudo-gradient of the ``"sigmoid"`` and ``"annealed"`` estimators.

    With ``signed=True`` the output is :math:`2y - 1 \in \{-1, +1\}`, the sign function
    with :math:`\operatorname{sign}(0) = -1`. The pseudo-gradients keep their meaning for it:
    ``"identity"`` passes :math:`g`, ``"clipped"`` :math:`g \, \mathbb{1}[|a| \le c]`, and
    ``"sigmoid"``/``"annealed"`` differentiate :math:`2\sigma(s a) - 1`, giving
    :math:`2 g s \sigma(s a)(1 - \sigma(s a))`.

    Args:
        input: the pre-activation :math:`a`, a floating-point tensor of any shape.
        estimator: the gradient estimator: ``"identity"``, ``"sigmoid"`` (default),
            ``"annealed"``, ``"clipped"``, ``"gumbel"`` (stochastic only), or an
            :class:`~binary_neurons.estimators.Estimator`.
        slope: the slope :math:`s > 0`, a number or a one-element tensor; finite in the type
            the input is computed in (float32 for half types). Default: 1.0.
        signed: output :math:`\{-1, +1\}` instead of :math:`\{0, 1\}`. Default: False.

    Shape:
        Input: :math:`(*)`, any shape, including empty and 0-dim.
        Output: :math:`(*)`, same shape, dtype and layout as the input.

    Examples:
        >>> import torch
        >>> from binary_neurons.functional import deterministic_binary
        >>> deterministic_binary(torch.tensor([-1.0, 0.0, 2.0]), signed=True)
        tensor([-1., -1.,  1.])
        >>> a = torch.tensor([-1.0, 0.0, 2.0], requires_grad=True)
        >>> y = deterministic_binary(a)
        >>> y.detach()
        tensor([0., 0., 1.])
        >>> y.sum().backward()
        >>> a.grad  # s * p * (1 - p) with p = sigmoid(a)
        tensor([0.1966, 0.2500, 0.1050])
    """
    check_input(input)
    return _binary(input, estimator, slope, None, signed)


def stochastic_binary(
    input: Tensor,
    estimator: EstimatorLike = "sigmoid",
    slope: SlopeLike = 1.0,
    generator: Optional[torch.Generator] = None,
    *,
    signed: bool = False,
) -> Tensor:
    r"""Stochastic binary neuron: a Bernoulli sample with probability :math:`\sigma(s a)`.

    .. math::
        y = \mathbb{1}\bigl[u < \sigma(s a)\bigr], \quad u \sim U[0, 1), \qquad
        \mathbb{E}[y] = \sigma(s a).

    Fresh noise is drawn on every call: a seed is taken from ``generator`` (or the default
    generator of the input's device, so :func:`torch.manual_seed` makes runs repeat), and the
    uniforms are generated from it inside the kernel. No gradient flows to the noise. NaN
    gives NaN. With ``signed=True`` the output is :math:`2y - 1 \in \{-1, +1\}` and the
    pseudo-gradients are those of :func:`deterministic_binary`'s signed form (``"gumbel"``:
    :math:`2 g (s / \tau) q (1 - q)`, the derivative of :math:`2q - 1`).

    Args:
        input: the pre-activation :math:`a`, a floating-point tensor of any shape.
        estimator: the gradient estimator: ``"identity"``, ``"sigmoid"`` (default),
            ``"annealed"``, ``"clipped"``, ``"gumbel"`` (stochastic only), or an
            :class:`~binary_neurons.estimators.Estimator`.
        slope: the slope :math:`s > 0`, a number or a one-element tensor; finite in the type
            the input is computed in (float32 for half types). Default: 1.0.
        generator: a :class:`torch.Generator` on the input's device, or ``None`` for the
            default generator.
        signed: output :math:`\{-1, +1\}` instead of :math:`\{0, 1\}`. Default: False.

    Shape:
        Input: :math:`(*)`, any shape, including empty and 0-dim.
        Output: :math:`(*)`, same shape, dtype and layout as the input.

    Examples:
        >>> import torch
        >>> from binary_neurons.functional import stochastic_binary
        >>> g = torch.Generator().manual_seed(0)
        >>> y = stochastic_binary(torch.zeros(10_000), generator=g)
        >>> sorted(y.unique().tolist())
        [0.0, 1.0]
        >>> abs(y.mean().item() - 0.5) < 0.02
        True
    """
    check_input(input)
    return _binary(input, estimator, slope, draw_seed(input, generator), signed)


def preactivation(input: Tensor, slope: SlopeLike = 1.0) -> Tensor:
    r"""The preactivated output :math:`p = \sigma(s a)`, differentiable.

    This is the firing probability of a stochastic neuron, and what BinaryGAN plots in its
    histograms of preactivated outputs.

    Args:
        input: the pre-activation :math:`a`, a floating-point tensor of any shape.
        slope: the slope :math:`s > 0`, a number or a one-element tensor; finite in the type
            the input is computed in (float32 for half types). Default: 1.0.

    Examples:
        >>> import torch
        >>> from binary_neurons.functional import preactivation
        >>> preactivation(torch.tensor([0.0, 2.0]), slope=0.5)
        tensor([0.5000, 0.7311])
    """
    check_input(input)
    slope = _as_slope_tensor(slope, input)
    return torch.sigmoid(input * slope.to(device=input.device, dtype=input.dtype))
