r"""REINFORCE for stochastic binary layers: the estimator, the samples a layer keeps and the
loss term.

A :class:`~binary_neurons.StochasticBinary` layer with the ``"reinforce"`` estimator
(:class:`Reinforce`) samples as usual and keeps, for each forward pass that autograd records,
its pre-activation, sample and probability. :func:`reinforce_loss` turns those and the
per-example loss into the term whose gradient is the REINFORCE estimate, updates the layers'
baselines, and clears what they kept.
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor, nn

from . import _ops
from ._arguments import opmath_dtype
from ._estimator import Estimator

__all__ = ["Reinforce", "reinforce_loss"]

# Added to the baseline's denominator, as in Bengio et al.'s and the R2RT post's code.
_DENOMINATOR_EPSILON = 1e-4
# Passes live until a reinforce_loss call (under torch.compile, where a pass cannot tell when its
# graph is gone, even if their outputs were dropped); at this many, a warning says that call may
# be missing. It warns, never raises: a long recurrent loop may legitimately come near it.
_COMPILED_PASSES_WARNING = 10_000
_BUFFERS = ("reinforce_numerator", "reinforce_denominator")


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
    signed_scale = 2.0  # y passes no gradient: only the value 2 y - 1 matters
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

    def attach(self, layer: nn.Module) -> None:
        attach_state(layer)

    def load_state(self, layer: nn.Module, state_dict: dict, prefix: str) -> None:
        shape_state(layer, state_dict, prefix)

    def extra_repr(self, layer: nn.Module) -> str:
        return f"baseline={self.baseline!r}"

    def apply(
        self,
        input: Tensor,
        slope: Tensor,
        seed: Optional[Tensor],
        layer: Optional[nn.Module] = None,
    ) -> Tensor:
        if layer is None:
            raise ValueError(
                f"estimator {self.name!r} needs the per-example loss, which a StochasticBinary "
                "layer collects (see binary_neurons.reinforce_loss); the functional forms cannot"
            )
        return sample(layer, input, seed)

    def __eq__(self, other: object) -> bool:
        return (
            type(self) is type(other)
            and (self.baseline, self.decay) == (other.baseline, other.decay)
        )

    def __hash__(self) -> int:
        return hash((type(self), self.baseline, self.decay))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(baseline={self.baseline!r}, decay={self.decay})"


@dataclass
class _Pending:
    """One recorded forward pass of a REINFORCE layer."""

    input: Tensor  # the pre-activation, attached to the graph
    probability: Tensor  # sigmoid(s a), detached, in the input's opmath type
    slope: Tensor  # a copy, 0-dim
    sample: Optional[Tensor] = None  # y, detached
    # A weak reference to a token of its graph node (None under torch.compile: kept until used)
    node: Optional[Callable[[], Any]] = None
    supplied: bool = False  # set by reinforce_loss; checked by the output's backward

    def alive(self) -> bool:
        """Whether the pass's graph still exists: a pass whose output was dropped with
        everything computed from it (a step that detached it, say) can no longer receive a
        gradient, and is forgotten."""
        return self.node is None or self.node() is not None


class _NodeToken:
    """Held only by a pass's autograd node: it dies with the node's graph."""


def attach_state(layer: nn.Module) -> None:
    """Give a REINFORCE layer its baseline buffers (per-unit moving averages, shaped at the
    first batch, or by a loaded state_dict) and its list of recorded passes."""
    for name in _BUFFERS:
        layer.register_buffer(name, torch.zeros(0))
    layer._reinforce_pending = []


def shape_state(layer: nn.Module, state_dict: dict, prefix: str) -> None:
    """Before a state_dict is loaded: take the saved baseline's shape (the buffers are replaced
    by new tensors, so references to the old ones, as a DDP wrapper keeps, go stale)."""
    for name in _BUFFERS:
        value = state_dict.get(prefix + name)
        if isinstance(value, Tensor) and hasattr(layer, name):
            setattr(layer, name, torch.empty_like(value, device=layer.slope.device))


class _ReinforceSample(torch.autograd.Function):
    """The layer's sample; its backward passes no gradient and checks the loss was supplied."""

    @staticmethod
    def forward(ctx, input, slope, seed, pending, layer_name):
        ctx.pending, ctx.layer_name = pending, layer_name
        if not torch.compiler.is_compiling():  # a traced node's token would die at once
            ctx.token = _NodeToken()
            pending.node = weakref.ref(ctx.token)
        return _ops.threshold_sample(input, slope, seed, "identity", 0.0)

    @staticmethod
    def backward(ctx, grad_output):
        # A compiled backward is traced before any loss exists: only eager passes can check.
        if not torch.compiler.is_compiling() and not ctx.pending.supplied:
            raise RuntimeError(
                f"the REINFORCE layer {ctx.layer_name} got a gradient, but its per-example loss "
                "was never supplied: add binary_neurons.reinforce_loss(model, per_example_loss) "
                "to the loss before backward() (see its docstring for a training loop)"
            )
        return None, None, None, None, None


