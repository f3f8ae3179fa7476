r"""Gradient estimators for binary neurons.

A binary neuron's forward pass is a step function (or a Bernoulli sample), whose true
derivative is zero almost everywhere. An *estimator* replaces that derivative by a
pseudo-gradient in the backward pass (Bengio, Léonard & Courville, 2013, arXiv:1308.3432).

Throughout, :math:`a` is the pre-activation, :math:`s > 0` the slope,
:math:`p = \sigma(s a)` the *preactivated output*, :math:`y \in \{0, 1\}` the neuron's output and
:math:`g = \partial L / \partial y` the incoming gradient.

Estimators are chosen by short name or passed as objects::

    >>> from binary_neurons.estimators import get_estimator
    >>> get_estimator("sigmoid")
    SigmoidAdjusted()
    >>> get_estimator("clipped")
    ClippedStraightThrough(clip_value=1.0)

The built-in estimators run inside the fused backward kernel. A subclass of
:class:`Estimator` that overrides :meth:`Estimator.backward` defines a new estimator in plain
PyTorch; it runs through :class:`torch.autograd.Function` instead of the fused kernel.
"""

from __future__ import annotations

from typing import Union

import torch
from torch import Tensor

from . import _fallback
from ._validation import positive_finite

__all__ = [
    "Estimator",
    "StraightThrough",
    "SigmoidAdjusted",
    "SlopeAnnealed",
    "ClippedStraightThrough",
    "GumbelStraightThrough",
    "Reinforce",
    "ESTIMATORS",
    "get_estimator",
]


