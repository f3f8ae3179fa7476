"""Binary-neuron layers: drop-in :class:`torch.nn.Module` wrappers of the functional forms."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor, nn

from . import _apply
from ._arguments import positive_finite
from .estimators import EstimatorLike, get_estimator
from .functional import preactivation

__all__ = ["BinaryNeuron", "DeterministicBinary", "StochasticBinary"]

# What a layer whose estimator needs the sample ("gumbel", "reinforce") thresholds with in
# evaluation mode (eval_mode="threshold"): there is no sample to work from.
_THRESHOLD_ESTIMATOR = get_estimator("sigmoid")


class BinaryNeuron(nn.Module):
    r"""Base class of the binary-neuron layers: an estimator and a slope.

    The slope is a 0-dim buffer named ``slope``: it is saved in the ``state_dict``, moves with
    the module, and is what :class:`~binary_neurons.SlopeAnnealer` raises. An estimator with a
    temperature (``"gumbel"``) keeps it in a second such buffer, ``tau`` (``None`` otherwise),
    which the annealer can lower; any other state an estimator keeps (REINFORCE's baselines) is
    its own buffers, registered by :meth:`~binary_neurons.Estimator.attach`. A binary neuron
    has no learnable parameters.

    Args:
        estimator: the gradient estimator, by name or as an
            :class:`~binary_neurons.estimators.Estimator`. Default: ``"sigmoid"``.
        slope: the initial slope :math:`s > 0`. Default: 1.0.
        signed: output :math:`\{-1, +1\}` (:math:`2y - 1`) instead of :math:`\{0, 1\}`; see
            :func:`~binary_neurons.functional.deterministic_binary` for the pseudo-gradients.
            Default: False.
        **options: the options of an estimator given by name (see
            :func:`~binary_neurons.get_estimator`): ``clip_value`` for ``"clipped"``, ``tau``
            for ``"gumbel"``, ``baseline`` and ``decay`` for ``"reinforce"``.

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
        self,
        estimator: EstimatorLike = "sigmoid",
        slope: float = 1.0,
        signed: bool = False,
        **options: Any,
    ) -> None:
        super().__init__()
        self.estimator = get_estimator(estimator, **options)
        self.signed = bool(signed)
        self.register_buffer("slope", torch.tensor(_apply.check_slope_value(slope)))
        self.register_buffer("tau", None)  # the temperature, for an estimator that has one
        self.estimator.attach(self)

    def set_slope(self, value: float) -> None:
        """Set the slope to ``value`` (a finite number > 0), in place."""
        value = _apply.check_slope_value(value)
        with torch.no_grad():
            self.slope.fill_(value)

    def set_tau(self, value: float) -> None:
        """Set the estimator's temperature to ``value`` (a finite number > 0), in place."""
        if self.tau is None:
            raise ValueError(
                f"this layer's estimator {self.estimator.name!r} has no temperature (the "
                "'gumbel' estimator has one)"
            )
        value = positive_finite("tau", value)
        with torch.no_grad():
            self.tau.fill_(value)

    def probability(self, input: Tensor) -> Tensor:
        r"""The preactivated output :math:`p = \sigma(s a)` at the layer's current slope."""
        return preactivation(input, self.slope)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        value = state_dict.get(prefix + "slope")
        if isinstance(value, Tensor) and value.numel() == 1:
            positive_finite(f"{prefix}slope in the state_dict", value.item())
        self.estimator.load_state(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        parts = [f"estimator={self.estimator.name!r}", f"slope={float(self.slope):g}"]
        estimator_part = self.estimator.extra_repr(self)
        if estimator_part:
            parts.append(estimator_part)
        if self.signed:
            parts.append("signed=True")
        return ", ".join(parts)


class DeterministicBinary(BinaryNeuron):
    r"""Deterministic binary neuron (DBN): :math:`y = \mathbb{1}[\sigma(s a) > 0.5]`.

    Applied elementwise; see :func:`~binary_neurons.functional.deterministic_binary`. Behaves
    the same in training and evaluation mode.

    Args:
        estimator: the gradient estimator: ``"identity"``, ``"sigmoid"`` (default),
            ``"annealed"``, ``"clipped"``, or an :class:`~binary_neurons.estimators.Estimator`.
        slope: the initial slope :math:`s > 0`. Default: 1.0.
        signed: output :math:`\{-1, +1\}` instead of :math:`\{0, 1\}`. Default: False.
        **options: the named estimator's options, e.g. ``clip_value=0.5`` for ``"clipped"``.

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
        self,
        estimator: EstimatorLike = "sigmoid",
        slope: float = 1.0,
        signed: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(estimator, slope, signed, **options)
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
        _apply.check_input(input)
        return _apply.run(input, self.estimator, self.slope, None, self, self.signed)


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
            ``"annealed"``, ``"clipped"``, ``"gumbel"``, ``"reinforce"``, or an
            :class:`~binary_neurons.estimators.Estimator`.
        slope: the initial slope :math:`s > 0`. Default: 1.0.
        eval_mode: ``"sample"`` (default), ``"threshold"`` or ``"probability"``.
        signed: output :math:`\{-1, +1\}` instead of :math:`\{0, 1\}`. Default: False.
        **options: the named estimator's options: ``tau=0.5`` for ``"gumbel"``,
            ``clip_value`` for ``"clipped"``, ``baseline`` and ``decay`` for ``"reinforce"``.

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
        **options: Any,
    ) -> None:
        super().__init__(estimator, slope, signed, **options)
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
        _apply.check_input(input)
        if self.training or self.eval_mode == "sample":
            seed = _apply.draw_seed(input, generator)
            return _apply.run(input, self.estimator, self.slope, seed, self, self.signed)
        if self.eval_mode == "threshold":
            # Nothing sampled for an estimator that needs the sample: the sigmoid's gradient.
            estimator = _THRESHOLD_ESTIMATOR if self.estimator.needs_sample else self.estimator
            return _apply.run(input, estimator, self.slope, None, self, self.signed)
        probability = self.probability(input)
        return _apply.to_signed(probability) if self.signed else probability

    def extra_repr(self) -> str:
        return super().extra_repr() + f", eval_mode={self.eval_mode!r}"