def sample(layer: nn.Module, input: Tensor, seed: Tensor) -> Tensor:
    """The forward pass of a REINFORCE layer: the sample, recorded in training mode when
    autograd records."""
    if not (layer.training and torch.is_grad_enabled() and input.requires_grad):
        return _ops.threshold_sample(input, layer.slope, seed, "identity", 0.0)
    # A layer may run many times in one step (a recurrent loop): every pass is kept until
    # reinforce_loss. A pass whose graph is gone (its output dropped) can never get a gradient and
    # is forgotten, so nothing piles up; a forgotten reinforce_loss is an error at backward().
    pending_list = [pending for pending in layer._reinforce_pending if pending.alive()]
    if len(pending_list) == _COMPILED_PASSES_WARNING:
        warnings.warn(
            f"a REINFORCE layer ({layer.extra_repr()}) holds {len(pending_list)} forward passes "
            "that no reinforce_loss call consumed; call binary_neurons.reinforce_loss(model, "
            "per_example_loss) once per training step",
            RuntimeWarning,
            stacklevel=4,
        )
    opmath = opmath_dtype(input.dtype)
    slope = layer.slope.detach().clone()
    pending = _Pending(input, layer.probability(input.detach().to(opmath)), slope)
    output = _ReinforceSample.apply(input, layer.slope, seed, pending, type(layer).__name__)
    pending.sample = output.detach()
    pending_list.append(pending)
    layer._reinforce_pending = pending_list
    return output


BaselineLike = Union[float, Tensor]


