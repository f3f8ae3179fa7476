"""How the layers and the functional forms run an estimator: the checks of what users pass, the
seed of a stochastic call, and the signed form of the output.

Private: the public entry points are :mod:`binary_neurons.functional` and the layers.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor, nn

from ._arguments import number_tensor, positive_finite
from .estimators import Estimator

__all__ = ["as_slope_tensor", "check_input", "check_slope_value", "draw_seed", "run", "to_signed"]

SlopeLike = Union[float, Tensor]

# Seeds are drawn from [0, 2**62): wide enough for Philox keys, and inside the range that
# torch.compile's randint lowering handles.
SEED_HIGH = 2**62


def check_input(input: Tensor) -> None:
    """Raise ``TypeError`` unless ``input`` is a floating-point tensor."""
    if not isinstance(input, Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}")
    if not input.is_floating_point():
        raise TypeError(
            "input must be a floating-point tensor (float16, bfloat16, float32 or float64), "
            f"got {input.dtype}"
        )


def check_slope_value(slope: float) -> float:
    """Return ``slope`` as a float if it is a finite number > 0, else raise ``ValueError``."""
    return positive_finite("slope", slope, accepted="a number or a 0-dim tensor")


def as_slope_tensor(slope: SlopeLike, input: Tensor) -> Tensor:
    """A slope the user passed, checked, as the op's 0-dim argument."""
    if isinstance(slope, Tensor):
        if slope.numel() != 1 or not slope.is_floating_point():
            raise ValueError(
                "slope must be a floating-point tensor with one element, "
                f"got shape {tuple(slope.shape)} and dtype {slope.dtype}"
            )
        if slope.device.type != "cpu" and slope.device != input.device:
            raise ValueError(
                f"slope is on {slope.device} but input is on {input.device}; "
                "expected the input's device or the CPU"
            )
        if slope.device.type == "cpu" and not torch.compiler.is_compiling():
            # Reading a CPU scalar costs nothing; a device scalar is validated by its owner
            # (the layers check their slope whenever it is set).
            check_slope_value(slope.item())
        return slope.reshape(())
    return number_tensor(check_slope_value(slope), input)


def _indexed(device: torch.device) -> torch.device:
    """``device`` with its index: a bare ``cuda`` (as ``torch.Generator("cuda")`` reports) is the
    current device, which is where that generator's draws go."""
    device = torch.device(device)
    if device.type == "cpu" or device.index is not None:
        return device
    return torch.device(device.type, torch.get_device_module(device.type).current_device())


def draw_seed(input: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    """Draw the op's seed for ``input`` from ``generator`` (or the device's default)."""
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator must be a torch.Generator or None, got {type(generator).__name__}"
            )
        if _indexed(generator.device) != input.device:
            raise ValueError(
                f"generator is on {generator.device} but input is on {input.device}; "
                "expected a generator on the input's device"
            )
    return torch.randint(
        0, SEED_HIGH, (), dtype=torch.int64, device=input.device, generator=generator
    )


def to_signed(y: Tensor) -> Tensor:
    """``2 y - 1``: {0, 1} to {-1, +1} (and a probability to the expected signed output)."""
    return y * 2 - 1


def run(
    input: Tensor,
    estimator: Estimator,
    slope: Tensor,
    seed: Optional[Tensor],
    layer: Optional[nn.Module] = None,
    signed: bool = False,
) -> Tensor:
    """Run ``estimator`` on a checked input and 0-dim slope tensor, for ``layer`` (or a
    functional call). With ``signed``, the output is ``2 y - 1`` and the pseudo-gradient is
    scaled by the estimator's ``signed_scale``."""
    y = estimator.apply(input, slope, seed, layer)
    if not signed:
        return y
    scale = estimator.signed_scale
    if scale == 2.0:  # the surrogate's own derivative: that of 2 y - 1
        return to_signed(y)
    # 2 y - 1 in value, with `scale` times y's pseudo-gradient.
    return y * scale + (y.detach() * (2 - scale) - 1)
