"""The estimator interface: what a layer and the functional forms ask of an estimator.

Public as :class:`binary_neurons.Estimator` (and :mod:`binary_neurons.estimators`), where the
built-in estimators are.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from . import _fallback, _ops

__all__ = ["Estimator", "reference_backward"]


class Estimator:
    r"""Base class of gradient estimators.

    A subclass sets :attr:`name` and either names a fused :attr:`kernel` or implements
    :meth:`backward` in PyTorch (called from a :class:`torch.autograd.Function`). Everything a
    layer needs from its estimator goes through the methods below, whose defaults suit a
    stateless estimator: :meth:`attach` and :meth:`load_state` for state kept on the layer,
    :meth:`extra_repr` for the layer's repr, :meth:`kernel_arguments` for the op's arguments,
    and :meth:`apply` for the forward pass.

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

    #: Short name used by :func:`get_estimator` and in a layer's repr.
    name: str = ""
    #: Whether :class:`~binary_neurons.SlopeAnnealer` raises the slope of layers using it.
    anneals: bool = False
    #: Name of the fused backward kernel it runs (one of the kernel list,
    #: ``binary_neurons._kernel_list.KERNELS``; see "Writing an estimator"), or ``None`` for
    #: estimators whose :meth:`backward` runs in PyTorch.
    kernel: Optional[str] = None
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
            "subclass Estimator and implement it, or use a built-in estimator "
            "(binary_neurons.estimators.ESTIMATORS)"
        )

    @property
    def clip_value(self) -> float:
        """The clipping threshold passed to the fused kernel (0 where unused)."""
        return 0.0

    def kernel_arguments(
        self, input: Tensor, layer: Optional[nn.Module]
    ) -> tuple[float, Optional[Tensor]]:
        """The op's ``clip_value`` and ``tau`` arguments for this estimator's kernel, for
        ``layer`` (``None`` in a functional call)."""
        return self.clip_value, None

    def attach(self, layer: nn.Module) -> None:
        """Give ``layer`` the state this estimator keeps on it (buffers, saved in its
        ``state_dict``); called once, by the layer's constructor."""

    def load_state(self, layer: nn.Module, state_dict: dict, prefix: str) -> None:
        """Check (and prepare ``layer`` for) the part of ``state_dict`` this estimator keeps,
        before the layer loads it; raise ``ValueError`` for a bad value."""

    def extra_repr(self, layer: nn.Module) -> str:
        """This estimator's part of ``layer``'s repr (``"clip_value=1"``), or ``""``."""
        return ""

    def apply(
        self,
        input: Tensor,
        slope: Tensor,
        seed: Optional[Tensor],
        layer: Optional[nn.Module] = None,
    ) -> Tensor:
        """The neuron's output, with this estimator's pseudo-gradient: a threshold when ``seed``
        is ``None``, else a sample drawn from it.

        Args:
            input: the pre-activation (checked: a floating-point tensor).
            slope: the slope, a checked 0-dim tensor.
            seed: the op's seed (an int64 0-dim tensor), or ``None``.
            layer: the layer running it, which holds the state :meth:`attach` gave it, or
                ``None`` for the functional forms.
        """
        if self.kernel is None:
            return _PythonEstimatorFunction.apply(input, slope, seed, self)
        clip_value, tau = self.kernel_arguments(input, layer)
        return _ops.threshold_sample(input, slope, seed, self.kernel, clip_value, tau)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.clip_value == other.clip_value

    def __hash__(self) -> int:
        return hash((type(self), self.clip_value))


class _PythonEstimatorFunction(torch.autograd.Function):
    """Runs the op's forward with the backward of an estimator written in PyTorch."""

    @staticmethod
    def forward(ctx, input, slope, seed, estimator):
        ctx.save_for_backward(input, slope)
        ctx.estimator = estimator
        return _ops.threshold_sample(input, slope, seed, "identity", 0.0)

    @staticmethod
    def backward(ctx, grad_output):
        input, slope = ctx.saved_tensors
        return ctx.estimator.backward(grad_output, input, slope), None, None, None


def reference_backward(
    kernel: str, grad_output: Tensor, input: Tensor, slope: Tensor, clip_value: float = 0.0
) -> Tensor:
    """A fused estimator's gradient in PyTorch: the pure-PyTorch backend's kernel (a new
    tensor, in the input's dtype)."""
    return _fallback.threshold_sample_backward(grad_output, input, slope, kernel, clip_value)