def reinforce_loss(
    model: nn.Module,
    per_example_loss: Tensor,
    baseline: Optional[BaselineLike] = None,
    reduction: str = "mean",
) -> Tensor:
    r"""The loss term that gives every REINFORCE layer in ``model`` its gradient.

    For each forward pass of each :class:`~binary_neurons.StochasticBinary` with
    ``estimator="reinforce"`` since the last call, with pre-activation :math:`a_{n}`, sample
    :math:`y_n` and probability :math:`p_n` for example :math:`n`, the returned scalar's
    gradient with respect to :math:`a_n` is

    .. math::
        s \, (y_n - p_n) \, (L_n - b) \, / \, N \quad (\text{reduction} = \text{"mean"}),

    and its value is 0, so adding it leaves the loss you log unchanged. Call it once per
    training step, after the forward pass and before ``backward()``. It then updates each
    layer's variance-minimising baseline with this batch and forgets the recorded passes.

    Args:
        model: the model, or any module containing the REINFORCE layers.
        per_example_loss: the loss of each example, shape ``(N,)``, where ``N`` is the first
            dimension of every REINFORCE layer's input (``reduction="none"`` losses). Detached
            here: no gradient flows through it.
        baseline: a baseline to use instead of the layers' own: a number, or a tensor of shape
            ``(N,)`` (one per example, e.g. from a learned baseline network). Default: each
            layer's (see :class:`~binary_neurons.Reinforce`).
        reduction: ``"mean"`` (default), matching ``per_example_loss.mean()``, or ``"sum"``.

    Returns:
        A 0-dim tensor equal to 0, whose gradient is the REINFORCE estimate.

    Raises:
        ValueError: if ``model`` has no REINFORCE layer, no layer ran since the last call, or
            the loss's or baseline's shape does not match the layers' batch.

    Example:
        A classifier with one layer of stochastic binary hidden units, trained by REINFORCE:

        >>> import torch
        >>> from torch import nn
        >>> import binary_neurons as bn
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = nn.Sequential(
        ...     nn.Linear(784, 100), bn.StochasticBinary(estimator="reinforce"),
        ...     nn.Linear(100, 10)
        ... )
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> images, labels = torch.rand(32, 784), torch.randint(0, 10, (32,))
        >>> for step in range(3):
        ...     losses = nn.functional.cross_entropy(model(images), labels, reduction="none")
        ...     loss = losses.mean()
        ...     optimizer.zero_grad()
        ...     (loss + bn.reinforce_loss(model, losses)).backward()
        ...     optimizer.step()
        >>> model[0].weight.grad.abs().sum() > 0
        tensor(True)
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"unknown reduction {reduction!r}; expected 'mean' or 'sum'")
    if not isinstance(per_example_loss, Tensor) or per_example_loss.dim() != 1:
        shape = tuple(per_example_loss.shape) if isinstance(per_example_loss, Tensor) else None
        raise ValueError(
            "per_example_loss must be a 1-dim tensor with one loss per example (a loss with "
            f"reduction='none'), got {type(per_example_loss).__name__} of shape {shape}"
        )
    layers = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(getattr(module, "estimator", None), Reinforce)
    ]
    if not layers:
        raise ValueError(
            "model has no StochasticBinary layer with estimator='reinforce'; reinforce_loss is "
            "only needed for those"
        )
    recorded = [
        (name or "(the model)", layer, pending)
        for name, layer in layers
        for pending in layer._reinforce_pending
        if pending.alive()
    ]
    if not recorded:
        raise ValueError(
            "no REINFORCE layer ran a training forward pass since the last reinforce_loss call "
            "(in training mode, with autograd recording and an input that requires grad)"
        )
    loss = per_example_loss.detach()
    n = loss.shape[0]
    given = None if baseline is None else _given_baseline(baseline, loss)
    for name, _, pending in recorded:  # check everything before changing anything
        _check_batch(name, pending.input, n)
    # Every term uses the baselines as they were before this call; then they learn from it.
    terms = [_term(layer, pending, loss, given, reduction) for _, layer, pending in recorded]
    for (_, layer, pending), (_, deviation, per_example) in zip(recorded, terms):
        if layer.estimator.baseline == "variance":
            _update_baseline(layer, deviation, per_example)
        pending.supplied = True
    for _, layer in layers:
        layer._reinforce_pending = []
    return sum((term for term, _, _ in terms), loss.new_zeros((), dtype=torch.float32))


def _given_baseline(baseline: BaselineLike, loss: Tensor) -> Tensor:
    value = torch.as_tensor(baseline, dtype=loss.dtype, device=loss.device).detach()
    if value.dim() == 0:
        return value.expand(loss.shape[0])
    if value.shape != loss.shape:
        raise ValueError(
            f"baseline must be a number or a tensor of the loss's shape {tuple(loss.shape)}, "
            f"got shape {tuple(value.shape)}"
        )
    return value


def _check_batch(name: str, a: Tensor, n: int) -> None:
    if a.dim() == 0 or a.shape[0] != n:
        batch = "a 0-dim input" if a.dim() == 0 else f"a batch of {a.shape[0]}"
        raise ValueError(
            f"REINFORCE layer {name} saw {batch}, but per_example_loss has {n} losses: the "
            "layer's input must have one row per example"
        )


def _term(
    layer: nn.Module, pending: _Pending, loss: Tensor, given: Optional[Tensor], reduction: str
) -> tuple[Tensor, Tensor, Tensor]:
    """One recorded pass's loss term, and its y - p and per-example loss for the baseline."""
    a = pending.input
    n = a.shape[0]
    opmath = pending.probability.dtype
    unit_shape = (n,) + (1,) * (a.dim() - 1)
    per_example = loss.to(opmath).view(unit_shape)
    deviation = pending.sample.to(opmath) - pending.probability  # y - p
    if given is not None:
        centred = per_example - given.to(opmath).view(unit_shape)
    elif layer.estimator.baseline == "variance":
        numerator, denominator = _baseline_state(layer, a.shape[1:], opmath)
        centred = per_example - (numerator / (denominator + _DENOMINATOR_EPSILON)).to(opmath)
    else:
        centred = per_example
    coefficient = pending.slope.to(opmath) * deviation * centred
    if reduction == "mean":
        coefficient = coefficient / n
    # Value 0, gradient `coefficient` with respect to the pre-activation.
    term = (coefficient.detach() * (a.to(opmath) - a.detach().to(opmath))).sum().float()
    return term, deviation, per_example


def _baseline_state(layer: nn.Module, units: torch.Size, dtype: torch.dtype):
    """The layer's moving averages, created at the first batch with the units' shape."""
    if layer.reinforce_numerator.shape != units:
        if layer.reinforce_numerator.numel():
            raise ValueError(
                f"the REINFORCE baseline was kept for units of shape "
                f"{tuple(layer.reinforce_numerator.shape)}, but the layer now sees "
                f"{tuple(units)}"
            )
        device = layer.slope.device
        layer.reinforce_numerator = torch.zeros(units, dtype=dtype, device=device)
        layer.reinforce_denominator = torch.ones(units, dtype=dtype, device=device)
    return layer.reinforce_numerator, layer.reinforce_denominator


@torch.no_grad()
def _update_baseline(layer: nn.Module, deviation: Tensor, per_example: Tensor) -> None:
    numerator, denominator = _baseline_state(layer, deviation.shape[1:], deviation.dtype)
    squared = deviation.square()
    keep = layer.estimator.decay
    numerator.mul_(keep).add_((squared * per_example).mean(0), alpha=1 - keep)
    denominator.mul_(keep).add_(squared.mean(0), alpha=1 - keep)
