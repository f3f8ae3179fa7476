"""Annealing: raise the slope of annealed binary neurons (and lower temperatures) during
training."""

from __future__ import annotations

import warnings
from typing import Any, Optional

import torch
from torch import Tensor, nn

from ._arguments import positive_finite
from .modules import BinaryNeuron

__all__ = ["SlopeAnnealer"]


class SlopeAnnealer:
    r"""Multiplies the slope of every ``"annealed"`` binary neuron in a model.

    Works like a learning-rate scheduler: call :meth:`step` once per epoch, after the epoch's
    training. After :math:`k` steps a layer that started at slope :math:`s_0` has slope
    :math:`\min(s_0 f^k, s_{\max})`, where :math:`f` is ``factor`` and :math:`s_{\max}` is
    ``max_slope``. BinaryGAN uses ``factor=1.1`` from :math:`s_0 = 1`, so epoch :math:`e`
    (counting from 0) trains at :math:`1.1^e`. Stepping after the last epoch leaves the model
    one step past the slope it last trained at; if the final model should keep that slope (a
    stochastic neuron samples with it), step at the start of every epoch but the first
    instead.

    With ``temperature_factor``, each step also multiplies the temperature of every layer whose
    estimator has one (its ``tau`` buffer: the ``"gumbel"`` estimator) by it (a factor below 1
    cools it), never taking it below ``min_temperature``.

    The slopes and temperatures live in the layers' ``slope`` and ``tau`` buffers, so they are
    saved and restored with the model's ``state_dict``; :meth:`state_dict` holds the annealer's
    own settings and step count. Restoring both resumes the schedule exactly.

    :meth:`step` writes the buffers in place (a captured CUDA graph sees the new values) and,
    after its first call, without reading them from the device: it remembers what it wrote,
    and reads a buffer again only when something else changed it (``load_state_dict``,
    ``set_slope``, a move to another device or dtype). So stepping between the replays of a
    CUDA graph does not synchronize.

    Args:
        model: a module containing at least one :class:`~binary_neurons.DeterministicBinary` or
            :class:`~binary_neurons.StochasticBinary` with ``estimator="annealed"`` (the module
            itself may be that layer).
        factor: the multiplier applied per step, a finite number > 0. Default: 1.1.
        max_slope: an upper bound on the slope, or ``None`` for none. Default: ``None``.
        temperature_factor: the multiplier of Gumbel temperatures per step, a finite number
            > 0, or ``None`` (default) to leave them alone.
        min_temperature: the floor of the temperatures, a finite number > 0. Default: 0.1.

    Raises:
        ValueError: if ``model`` has nothing to anneal (no ``"annealed"`` layer, and no
            ``"gumbel"`` layer or no ``temperature_factor``), or for a bad setting.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> import binary_neurons as bn
        >>> model = nn.Sequential(nn.Linear(8, 8), bn.StochasticBinary(estimator="annealed"))
        >>> annealer = bn.SlopeAnnealer(model, factor=1.1)
        >>> for epoch in range(3):
        ...     pass  # train one epoch
        ...     annealer.step()
        >>> round(float(model[1].slope), 4)
        1.331

        Cooling a Gumbel layer from tau = 1 by 0.5 per step, down to 0.25:

        >>> layer = bn.StochasticBinary(estimator="gumbel")
        >>> annealer = bn.SlopeAnnealer(layer, temperature_factor=0.5, min_temperature=0.25)
        >>> for epoch in range(3):
        ...     annealer.step()
        >>> annealer.temperatures
        [0.25]
    """

    def __init__(
        self,
        model: nn.Module,
        factor: float = 1.1,
        max_slope: Optional[float] = None,
        *,
        temperature_factor: Optional[float] = None,
        min_temperature: float = 0.1,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.factor = positive_finite("factor", factor)
        self.max_slope = None if max_slope is None else positive_finite("max_slope", max_slope)
        self.temperature_factor = (
            None
            if temperature_factor is None
            else positive_finite("temperature_factor", temperature_factor)
        )
        self.min_temperature = positive_finite("min_temperature", min_temperature)
        neurons = [module for module in model.modules() if isinstance(module, BinaryNeuron)]
        self.layers = [module for module in neurons if module.estimator.anneals]
        self.temperature_layers = [module for module in neurons if module.tau is not None]
        if not self.layers and (self.temperature_factor is None or not self.temperature_layers):
            raise ValueError(
                "model has nothing to anneal: no binary neuron with estimator='annealed' (whose "
                "slope rises), and no estimator='gumbel' layer with temperature_factor set"
            )
        self.num_steps = 0
        # What step() last wrote to each buffer, on the host: (buffer, its version after the
        # write, the value as a CPU tensor of the buffer's dtype). Reading a buffer on a GPU
        # would synchronize, so step() reads one only when something else changed it.
        self._written: dict[tuple[int, str], tuple[Tensor, int, Tensor]] = {}

    def _value(self, layer: BinaryNeuron, name: str) -> Tensor:
        """A layer's ``slope`` or ``tau``, as a CPU tensor of the buffer's dtype: from what
        step() wrote, unless the buffer has been replaced (``.to()``) or written since
        (``load_state_dict``, ``set_slope``), in which case it is read from the device once."""
        buffer = getattr(layer, name)
        written = self._written.get((id(layer), name))
        if written is not None and written[0] is buffer and written[1] == buffer._version:
            return written[2]
        return buffer.detach().cpu()

    def _write(self, layer: BinaryNeuron, name: str, value: Tensor) -> None:
        """Set a buffer in place (a captured CUDA graph reads it there) from a CPU value,
        without waiting for the device: a fill from a number is an ordinary kernel launch."""
        buffer = getattr(layer, name)
        buffer.fill_(value.item())
        self._written[(id(layer), name)] = (buffer, buffer._version, value)

    @torch.no_grad()
    def step(self) -> None:
        """Multiply every annealed layer's slope by ``factor`` (capped at ``max_slope``), and,
        with ``temperature_factor``, every Gumbel layer's temperature by it (floored at
        ``min_temperature``; a temperature already below the floor is left alone).

        Raises:
            ValueError: if a slope or temperature would leave the range of float32 (about
                1.2e-38 to 3.4e38), the type the kernels compute in for all but float64
                inputs; nothing changes.
        """
        new = []
        for layer in self.layers:
            slope = self._value(layer, "slope") * self.factor  # in the buffer's dtype
            if self.max_slope is not None:
                slope = slope.clamp(max=self.max_slope)
            self._check_range("slope", float(slope), "set max_slope, or a factor closer to 1")
            new.append(slope)
        new_taus = []
        for layer in self.temperature_layers if self.temperature_factor is not None else ():
            tau = self._value(layer, "tau")
            # Never below the floor, and never raised by it (a tau set below it stays).
            value = max(float(tau) * self.temperature_factor, min(float(tau), self.min_temperature))
            self._check_range("temperature", value, "set a temperature_factor closer to 1")
            new_taus.append(torch.tensor(value, dtype=tau.dtype))
        for layer, slope in zip(self.layers, new):
            self._write(layer, "slope", slope)
        for layer, tau in zip(self.temperature_layers, new_taus):
            self._write(layer, "tau", tau)
        self.num_steps += 1

    def _check_range(self, what: str, value: float, hint: str) -> None:
        """A slope or temperature must stay in float32's normal range, where the kernels
        compute for all but float64 inputs."""
        limits = torch.finfo(torch.float32)
        if not limits.tiny <= value <= limits.max:
            raise ValueError(
                f"annealing step {self.num_steps + 1} would set a {what} to {value:g}, outside "
                f"float32's range ({limits.tiny:.2g} to {limits.max:.2g}) in which the kernels "
                f"compute; {hint}"
            )

    @property
    def slopes(self) -> list[float]:
        """The current slope of each annealed layer, in model order."""
        return [float(self._value(layer, "slope")) for layer in self.layers]

    @property
    def temperatures(self) -> list[float]:
        """The current temperature of each layer that has one, in model order."""
        return [float(self._value(layer, "tau")) for layer in self.temperature_layers]

    @property
    def gumbel_layers(self) -> list[BinaryNeuron]:
        """Deprecated: :attr:`temperature_layers`."""
        warnings.warn(
            "SlopeAnnealer.gumbel_layers is deprecated; use SlopeAnnealer.temperature_layers",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.temperature_layers

    def state_dict(self) -> dict[str, Any]:
        """The annealer's settings and step count (slopes and temperatures are in the model's
        state)."""
        return {
            "factor": self.factor,
            "max_slope": self.max_slope,
            "num_steps": self.num_steps,
            "temperature_factor": self.temperature_factor,
            "min_temperature": self.min_temperature,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        missing = {"factor", "max_slope", "num_steps"} - set(state_dict)
        if missing:
            raise KeyError(f"SlopeAnnealer state_dict is missing {sorted(missing)}")
        factor = positive_finite("factor", state_dict["factor"])
        max_slope = state_dict["max_slope"]
        max_slope = None if max_slope is None else positive_finite("max_slope", max_slope)
        num_steps = state_dict["num_steps"]
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 0:
            raise ValueError(
                f"num_steps in the SlopeAnnealer state_dict must be an integer >= 0, got "
                f"{num_steps!r}"
            )
        self.factor, self.max_slope, self.num_steps = factor, max_slope, num_steps
        # Absent from state_dicts written before temperatures were annealed: keep the settings.
        if "temperature_factor" in state_dict:
            value = state_dict["temperature_factor"]
            self.temperature_factor = (
                None if value is None else positive_finite("temperature_factor", value)
            )
        if "min_temperature" in state_dict:
            self.min_temperature = positive_finite(
                "min_temperature", state_dict["min_temperature"]
            )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(factor={self.factor:g}, max_slope={self.max_slope}, "
            f"layers={len(self.layers)}, num_steps={self.num_steps})"
        )

