"""Binary-neuron layers: drop-in :class:`torch.nn.Module` wrappers of the functional forms."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from . import functional as F
from . import reinforce
from ._validation import positive_finite
from .estimators import EstimatorLike, GumbelStraightThrough, get_estimator

__all__ = ["BinaryNeuron", "DeterministicBinary", "StochasticBinary"]

# What a "gumbel" or "reinforce" layer thresholds with in evaluation mode
# (eval_mode="threshold").
_THRESHOLD_ESTIMATOR = get_estimator("sigmoid")


class BinaryNeuron(nn.Module):
    r"""Base class of the binary-neuron layers: an estimator and a slope.

    The slope is a 0-dim buffer named ``slope``: it is saved in the ``state_dict``, moves with
    the module, and is what :class:`~binary_neurons.SlopeAnnealer` raises. With the
    ``"gumbel"`` estimator the temperature is a second such buffer, ``tau``. A binary neuron
    has no learnable parameters.

    Args:
        estimator: the gradient estimator, by name or as an
            :class:`~binary_neurons.estimators.Estimator`. Default: ``"sigmoid"``.
        slope: the initial slope :math:`s > 0`. Default: 1.0.
        signed: output :math:`\{-1, +1\}` (:math:`2y - 1`) instead of :math:`\{0, 1\}`; see
            :func:`~binary_neurons.functional.deterministic_binary` for the pseudo-gradients.
            Default: False.

    Examples:
        >>> import binary_neurons as bn
        >>> layer = bn.DeterministicBinary(slope=2.0)
        >>> dict(layer.state_dict())
        {'slope': tensor(2.)}
        >>> layer.set_slope(3.0)
        >>> isinstance(layer, bn.BinaryNeuron), float(layer.slope)
        (True, 3.0)
    """

    slope: Tensor
    tau: Optional[Tensor]

    def __init__(
        self, estimator: EstimatorLike = "sigmoid", slope: float = 1.0, signed: bool = False
    ) -> None:
        super().__init__()
        self.estimator = get_estimator(estimator)
        self.signed = bool(signed)
        self.register_buffer("slope", torch.tensor(F.check_slope_value(slope)))
        gumbel = isinstance(self.estimator, GumbelStraightThrough)
        self.register_buffer("tau", torch.tensor(self.estimator.tau) if gumbel else None)
        if self.estimator.needs_loss:
            reinforce.attach_state(self)

    def set_slope(self, value: float) -> None:
        """Set the slope to ``value`` (a finite number > 0), in place."""
        value = F.check_slope_value(value)
        with torch.no_grad():
            self.slope.fill_(value)

    def set_tau(self, value: float) -> None:
        """Set the Gumbel estimator's temperature to ``value`` (a finite number > 0), in place."""
        if self.tau is None:
            raise ValueError(
                f"this layer's estimator is {self.estimator.name!r}; only 'gumbel' has a "
                "temperature"
            )
        value = positive_finite("tau", value)
        with torch.no_grad():
            self.tau.fill_(value)

    def probability(self, input: Tensor) -> Tensor:
        r"""The preactivated output :math:`p = \sigma(s a)` at the layer's current slope."""
        return F.preactivation(input, self.slope)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("slope", "tau"):
            value = state_dict.get(prefix + name)
            if isinstance(value, Tensor) and value.numel() == 1:
                positive_finite(f"{prefix}{name} in the state_dict", value.item())
        if self.estimator.needs_loss:
            reinforce.shape_state(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        text = f"estimator={self.estimator.name!r}, slope={float(self.slope):g}"
        if self.estimator.name == "clipped":
            text += f", clip_value={self.estimator.clip_value:g}"
        if self.tau is not None:
            text += f", tau={float(self.tau):g}"
        if self.estimator.needs_loss:
            text += f", baseline={self.estimator.baseline!r}"
        return text + (", signed=True" if self.signed else "")


class DeterministicBinary(BinaryNeuron):
    r"""Deterministic binary neuron (DBN): :math:`y = \mathbb{1}[\sigma(s a) > 0.5]`.

    Applied elementwise; see :func:`~binary_neurons.functional.deterministic_binary`. Behaves
    the same in training and evaluation mode.

    Args:
        estimator: the gradient estimator: ``"identity"``, ``"sigmoid"`` (default),
            ``"annealed"``, ``"clipped"``, or an :class:`~binary_neurons.estimators.Estimator`.
        slope: the initial slope :math:`s > 0`. Default: 1.0.
        signed: output :math:`\{-1, +1\}` instead of :math:`\{0, 1\}`. Default: False.

    Shape:
        Input: :math:`(*)`, any shape.
        Output: :math:`(*)`, same shape and dtype as the input, values in :math:`\{0, 1\}`.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> import binary_neurons as bn
        >>> model = nn.Sequential(nn.Linear(4, 3),
        ...                       bn.DeterministicBinary(estimator="annealed"))
        >>> model[1]
        DeterministicBinary(estimator='annealed', slope=1)
        >>> y = model(torch.randn(2, 4))
        >>> y.shape, set(y.unique().tolist()) <= {0.0, 1.0}
        (torch.Size([2, 3]), True)
    """

    def __init__(
        self, estimator: EstimatorLike = "sigmoid", slope: float = 1.0, signed: bool = False
    ) -> None:
        super().__init__(estimator, slope, signed)
        if self.estimator.needs_sample:
            raise ValueError(
                f"estimator {self.estimator.name!r} needs a stochastic neuron's sample; use "
                "StochasticBinary"
            )

    def forward(self, input: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """Threshold the pre-activation.

        Args:
            input: the pre-activation.
            generator: ignored (a deterministic neuron draws no noise); accepted so that a model
                can call either neuron type the same way.
        """
        F.check_input(input)
        return F.apply_binary(input, self.estimator, self.slope, None, signed=self.signed)


class StochasticBinary(BinaryNeuron):
    r"""Stochastic binary neuron (SBN): :math:`y \sim \text{Bernoulli}(\sigma(s a))`.

    Applied elementwise; see :func:`~binary_neurons.functional.stochastic_binary`. In training
    mode it always samples. In evaluation mode it does what ``eval_mode`` says: keep sampling
    (the default, as BinaryGAN's generator does at test time), threshold at
    :math:`p = 0.5`, or return the probability :math:`p` itself (:math:`2p - 1`, the expected
    output, when ``signed``). A ``"gumbel"`` or ``"reinforce"`` layer thresholds with the
    sigmoid-adjusted pseudo-gradient, having no sample to work from.

    Args:
        estimator: the gradient estimator: ``"identity"``, ``"sigmoid"`` (default),
            ``"annealed"``, ``"clipped"``, ``"gumbel"``, or an
            :class:`~binary_neurons.estimators.Estimator`.
        slope: the initial slope :math:`s > 0`. Default: 1.0.
        eval_mode: ``"sample"`` (default), ``"threshold"`` or ``"probability"``.
        signed: output :math:`\{-1, +1\}` instead of :math:`\{0, 1\}`. Default: False.

    Shape:
        Input: :math:`(*)`, any shape.
        Output: :math:`(*)`, same shape and dtype as the input, values in :math:`\{0, 1\}`
          (in :math:`[0, 1]` with ``eval_mode="probability"`` in evaluation mode).

    Examples:
        >>> import torch
        >>> import binary_neurons as bn
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> layer = bn.StochasticBinary(slope=2.0, eval_mode="threshold")
        >>> layer
        StochasticBinary(estimator='sigmoid', slope=2, eval_mode='threshold')
        >>> a = torch.tensor([-3.0, -0.1, 0.1, 3.0])
        >>> layer(a).shape
        torch.Size([4])
        >>> layer.eval()(a)
        tensor([0., 0., 1., 1.])
    """

    EVAL_MODES = ("sample", "threshold", "probability")

    def __init__(
        self,
        estimator: EstimatorLike = "sigmoid",
        slope: float = 1.0,
        eval_mode: str = "sample",
        signed: bool = False,
    ) -> None:
        super().__init__(estimator, slope, signed)
        self.eval_mode = eval_mode

    @property
    def eval_mode(self) -> str:
        """What the layer does in evaluation mode: ``"sample"``, ``"threshold"`` or
        ``"probability"``; checked whenever it is set."""
        return self._eval_mode

    @eval_mode.setter
    def eval_mode(self, value: str) -> None:
        if value not in self.EVAL_MODES:
            valid = ", ".join(repr(mode) for mode in self.EVAL_MODES)
            raise ValueError(f"unknown eval_mode {value!r}; expected one of {valid}")
        self._eval_mode = value

    def forward(self, input: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """Sample (or, in evaluation mode, follow ``eval_mode``).

        Args:
            input: the pre-activation.
            generator: a :class:`torch.Generator` on the input's device for the noise, or
                ``None`` for the default generator.
        """
        F.check_input(input)
        estimator = self.estimator
        if self.training or self.eval_mode == "sample":
            seed = F.draw_seed(input, generator)
            if estimator.needs_loss:
                y = reinforce.sample(self, input, seed)
                return F.to_signed(y) if self.signed else y
        elif self.eval_mode == "threshold":
            seed = None
            if estimator.needs_sample:  # nothing sampled to relax: the sigmoid's gradient
                estimator = _THRESHOLD_ESTIMATOR
        else:
            probability = self.probability(input)
            return F.to_signed(probability) if self.signed else probability
        return F.apply_binary(input, estimator, self.slope, seed, self.tau, self.signed)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", eval_mode={self.eval_mode!r}"
