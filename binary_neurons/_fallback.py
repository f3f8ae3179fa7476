"""Pure-PyTorch kernels of the threshold-and-sample op, and the op's argument checks.

These are the reference implementation and the fallback used wherever the native kernels are
not loaded (no compiler, ``BINARY_NEURONS_BACKEND=python``, a device they were not built for).
The native kernels in ``csrc/`` compute the same functions; their argument checks
(``csrc/op_arguments.h``) say the same things with the same exception types, and the fake
kernels in :mod:`binary_neurons._ops` run the checks here that need no tensor values.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["check_backward", "check_forward", "threshold_sample", "threshold_sample_backward"]

ESTIMATORS = ("identity", "sigmoid", "clipped", "gumbel")
# The dtype names of ATen's messages, so that both backends word their errors alike.
_ATEN_NAMES = {
    torch.float16: "Half", torch.bfloat16: "BFloat16", torch.float32: "Float",
    torch.float64: "Double", torch.int64: "Long", torch.int32: "Int", torch.int16: "Short",
    torch.int8: "Char", torch.uint8: "Byte", torch.bool: "Bool", torch.complex64: "ComplexFloat",
    torch.complex128: "ComplexDouble",
}


def _name(dtype: torch.dtype) -> str:
    return _ATEN_NAMES.get(dtype, str(dtype))


def _opmath_dtype(dtype: torch.dtype) -> torch.dtype:
    # Half types are computed in float32, as ATen's own elementwise kernels do.
    return torch.promote_types(dtype, torch.float32)


def _check_estimator(op: str, estimator: str) -> None:
    if estimator not in ESTIMATORS:
        raise ValueError(
            f"{op}: unknown estimator '{estimator}'; expected 'identity', 'sigmoid', 'clipped' "
            "or 'gumbel'"
        )


def _check_input(op: str, input: Tensor) -> None:
    if not input.is_floating_point():
        raise TypeError(
            f"{op}: expected a floating-point input (Half, BFloat16, Float or Double), got "
            f"{_name(input.dtype)}"
        )


def _check_scalar(op: str, name: str, value: Tensor, floating: bool, input: Tensor) -> None:
    right_dtype = value.is_floating_point() if floating else value.dtype == torch.int64
    if value.dim() != 0 or not right_dtype:
        kind = "floating-point" if floating else "int64"
        raise ValueError(
            f"{op}: expected {name} to be a 0-dim {kind} tensor, got shape {list(value.shape)} "
            f"and dtype {_name(value.dtype)}"
        )
    if value.device.type != "cpu" and value.device != input.device:
        raise ValueError(
            f"{op}: expected {name} on the CPU or on {input.device}, got {value.device}"
        )


def _check_gumbel(
    op: str, estimator: str, seed: Tensor | None, tau: Tensor | None, input: Tensor
) -> None:
    # The Gumbel estimator regenerates the forward's uniforms: it needs the seed and tau.
    if tau is not None:
        _check_scalar(op, "tau", tau, True, input)
    if estimator == "gumbel":
        if seed is None:
            raise ValueError(
                f"{op}: the 'gumbel' estimator needs a seed (it applies to stochastic neurons)"
            )
        if tau is None:
            raise ValueError(f"{op}: the 'gumbel' estimator needs tau")


def check_forward(
    input: Tensor, slope: Tensor, seed: Tensor | None, estimator: str, tau: Tensor | None = None
) -> None:
    """The checks of ``threshold_sample``'s arguments that need no tensor values."""
    op = "threshold_sample"
    _check_estimator(op, estimator)
    _check_input(op, input)
    _check_scalar(op, "slope", slope, True, input)
    if seed is not None:
        _check_scalar(op, "seed", seed, False, input)
    _check_gumbel(op, estimator, seed, tau, input)


def check_backward(
    grad_output: Tensor,
    input: Tensor,
    slope: Tensor,
    estimator: str,
    seed: Tensor | None = None,
    tau: Tensor | None = None,
) -> None:
    """The checks of ``threshold_sample_backward``'s arguments that need no tensor values."""
    op = "threshold_sample_backward"
    _check_estimator(op, estimator)
    _check_input(op, input)
    if grad_output.shape != input.shape:
        raise ValueError(
            f"{op}: expected grad_output of the input's shape {list(input.shape)}, got "
            f"{list(grad_output.shape)}"
        )
    if grad_output.dtype != input.dtype:
        raise TypeError(
            f"{op}: expected grad_output of the input's dtype {_name(input.dtype)}, got "
            f"{_name(grad_output.dtype)}"
        )
    if grad_output.device != input.device:
        raise ValueError(
            f"{op}: expected grad_output on the input's device {input.device}, got "
            f"{grad_output.device}"
        )
    _check_scalar(op, "slope", slope, True, input)
    if seed is not None:
        _check_scalar(op, "seed", seed, False, input)
    _check_gumbel(op, estimator, seed, tau, input)


