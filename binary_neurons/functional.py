r"""Functional forms of the binary neurons.

Both functions map a real pre-activation :math:`a` of any shape to an output of the same shape
and dtype with values in :math:`\{0, 1\}`, and backpropagate the chosen estimator's
pseudo-gradient (see :class:`~binary_neurons.Estimator`).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from . import _apply
from ._apply import SlopeLike, to_signed
from .estimators import EstimatorLike, get_estimator

__all__ = ["deterministic_binary", "stochastic_binary", "preactivation", "to_signed"]


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
    slope = _apply.as_slope_tensor(slope, input)
    return _apply.run(input, estimator, slope, seed, None, signed)


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
    _apply.check_input(input)
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
    _apply.check_input(input)
    return _binary(input, estimator, slope, _apply.draw_seed(input, generator), signed)


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
    _apply.check_input(input)
    slope = _apply.as_slope_tensor(slope, input)
    return torch.sigmoid(input * slope.to(device=input.device, dtype=input.dtype))


def _apply_binary(
    input: Tensor,
    estimator: Any,
    slope: Tensor,
    seed: Optional[Tensor],
    tau: Optional[Tensor] = None,
    signed: bool = False,
) -> Tensor:
    """What ``apply_binary`` did: run an estimator with an already checked slope (and tau)."""
    estimator = get_estimator(estimator)
    holder = None if tau is None or estimator.needs_loss else torch.nn.Module()
    if holder is not None:
        holder.tau = tau
    return _apply.run(input, estimator, slope, seed, holder, signed)


# Plumbing that used to be public here: (what it was, what to use instead).
_DEPRECATED: dict[str, tuple[Callable, str]] = {
    "check_input": (
        _apply.check_input,
        "nothing: deterministic_binary, stochastic_binary and the layers check their input",
    ),
    "check_slope_value": (
        _apply.check_slope_value,
        "nothing: the functions and layers check the slope (a layer's set_slope too)",
    ),
    "draw_seed": (
        _apply.draw_seed,
        "stochastic_binary(input, generator=...) or StochasticBinary()(input, generator), which "
        "draw the seed themselves",
    ),
    "apply_binary": (
        _apply_binary,
        "deterministic_binary or stochastic_binary, or a DeterministicBinary or "
        "StochasticBinary layer",
    ),
}


def __getattr__(name: str) -> Any:
    if name in _DEPRECATED:
        function, instead = _DEPRECATED[name]
        warnings.warn(
            f"binary_neurons.functional.{name} is deprecated and will be removed (it was internal "
            f"plumbing); use {instead}",
            DeprecationWarning,
            stacklevel=2,
        )
        return function
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