class Estimator:
    r"""Base class of gradient estimators.

    Subclasses set :attr:`name` and implement :meth:`backward`. The four built-in estimators
    also name the fused kernel they map to (:attr:`kernel`); a user-defined subclass leaves it
    ``None`` and its :meth:`backward` is called from a :class:`torch.autograd.Function`.

    Examples:
        A straight-through estimator that halves the gradient:

        >>> import torch
        >>> import binary_neurons as bn
        >>> class HalfStraightThrough(bn.Estimator):
        ...     name = "half"
        ...     def backward(self, grad_output, input, slope):
        ...         return 0.5 * grad_output
        >>> a = torch.zeros(3, requires_grad=True)
        >>> bn.stochastic_binary(a, estimator=HalfStraightThrough()).sum().backward()
        >>> a.grad
        tensor([0.5000, 0.5000, 0.5000])
    """

    #: Short name used by :func:`get_estimator`.
    name: str = ""
    #: Whether :class:`~binary_neurons.SlopeAnnealer` raises the slope of layers using it.
    anneals: bool = False
    #: Name of the fused backward kernel (``"identity"``, ``"sigmoid"``, ``"clipped"`` or
    #: ``"gumbel"``), or ``None`` for estimators that run in Python.
    kernel: str | None = None
    #: Whether the estimator needs the neuron's sample (so only stochastic neurons can use it).
    needs_sample: bool = False
    #: Whether the estimator needs the per-example loss (REINFORCE: only layers can use it).
    needs_loss: bool = False
    #: With ``signed=True`` outputs :math:`2y - 1`, the factor on the pseudo-gradient: 2 where
    #: the estimator differentiates a surrogate of :math:`y` (the surrogate of :math:`2y - 1`
    #: is twice as steep), 1 where it passes :math:`g` through as the straight-through ones do.
    signed_scale: float = 1.0

    def backward(self, grad_output: Tensor, input: Tensor, slope: Tensor) -> Tensor:
        """Return the pseudo-gradient :math:`\\partial L / \\partial a`.

        Args:
            grad_output: gradient of the loss with respect to the neuron's output.
            input: the pre-activation the forward pass saw.
            slope: the slope, a 0-dim floating tensor.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not implement backward(grad_output, input, slope); "
            "subclass Estimator and implement it, or use a built-in estimator: "
            + ", ".join(repr(name) for name in ESTIMATORS)
        )

    @property
    def clip_value(self) -> float:
        """The clipping threshold passed to the fused kernel (0 where unused)."""
        return 0.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.clip_value == other.clip_value

    def __hash__(self) -> int:
        return hash((type(self), self.clip_value))


class StraightThrough(Estimator):
    r"""Identity straight-through estimator (``"identity"``).

    The threshold or sampler is treated as the identity in the backward pass:

    .. math::
        \text{forward: } y = \text{threshold or sample of } \sigma(s a), \qquad
        \text{backward: } \frac{\partial L}{\partial a} = g.

    Examples:
        >>> import torch
        >>> import binary_neurons as bn
        >>> a = torch.tensor([-2.0, 0.5], requires_grad=True)
        >>> bn.deterministic_binary(a, estimator=bn.StraightThrough()).sum().backward()
        >>> a.grad
        tensor([1., 1.])
    """

    name = "identity"
    kernel = "identity"

    def backward(self, grad_output: Tensor, input: Tensor, slope: Tensor) -> Tensor:
        return grad_output.clone()


class SigmoidAdjusted(Estimator):
    r"""Sigmoid-adjusted straight-through estimator (``"sigmoid"``, the default).

    Backpropagates through the sigmoid and treats only the threshold or sampler as the
    identity. BinaryGAN (Dong & Yang, 2018, arXiv:1810.04714) uses it for deterministic and
    stochastic neurons alike, with its slope annealed (:class:`SlopeAnnealed`):

    .. math::
        \frac{\partial L}{\partial a} = g \, s \, \sigma(s a) \bigl(1 - \sigma(s a)\bigr).

    Examples:
        >>> import torch
        >>> import binary_neurons as bn
        >>> a = torch.tensor([0.0, 1.0], requires_grad=True)
        >>> bn.deterministic_binary(a, estimator="sigmoid", slope=2.0).sum().backward()
        >>> a.grad  # 2 * sigmoid(2a) * (1 - sigmoid(2a))
        tensor([0.5000, 0.2100])
    """

    name = "sigmoid"
    kernel = "sigmoid"
    signed_scale = 2.0

    def backward(self, grad_output: Tensor, input: Tensor, slope: Tensor) -> Tensor:
        opmath = torch.promote_types(input.dtype, torch.float32)
        derivative = _fallback.sigmoid_derivative(input.to(opmath), slope.to(opmath))
        return (grad_output.to(opmath) * derivative).to(grad_output.dtype)


class SlopeAnnealed(SigmoidAdjusted):
    r"""Sigmoid-adjusted estimator whose slope is raised during training (``"annealed"``).

    The pseudo-gradient is that of :class:`SigmoidAdjusted`; the difference is that
    :class:`~binary_neurons.SlopeAnnealer` multiplies the slope :math:`s` of every layer that
    uses this estimator, typically once per epoch (Chung et al., 2016, arXiv:1609.01704). As
    :math:`s` grows, :math:`\sigma(s a)` approaches the step function and the gradient
    concentrates near :math:`a = 0`.

    Examples:
        >>> import binary_neurons as bn
        >>> layer = bn.StochasticBinary(estimator="annealed")
        >>> bn.SlopeAnnealer(layer, factor=2.0).step()
        >>> float(layer.slope)
        2.0
    """

    name = "annealed"
    anneals = True


class ClippedStraightThrough(Estimator):
    r"""Clipped straight-through estimator (``"clipped"``).

    The identity where the pre-activation is small, zero elsewhere (the "hardtanh" estimator
    of binarized neural networks):

    .. math::
        \frac{\partial L}{\partial a} = g \, \mathbb{1}[\,|a| \le c\,].

    Args:
        clip_value: the threshold :math:`c > 0`. Default: 1.0.

    Examples:
        >>> import torch
        >>> import binary_neurons as bn
        >>> a = torch.tensor([-2.0, -0.5, 0.5, 2.0], requires_grad=True)
        >>> clipped = bn.ClippedStraightThrough(1.0)
        >>> bn.deterministic_binary(a, estimator=clipped).sum().backward()
        >>> a.grad
        tensor([0., 1., 1., 0.])
    """

    name = "clipped"
    kernel = "clipped"

    def __init__(self, clip_value: float = 1.0) -> None:
        self._clip_value = positive_finite("clip_value", clip_value)

    @property
    def clip_value(self) -> float:
        return self._clip_value

    def backward(self, grad_output: Tensor, input: Tensor, slope: Tensor) -> Tensor:
        inside = input.abs() <= self._clip_value
        return torch.where(inside, grad_output, torch.zeros_like(grad_output))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(clip_value={self._clip_value})"


class GumbelStraightThrough(Estimator):
    r"""Binary Gumbel (concrete) straight-through estimator (``"gumbel"``), for stochastic neurons.

    The forward pass is the stochastic neuron's own sample, bit for bit. The backward pass
    differentiates its relaxation at temperature :math:`\tau` with the *same* uniform :math:`u`
    (Jang et al., 2017, arXiv:1611.01144; Maddison et al., 2017, arXiv:1611.00712):

    .. math::
        y = \mathbb{1}[u < \sigma(s a)] = \mathbb{1}[q > 1/2], \qquad
        q = \sigma\Bigl(\frac{s a - \operatorname{logit} u}{\tau}\Bigr), \qquad
        \frac{\partial L}{\partial a} = g \, \frac{s}{\tau} \, q (1 - q).

    The uniforms are drawn again from the forward's seed inside the backward kernel, never
    saved. A small :math:`\tau` makes :math:`q` closer to the step (less bias, more variance);
    :class:`~binary_neurons.SlopeAnnealer` can lower it during training
    (``temperature_factor``). A layer keeps its temperature in its ``tau`` buffer.

    Args:
        tau: the temperature :math:`\tau > 0`. Default: 1.0.

    Examples:
        >>> import torch
        >>> import binary_neurons as bn
        >>> layer = bn.StochasticBinary(estimator=bn.GumbelStraightThrough(tau=0.5))
        >>> layer
        StochasticBinary(estimator='gumbel', slope=1, tau=0.5, eval_mode='sample')
        >>> a = torch.zeros(4, requires_grad=True)
        >>> layer(a).sum().backward()
        >>> bool((a.grad > 0).all())  # (s / tau) q (1 - q) > 0
        True
    """

    name = "gumbel"
    kernel = "gumbel"
    needs_sample = True
    signed_scale = 2.0

    def __init__(self, tau: float = 1.0) -> None:
        self.tau = positive_finite("tau", tau)

    def backward(self, grad_output: Tensor, input: Tensor, slope: Tensor) -> Tensor:
        raise NotImplementedError(
            "GumbelStraightThrough needs the forward's uniforms, which only the op's own "
            "backward draws again; use it through stochastic_binary or StochasticBinary"
        )

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.tau == other.tau

    def __hash__(self) -> int:
        return hash((type(self), self.tau))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(tau={self.tau})"


class Reinforce(Estimator):
    r"""REINFORCE, the unbiased score-function estimator (``"reinforce"``), for
    :class:`~binary_neurons.StochasticBinary` layers.

    The forward pass is the stochastic neuron's sample. The gradient reaching the
    pre-activation is not built from :math:`g` but from the per-example loss :math:`L` and a
    per-unit baseline :math:`b` (Williams, 1992, "Simple statistical gradient-following
    algorithms for connectionist reinforcement learning", Machine Learning 8; Bengio, Léonard &
    Courville, 2013, arXiv:1308.3432):

    .. math::
        \frac{\partial L}{\partial a} \approx s \, (y - \sigma(s a)) \, (L - b),

    whose expectation over the sample is the exact gradient of :math:`\mathbb{E}[L]` for any
    :math:`b` that does not depend on the sample. The training loop hands the per-example loss
    to :func:`~binary_neurons.reinforce_loss`, which returns the term to add to the loss before
    ``backward()``; the layer's output passes no gradient of its own, and (in eager mode) a
    backward pass through it without that term is an error.

    Args:
        baseline: ``"variance"`` (default): the variance-minimising baseline
            :math:`b = \mathbb{E}[(y - p)^2 L] / \mathbb{E}[(y - p)^2]` per unit, from moving
            averages of the two expectations over batches (numerator from 0, denominator from 1,
            divided as ``numerator / (denominator + 1e-4)``); the averages are buffers of the
            layer, saved in its ``state_dict``, and the baseline used for a batch is the one
            from before that batch, so it never depends on the sample it corrects.
            ``"none"``: :math:`b = 0`. Either can be overridden per call by
            :func:`~binary_neurons.reinforce_loss`'s ``baseline`` argument.
        decay: the moving averages' decay, in [0, 1). Default: 0.95.

    Examples:
        >>> import binary_neurons as bn
        >>> layer = bn.StochasticBinary(estimator="reinforce")
        >>> layer.estimator
        Reinforce(baseline='variance', decay=0.95)
    """

    name = "reinforce"
    needs_sample = True
    needs_loss = True
    BASELINES = ("variance", "none")

    def __init__(self, baseline: str = "variance", decay: float = 0.95) -> None:
        if baseline not in self.BASELINES:
            valid = " or ".join(repr(name) for name in self.BASELINES)
            raise ValueError(f"unknown baseline {baseline!r}; expected {valid}")
        decay = float(decay)
        if not 0 <= decay < 1:
            raise ValueError(f"decay must be in [0, 1), got {decay!r}")
        self.baseline = baseline
        self.decay = decay

    def backward(self, grad_output: Tensor, input: Tensor, slope: Tensor) -> Tensor:
        raise NotImplementedError(
            "REINFORCE's gradient comes from the loss, not from grad_output: use it through a "
            "StochasticBinary layer and binary_neurons.reinforce_loss"
        )

    def __eq__(self, other: object) -> bool:
        return (
            type(self) is type(other)
            and (self.baseline, self.decay) == (other.baseline, other.decay)
        )

    def __hash__(self) -> int:
        return hash((type(self), self.baseline, self.decay))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(baseline={self.baseline!r}, decay={self.decay})"


#: The built-in estimators by name.
ESTIMATORS: dict[str, type[Estimator]] = {
    cls.name: cls
    for cls in (
        StraightThrough,
        SigmoidAdjusted,
        SlopeAnnealed,
        ClippedStraightThrough,
        GumbelStraightThrough,
        Reinforce,
    )
}

EstimatorLike = Union[str, Estimator]


def get_estimator(estimator: EstimatorLike) -> Estimator:
    """Return the estimator named by ``estimator``, or ``estimator`` itself if it is one.

    Args:
        estimator: one of ``"identity"``, ``"sigmoid"``, ``"annealed"``, ``"clipped"``,
            ``"gumbel"``, ``"reinforce"``, or an :class:`Estimator` instance.

    Raises:
        ValueError: for an unknown name.
        TypeError: for anything that is neither a string nor an :class:`Estimator`, or an
            :class:`Estimator` that implements no :meth:`~Estimator.backward`.

    Examples:
        >>> from binary_neurons import get_estimator
        >>> get_estimator("annealed").anneals
        True
        >>> get_estimator("ste")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        ValueError: unknown estimator 'ste'; expected one of 'identity', 'sigmoid', ...
    """
    if isinstance(estimator, Estimator):
        if estimator.kernel is None and type(estimator).backward is Estimator.backward:
            raise TypeError(
                f"{type(estimator).__name__} has no backward: subclass Estimator and implement "
                "backward(grad_output, input, slope), or use a built-in estimator by name"
            )
        return estimator
    if isinstance(estimator, str):
        try:
            return ESTIMATORS[estimator]()
        except KeyError:
            valid = ", ".join(repr(name) for name in ESTIMATORS)
            raise ValueError(
                f"unknown estimator {estimator!r}; expected one of {valid} "
                "or an Estimator instance"
            ) from None
    raise TypeError(
        "estimator must be a string or an Estimator instance, "
        f"got {type(estimator).__name__}"
    )
