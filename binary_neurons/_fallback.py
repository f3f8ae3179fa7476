"""The pure-PyTorch kernels of the threshold-and-sample op.

The reference implementation, and the fallback used wherever the native kernels are not loaded
(no compiler, ``BINARY_NEURONS_BACKEND=python``, a device they were not built for). The
gradients are the references of the kernel list (:mod:`binary_neurons._kernel_list`); the native
kernels in ``csrc/`` compute the same functions.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._arguments import check_backward, check_forward, opmath_dtype, positive
from ._kernel_list import KernelArguments, rounded_clip_value

__all__ = ["threshold_sample", "threshold_sample_backward", "uniform_like"]


def uniform_like(input: Tensor, seed: Tensor, dtype: torch.dtype) -> Tensor:
    """The uniforms of the pure-PyTorch backend for ``input``'s elements, from ``seed``.

    The op is a pure function of its inputs: the same seed gives the same noise, which is what
    lets opcheck, AOT autograd and CSE treat it as deterministic. The randomness lives in the
    seed, which the caller draws from the torch generator.
    """
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
    kernel: str,
    clip_value: float,
    tau: Tensor | None = None,
) -> Tensor:
    """Forward: ``1[a > 0]`` if ``seed`` is None, else ``1[u < sigmoid(slope * a)]``.

    NaN inputs give NaN outputs. ``kernel``, ``clip_value`` and ``tau`` only matter for the
    backward pass; they are arguments of the op so that autograd can see them (a ``tau`` held
    on the CPU is checked here, where the mistake is made).
    """
    op = "threshold_sample"
    found = check_forward(input, slope, seed, kernel, tau)
    used, usable = positive(op, slope, input)
    if "tau" in found.reads and tau.device.type == "cpu":
        positive(op, tau, input, name="tau")
    if seed is None:
        hit = input > 0
    else:
        opmath = opmath_dtype(input.dtype)
        probability = torch.sigmoid(input.to(opmath) * used)
        hit = uniform_like(input, seed, opmath) < probability
    result = torch.where(torch.isnan(input), input, hit.to(input.dtype))
    if usable is not None and seed is not None:  # an unusable slope on the device: all NaN
        result = torch.where(usable, result, torch.nan)
    return _into_layout_of(input, result)


def threshold_sample_backward(
    grad_output: Tensor,
    input: Tensor,
    slope: Tensor,
    kernel: str,
    clip_value: float,
    seed: Tensor | None = None,
    tau: Tensor | None = None,
) -> Tensor:
    """Backward of :func:`threshold_sample`: the named kernel's pseudo-gradient (see
    :data:`binary_neurons._kernel_list.KERNELS`), with the forward's uniforms drawn again from
    ``seed`` for kernels that read them."""
    op = "threshold_sample_backward"
    found = check_backward(grad_output, input, slope, kernel, seed, tau)
    used, usable = positive(op, slope, input)
    opmath = opmath_dtype(input.dtype)
    checks = [usable] if "slope" in found.reads else []
    used_tau = None
    if "tau" in found.reads:
        used_tau, usable_tau = positive(op, tau, input, name="tau")
        checks.append(usable_tau)
    # What the kernel does not read is 0 (or None), as in the native kernels.
    arguments = KernelArguments(
        slope=used if "slope" in found.reads else torch.zeros((), dtype=opmath),
        # Like the native kernels: the bound rounded to the input's dtype.
        clip_value=rounded_clip_value(clip_value, input.dtype) if "clip_value" in found.reads
        else 0.0,
        tau=used_tau,
        uniform=uniform_like(input, seed, opmath) if "uniform" in found.reads else None,
    )
    result = found.reference(grad_output.to(opmath), input.to(opmath), arguments)
    for ok in checks:  # a slope or tau on the device that cannot be used: all NaN
        if ok is not None:
            result = torch.where(ok, result, torch.nan)
    return _into_layout_of(input, result)
