"""Argument checks: the numbers the public API takes, and the op's argument contract.

The op's checks say the same things, with the same exception types, as ``csrc/op_arguments.h``
says for the native kernels, so both backends accept and reject the same arguments; the fake
kernels in :mod:`binary_neurons._ops` run them too (they need no tensor values).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._kernel_list import Kernel, get_kernel

__all__ = [
    "check_backward", "check_forward", "number_tensor", "opmath_dtype", "positive",
    "positive_finite",
]

# The dtype names of ATen's messages, so that both backends word their errors alike.
_ATEN_NAMES = {
    torch.float16: "Half", torch.bfloat16: "BFloat16", torch.float32: "Float",
    torch.float64: "Double", torch.int64: "Long", torch.int32: "Int", torch.int16: "Short",
    torch.int8: "Char", torch.uint8: "Byte", torch.bool: "Bool", torch.complex64: "ComplexFloat",
    torch.complex128: "ComplexDouble",
}


def positive_finite(name: str, value: object, accepted: str = "a number") -> float:
    """Return ``value`` as a float if it is a finite number > 0.

    Raises:
        TypeError: if ``value`` is not a number (``accepted`` says what is).
        ValueError: if it is not finite or not > 0.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be {accepted}, got {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def _name(dtype: torch.dtype) -> str:
    return _ATEN_NAMES.get(dtype, str(dtype))


def opmath_dtype(dtype: torch.dtype) -> torch.dtype:
    """The type the kernels compute in: float32 for half types, as ATen's own kernels do."""
    return torch.promote_types(dtype, torch.float32)


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


def _check_scalars(
    op: str,
    kernel: Kernel,
    slope: Tensor,
    seed: Tensor | None,
    tau: Tensor | None,
    input: Tensor,
) -> None:
    """The one-value arguments, shared by the forward and the backward: slope, seed and tau
    well formed, and what the kernel reads given (the forward's uniforms need the seed, a
    temperature needs tau)."""
    _check_scalar(op, "slope", slope, True, input)
    if seed is not None:
        _check_scalar(op, "seed", seed, False, input)
    if tau is not None:
        _check_scalar(op, "tau", tau, True, input)
    if "uniform" in kernel.reads and seed is None:
        raise ValueError(
            f"{op}: the '{kernel.name}' kernel needs a seed (it applies to stochastic neurons)"
        )
    if "tau" in kernel.reads and tau is None:
        raise ValueError(f"{op}: the '{kernel.name}' kernel needs tau")


def check_forward(
    input: Tensor, slope: Tensor, seed: Tensor | None, kernel: str, tau: Tensor | None = None
) -> Kernel:
    """The checks of ``threshold_sample``'s arguments that need no tensor values; returns the
    kernel."""
    op = "threshold_sample"
    found = get_kernel(op, kernel)
    _check_input(op, input)
    _check_scalars(op, found, slope, seed, tau, input)
    return found


def check_backward(
    grad_output: Tensor,
    input: Tensor,
    slope: Tensor,
    kernel: str,
    seed: Tensor | None = None,
    tau: Tensor | None = None,
) -> Kernel:
    """The checks of ``threshold_sample_backward``'s arguments that need no tensor values;
    returns the kernel."""
    op = "threshold_sample_backward"
    found = get_kernel(op, kernel)
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
    _check_scalars(op, found, slope, seed, tau, input)
    return found


def positive(
    op: str, value: Tensor, input: Tensor, name: str = "slope"
) -> tuple[Tensor, Tensor | None]:
    """A slope (or tau) in the input's opmath type, and, where it lives on the device, a 0-dim
    bool tensor saying whether it is usable (one on the CPU is checked here instead: reading one
    on a GPU would synchronize)."""
    opmath = opmath_dtype(input.dtype)
    used = value.to(opmath)
    if value.device.type == "cpu":
        number = float(used)
        if not (0 < number <= torch.finfo(opmath).max):
            where = (
                " and at most 3.4e38 in Float, the type Half, BFloat16 and Float inputs are "
                "computed in" if opmath == torch.float32 else ""
            )
            raise ValueError(
                f"{op}: expected {name} to be a finite number > 0{where}, got {float(value):g}"
            )
        return used, None  # a CPU 0-dim tensor: ops on any device read it as a number
    return used, (used > 0) & (used <= torch.finfo(opmath).max)


def number_tensor(value: float, input: Tensor) -> Tensor:
    """A checked number as the op's 0-dim argument (a slope, a temperature).

    Eagerly a CPU tensor: the kernels of every device read it as a number, with no copy to the
    device. In a graph compiled for a GPU, a constant on the GPU: a CPU tensor there would keep
    Inductor from using CUDA graphs (``mode="reduce-overhead"``).
    """
    if input.device.type == "cuda" and torch.compiler.is_compiling():
        return torch.full((), value, dtype=torch.float64, device=input.device)
    return torch.tensor(value, dtype=torch.float64)
