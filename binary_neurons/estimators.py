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

All but REINFORCE run inside the fused backward kernel. An estimator is one class that carries
everything about it: the kernel it runs (or its own :meth:`Estimator.backward` in PyTorch), the
arguments it passes the op, the state it keeps on a layer, its part of the layer's repr, and
its signed-output scale. The layers, the functional forms and the annealer only call that
interface; "Writing an estimator" in the documentation walks through both kinds.
"""

from __future__ import annotations

import inspect
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from ._arguments import number_tensor, positive_finite
from ._estimator import Estimator, reference_backward
from .reinforce import Reinforce

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
        return reference_backward(self.kernel, grad_output, input, slope)


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
        return reference_backward(self.kernel, grad_output, input, slope)


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
        return reference_backward(self.kernel, grad_output, input, slope, self._clip_value)

    def extra_repr(self, layer: nn.Module) -> str:
        return f"clip_value={self._clip_value:g}"

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

    def attach(self, layer: nn.Module) -> None:
        # The layer's temperature slot (None until an estimator with a temperature fills it):
        # a buffer, so SlopeAnnealer can cool it in place and a state_dict keeps it.
        layer.tau = torch.tensor(self.tau)

    def load_state(self, layer: nn.Module, state_dict: dict, prefix: str) -> None:
        value = state_dict.get(prefix + "tau")
        if isinstance(value, Tensor) and value.numel() == 1:
            positive_finite(f"{prefix}tau in the state_dict", value.item())

    def kernel_arguments(
        self, input: Tensor, layer: Optional[nn.Module]
    ) -> tuple[float, Optional[Tensor]]:
        return 0.0, layer.tau if layer is not None else number_tensor(self.tau, input)

    def extra_repr(self, layer: nn.Module) -> str:
        return f"tau={float(layer.tau):g}"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.tau == other.tau

    def __hash__(self) -> int:
        return hash((type(self), self.tau))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(tau={self.tau})"


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


def get_estimator(estimator: EstimatorLike, **options: Any) -> Estimator:
    """Return the estimator named by ``estimator``, or ``estimator`` itself if it is one.

    Args:
        estimator: one of ``"identity"``, ``"sigmoid"``, ``"annealed"``, ``"clipped"``,
            ``"gumbel"``, ``"reinforce"``, or an :class:`Estimator` instance.
        **options: passed to the named estimator's constructor: ``clip_value`` for
            ``"clipped"``, ``tau`` for ``"gumbel"``, ``baseline`` and ``decay`` for
            ``"reinforce"``.

    Raises:
        ValueError: for an unknown name.
        TypeError: for anything that is neither a string nor an :class:`Estimator`, an
            :class:`Estimator` that implements no :meth:`~Estimator.backward`, options the
            named estimator does not take, or options beside an instance.

    Examples:
        >>> from binary_neurons import get_estimator
        >>> get_estimator("annealed").anneals
        True
        >>> get_estimator("gumbel", tau=0.5)
        GumbelStraightThrough(tau=0.5)
        >>> get_estimator("ste")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        ValueError: unknown estimator 'ste'; expected one of 'identity', 'sigmoid', ...
    """
    if isinstance(estimator, Estimator):
        if options:
            raise TypeError(
                f"options {sorted(options)} are for an estimator given by name; set them on "
                f"the {type(estimator).__name__} instance instead"
            )
        if estimator.kernel is None and type(estimator).backward is Estimator.backward:
            raise TypeError(
                f"{type(estimator).__name__} has no backward: subclass Estimator and implement "
                "backward(grad_output, input, slope), or use a built-in estimator by name"
            )
        return estimator
    if isinstance(estimator, str):
        try:
            cls = ESTIMATORS[estimator]
        except KeyError:
            valid = ", ".join(repr(name) for name in ESTIMATORS)
            raise ValueError(
                f"unknown estimator {estimator!r}; expected one of {valid} "
                "or an Estimator instance"
            ) from None
        if options:  # (only then: torch.compile does not trace inspect)
            accepted = list(inspect.signature(cls).parameters)
            unknown = sorted(set(options) - set(accepted))
            if unknown:
                takes = "options " + ", ".join(accepted) if accepted else "no options"
                raise TypeError(
                    f"estimator {estimator!r} takes {takes}; got {', '.join(unknown)}"
                )
        return cls(**options)
    raise TypeError(
        "estimator must be a string or an Estimator instance, "
        f"got {type(estimator).__name__}"
    )
