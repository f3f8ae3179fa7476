"""Pure-PyTorch kernels of the threshold-and-sample op.

These are the reference implementation and the fallback used wherever the compiled extension
provides no kernel (no compiler at install time, ``BINARY_NEURONS_BACKEND=python``, or a device
the extension was not built for). The native kernels in ``csrc/`` compute the same functions.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["threshold_sample", "threshold_sample_backward"]


def _opmath_dtype(dtype: torch.dtype) -> torch.dtype:
    # Half types are computed in float32, as ATen's own elementwise kernels do.
    return torch.promote_types(dtype, torch.float32)


def _uniform_like(input: Tensor, seed: Tensor, dtype: torch.dtype) -> Tensor:
    # The op is a pure function of its inputs: the same seed gives the same noise, which is
    # what lets opcheck, AOT autograd and CSE treat it as deterministic. The randomness lives
    # in the seed, which the caller draws from the torch generator.
    generator = torch.Generator(device=input.device)
    generator.manual_seed(int(seed))
    return torch.rand(input.shape, generator=generator, dtype=dtype, device=input.device)


def threshold_sample(
    input: Tensor, slope: Tensor, seed: Tensor | None, estimator: str, clip_value: float
) -> Tensor:
    """Forward: ``1[a > 0]`` if ``seed`` is None, else ``1[u < sigmoid(slope * a)]``.

    NaN inputs give NaN outputs. ``estimator`` and ``clip_value`` only matter for the backward
    pass; they are arguments of the op so that autograd can see them.
    """
    if seed is None:
        hit = input > 0
    else:
        opmath = _opmath_dtype(input.dtype)
        probability = torch.sigmoid(input.to(opmath) * slope.to(opmath))
        hit = _uniform_like(input, seed, opmath) < probability
    result = torch.where(torch.isnan(input), input, hit.to(input.dtype))
    # The fake kernel promises empty_like(input)'s layout; honour it for every input layout.
    out = torch.empty_like(input)
    out.copy_(result)
    return out


def threshold_sample_backward(
    grad_output: Tensor, input: Tensor, slope: Tensor, estimator: str, clip_value: float
) -> Tensor:
    """Backward of :func:`threshold_sample` for the fused estimators.

    ``"identity"``: ``g``; ``"sigmoid"``: ``g * s * p * (1 - p)`` with ``p = sigmoid(s a)``;
    ``"clipped"``: ``g * 1[|a| <= clip_value]``.
    """
    if estimator == "identity":
        result = grad_output
    elif estimator == "sigmoid":
        opmath = _opmath_dtype(input.dtype)
        scaled_slope = slope.to(opmath)
        x = input.to(opmath) * scaled_slope
        # sigmoid(x) * sigmoid(-x) == p (1 - p), without the cancellation of 1 - p near p = 1.
        derivative = scaled_slope * torch.sigmoid(x) * torch.sigmoid(-x)
        result = grad_output.to(opmath) * derivative
    elif estimator == "clipped":
        result = torch.where(input.abs() <= clip_value, grad_output, 0)
    else:
        raise ValueError(
            f"threshold_sample_backward: unknown estimator {estimator!r}; "
            "expected 'identity', 'sigmoid' or 'clipped'"
        )
    out = torch.empty_like(input)
    out.copy_(result)
    return out