def _positive(
    op: str, slope: Tensor, input: Tensor, name: str = "slope"
) -> tuple[Tensor, Tensor | None]:
    """The slope (or tau) in the input's opmath type, and where it lives on the device a 0-dim
    bool tensor saying whether it is usable (one on the CPU is checked here instead: reading one
    on a GPU would synchronize)."""
    opmath = _opmath_dtype(input.dtype)
    used = slope.to(opmath)
    if slope.device.type == "cpu":
        value = float(used)
        if not (0 < value <= torch.finfo(opmath).max):
            where = (
                " and at most 3.4e38 in Float, the type Half, BFloat16 and Float inputs are "
                "computed in" if opmath == torch.float32 else ""
            )
            raise ValueError(
                f"{op}: expected {name} to be a finite number > 0{where}, got {float(slope):g}"
            )
        return used, None  # a CPU 0-dim tensor: ops on any device read it as a number
    return used, (used > 0) & (used <= torch.finfo(opmath).max)


def _uniform_like(input: Tensor, seed: Tensor, dtype: torch.dtype) -> Tensor:
    # The op is a pure function of its inputs: the same seed gives the same noise, which is
    # what lets opcheck, AOT autograd and CSE treat it as deterministic. The randomness lives
    # in the seed, which the caller draws from the torch generator.
    generator = torch.Generator(device=input.device)
    generator.manual_seed(int(seed))
    return torch.rand(input.shape, generator=generator, dtype=dtype, device=input.device)


def _into_layout_of(input: Tensor, result: Tensor) -> Tensor:
    # The fake kernel promises empty_like(input)'s layout; honour it for every input layout.
    out = torch.empty_like(input)
    out.copy_(result)
    return out


def threshold_sample(
    input: Tensor,
    slope: Tensor,
    seed: Tensor | None,
    estimator: str,
    clip_value: float,
    tau: Tensor | None = None,
) -> Tensor:
    """Forward: ``1[a > 0]`` if ``seed`` is None, else ``1[u < sigmoid(slope * a)]``.

    NaN inputs give NaN outputs. ``estimator``, ``clip_value`` and ``tau`` only matter for the
    backward pass; they are arguments of the op so that autograd can see them (a Gumbel ``tau``
    held on the CPU is checked here, where the mistake is made).
    """
    check_forward(input, slope, seed, estimator, tau)
    used, usable = _positive("threshold_sample", slope, input)
    if estimator == "gumbel" and tau.device.type == "cpu":
        _positive("threshold_sample", tau, input, name="tau")
    if seed is None:
        hit = input > 0
    else:
        opmath = _opmath_dtype(input.dtype)
        probability = torch.sigmoid(input.to(opmath) * used)
        hit = _uniform_like(input, seed, opmath) < probability
    result = torch.where(torch.isnan(input), input, hit.to(input.dtype))
    if usable is not None and seed is not None:  # an unusable slope on the device: all NaN
        result = torch.where(usable, result, torch.nan)
    return _into_layout_of(input, result)


def threshold_sample_backward(
    grad_output: Tensor,
    input: Tensor,
    slope: Tensor,
    estimator: str,
    clip_value: float,
    seed: Tensor | None = None,
    tau: Tensor | None = None,
) -> Tensor:
    """Backward of :func:`threshold_sample` for the fused estimators.

    ``"identity"``: ``g``; ``"sigmoid"``: ``g * s * p * (1 - p)`` with ``p = sigmoid(s a)``;
    ``"clipped"``: ``g * 1[|a| <= clip_value]``; ``"gumbel"``: ``g * (s / tau) * q * (1 - q)``
    with ``q = sigmoid((s a - logit(u)) / tau)`` and the forward's uniforms ``u``, drawn again
    from ``seed``.
    """
    op = "threshold_sample_backward"
    check_backward(grad_output, input, slope, estimator, seed, tau)
    used, usable = _positive(op, slope, input)
    if estimator == "identity":
        result = grad_output
    elif estimator == "sigmoid":
        opmath = _opmath_dtype(input.dtype)
        result = grad_output.to(opmath) * sigmoid_derivative(input.to(opmath), used)
        if usable is not None:
            result = torch.where(usable, result, torch.nan)
    elif estimator == "gumbel":
        opmath = _opmath_dtype(input.dtype)
        used_tau, usable_tau = _positive(op, tau, input, name="tau")
        u = _uniform_like(input, seed, opmath)
        z = (input.to(opmath) * used - torch.logit(u)) / used_tau
        result = grad_output.to(opmath) * ((used / used_tau) * sigmoid_derivative(z, 1.0))
        for ok in (usable, usable_tau):
            if ok is not None:
                result = torch.where(ok, result, torch.nan)
    else:
        result = torch.where(input.abs() <= clip_value, grad_output, 0)
    return _into_layout_of(input, result)


def sigmoid_derivative(input: Tensor, slope: Tensor | float) -> Tensor:
    """``s * sigmoid(s a) * (1 - sigmoid(s a))``, in the dtype of ``input``.

    As ``s e / (1 + e)^2`` with ``e = exp(-|s a|)``: no cancellation near p = 1, and the tail
    far from 0 stays a (subnormal) positive number until the true value underflows.
    """
    e = torch.exp(-(input * slope).abs())
    return slope * (e / (1 + e).square())
