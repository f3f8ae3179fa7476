r"""What the binary layers of a model do while it trains: an opt-in collector.

:class:`Diagnostics` registers hooks on a model's binary layers only inside
:meth:`Diagnostics.record` (and while :meth:`Diagnostics.summary` runs a probe), so a model
it watches runs exactly as before, with no hooks and no graph breaks, the rest of the time.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Optional

import torch
from torch import Tensor, nn

from .modules import BinaryNeuron

__all__ = ["Diagnostics"]

# Where the sigmoid estimators pass almost no gradient: p outside [0.01, 0.99].
SATURATION = 0.01


class _LayerStats:
    """Running sums for one layer since the last summary."""

    def __init__(self) -> None:
        self.batches = 0
        self.elements = 0
        self.fired = 0.0
        self.saturated = 0.0
        self.entropy = 0.0
        self.unit_fired: Optional[Tensor] = None  # per unit: examples that fired
        self.unit_seen = 0  # examples seen per unit
        self.grad_abs = 0.0
        self.grad_elements = 0

    @torch.no_grad()
    def add_forward(self, p: Tensor, fired: Tensor) -> None:
        p64, fired64 = p.double(), fired.double()
        self.batches += 1
        self.elements += p.numel()
        self.fired += float(fired64.sum())
        self.saturated += float(((p64 < SATURATION) | (p64 > 1 - SATURATION)).sum())
        q = p64.clamp(1e-12, 1 - 1e-12)
        self.entropy += float(-(q * q.log2() + (1 - q) * (1 - q).log2()).sum())
        per_unit = fired64.reshape(-1, *p.shape[1:]).sum(0) if p.dim() else fired64
        if self.unit_fired is None or self.unit_fired.shape != per_unit.shape:
            self.unit_fired, self.unit_seen = torch.zeros_like(per_unit), 0
        self.unit_fired += per_unit
        self.unit_seen += p.shape[0] if p.dim() else 1

    @torch.no_grad()
    def add_grad(self, grad: Tensor) -> None:
        self.grad_abs += float(grad.detach().double().abs().sum())
        self.grad_elements += grad.numel()


class Diagnostics:
    r"""Per-layer statistics of a model's binary layers, as a flat ``dict`` of floats.

    Inside ``with diagnostics.record():`` every forward pass of each
    :class:`~binary_neurons.DeterministicBinary` and :class:`~binary_neurons.StochasticBinary`
    in ``model`` is measured, and so is the backward pass of those forward passes (whenever it
    runs);
    :meth:`summary` returns what was measured since the previous summary and starts afresh. For
    a layer named ``name`` (as in ``model.named_modules()``), the keys are:

    - ``name/firing_rate``: the share of outputs that fired (1, or +1 when ``signed``; any
      output > 0, so a layer returning probabilities in evaluation mode counts as firing);
    - ``name/saturation``: the share of probabilities :math:`p = \sigma(s a)` outside
      [0.01, 0.99], where the sigmoid estimators pass almost no gradient;
    - ``name/entropy``: the mean binary entropy of :math:`p`, in bits (1 at p = 0.5);
    - ``name/never_fired``, ``name/always_fired``: how many units (positions after the batch
      dimension) never, or always, fired over the recorded examples;
    - ``name/grad_abs``: the mean :math:`|\partial L / \partial a|` reaching the
      pre-activation (NaN if no backward pass of a recorded forward pass ran);
    - ``name/flips``: with a ``probe``, the share of the layer's decisions :math:`\mathbb{1}[a > 0]`
      on the probe batch that changed since the previous summary's probe (NaN the first time).

    Args:
        model: the model whose binary layers to watch.

    Raises:
        ValueError: if ``model`` has no binary layer.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> import binary_neurons as bn
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = nn.Sequential(nn.Linear(4, 8), bn.StochasticBinary(), nn.Linear(8, 1))
        >>> diagnostics = bn.Diagnostics(model)
        >>> probe = torch.randn(16, 4)
        >>> with diagnostics.record():
        ...     model(torch.randn(32, 4)).sum().backward()
        >>> stats = diagnostics.summary(probe=lambda: model(probe))
        >>> sorted(stats)  # doctest: +NORMALIZE_WHITESPACE
        ['1/always_fired', '1/entropy', '1/firing_rate', '1/flips', '1/grad_abs',
         '1/never_fired', '1/saturation']
        >>> 0 < stats["1/firing_rate"] < 1
        True
    """

    def __init__(self, model: nn.Module) -> None:
        self.layers = {
            name or type(model).__name__: module
            for name, module in model.named_modules()
            if isinstance(module, BinaryNeuron)
        }
        if not self.layers:
            raise ValueError("model has no binary layer (DeterministicBinary or StochasticBinary)")
        self._stats = {name: _LayerStats() for name in self.layers}
        self._decisions: dict[str, Tensor] = {}

    @contextlib.contextmanager
    def record(self) -> Iterator["Diagnostics"]:
        """Measure the forward (and backward) passes run inside the block."""
        handles = [
            layer.register_forward_hook(self._forward_hook(name))
            for name, layer in self.layers.items()
        ]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _forward_hook(self, name: str) -> Callable:
        # The running sums are looked up when a hook fires: summary() replaces them.
        def hook(layer: BinaryNeuron, args: tuple, output: Tensor) -> None:
            (a,) = args[:1]
            with torch.no_grad():
                p = layer.probability(a.detach())
                fired = output.detach() > 0
            self._stats[name].add_forward(p, fired)
            if a.requires_grad and torch.is_grad_enabled():
                a.register_hook(lambda grad: self._stats[name].add_grad(grad))

        return hook

    @torch.no_grad()
    def _probe_decisions(self, probe: Callable[[], Any]) -> dict[str, Tensor]:
        decisions: dict[str, Tensor] = {}

        def hook_for(name: str) -> Callable:
            def hook(layer: BinaryNeuron, args: tuple, output: Tensor) -> None:
                decisions[name] = args[0].detach() > 0

            return hook

        handles = [
            layer.register_forward_hook(hook_for(name)) for name, layer in self.layers.items()
        ]
        try:
            probe()
        finally:
            for handle in handles:
                handle.remove()
        return decisions

    def summary(self, probe: Optional[Callable[[], Any]] = None) -> dict[str, float]:
        """The statistics since the previous summary (NaN for a layer that did not run), and
        start afresh.

        Args:
            probe: a function that runs the model on a fixed batch (say
                ``lambda: model(probe_batch)``), called without gradients; each layer's
                decisions on it are compared with the previous summary's.
        """
        decisions = self._probe_decisions(probe) if probe is not None else {}
        out: dict[str, float] = {}
        nan = float("nan")
        for name, stats in self._stats.items():
            seen = stats.elements
            out[f"{name}/firing_rate"] = stats.fired / seen if seen else nan
            out[f"{name}/saturation"] = stats.saturated / seen if seen else nan
            out[f"{name}/entropy"] = stats.entropy / seen if seen else nan
            fired = stats.unit_fired
            out[f"{name}/never_fired"] = float((fired == 0).sum()) if seen else nan
            out[f"{name}/always_fired"] = (
                float((fired == stats.unit_seen).sum()) if seen else nan
            )
            out[f"{name}/grad_abs"] = (
                stats.grad_abs / stats.grad_elements if stats.grad_elements else nan
            )
            if probe is not None:
                now, before = decisions.get(name), self._decisions.get(name)
                same = now is not None and before is not None and now.shape == before.shape
                out[f"{name}/flips"] = float((now != before).double().mean()) if same else nan
                if now is not None:
                    self._decisions[name] = now
            self._stats[name] = _LayerStats()
        return out
