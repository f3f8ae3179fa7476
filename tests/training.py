"""A small model with binary hidden units and a training step written the way users write one.

Shared by the tests that train whole models rather than call one layer: CUDA graphs, a GPU run
against a CPU run, several processes.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, Optional

import torch
from torch import Tensor, nn

import binary_neurons as bn

# Every built-in estimator.
ESTIMATORS = ("identity", "sigmoid", "annealed", "clipped", "gumbel", "reinforce")
INPUTS, HIDDEN, CLASSES = 32, 64, 10


def mlp(estimator: str, neuron: str = "sbn", seed: int = 0) -> nn.Sequential:
    """Three linear layers with two layers of binary hidden units between them, on the CPU,
    initialised from ``seed``."""
    layer = {"sbn": bn.StochasticBinary, "dbn": bn.DeterministicBinary}[neuron]
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(INPUTS, HIDDEN), layer(estimator=estimator),
        nn.Linear(HIDDEN, HIDDEN), layer(estimator=estimator),
        nn.Linear(HIDDEN, CLASSES),
    )


def batch(size: int, seed: int, device: str = "cpu") -> tuple[Tensor, Tensor]:
    """Inputs and class targets, the same on every device for the same seed."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(size, INPUTS, generator=generator)
    target = torch.randint(0, CLASSES, (size,), generator=generator)
    return x.to(device), target.to(device)


def has_reinforce(model: nn.Module) -> bool:
    return any(isinstance(getattr(m, "estimator", None), bn.Reinforce) for m in model.modules())


def step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    target: Tensor,
    forward: Optional[Callable[[Tensor], Tensor]] = None,
    autocast: Optional[torch.dtype] = None,
) -> Tensor:
    """One training step: gradients to None, forward (``forward``, e.g. a compiled model, or
    ``model``), the mean cross-entropy (plus the REINFORCE term where a layer needs it),
    backward, optimizer step. Returns the loss, detached."""
    optimizer.zero_grad(set_to_none=True)
    cast = nullcontext() if autocast is None else torch.autocast(x.device.type, dtype=autocast)
    with cast:
        logits = (model if forward is None else forward)(x)
    losses = nn.functional.cross_entropy(logits.float(), target, reduction="none")
    loss = losses.mean()
    objective = loss + bn.reinforce_loss(model, losses) if has_reinforce(model) else loss
    objective.backward()
    optimizer.step()
    return loss.detach()


class Codes:
    """The latest output of a model's first binary layer, kept by a forward hook. Under CUDA
    graph capture the hook runs once, and what it keeps is the captured output tensor, which
    every replay writes again."""

    def __init__(self, model: nn.Module) -> None:
        self.latest: Optional[Tensor] = None
        layer = next(m for m in model.modules() if isinstance(m, bn.BinaryNeuron))
        layer.register_forward_hook(self._keep)

    def _keep(self, module, args, output) -> None:
        self.latest = output.detach()
