"""Exact bias and variance of each estimator, on networks small enough to enumerate.

A network of stochastic binary units, one or two layers of them (n units in all, n <= 12),
maps K fixed inputs to a scalar through a linear read-out; the loss is the squared error to
fixed targets, averaged over the inputs. The gradient of the *expected* loss with respect to
every parameter is computed exactly, by autograd through the sum over all 2^n outcomes of the
units. Each estimator's gradient is then drawn many times through the library's own layers,
and compared with it:

* ``cosine``: the cosine similarity of the estimator's mean gradient to the exact one (1 is the
  right direction);
* ``rel_bias``: |mean - exact| / |exact|, with its sampling error (``rel_bias_se``), so a value
  within about two of those is indistinguishable from 0 at this many samples;
* ``rel_variance``: the variance of a single-sample gradient, summed over parameters, over
  |exact|^2.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch import nn

import binary_neurons as bn

INPUTS, FEATURES = 4, 6


@dataclass(frozen=True)
class Estimator:
    """One estimator setting of the benchmark: what the layers are built with."""

    label: str
    estimator: object
    slope: float = 1.0


ESTIMATORS = (
    Estimator("identity", "identity"),
    Estimator("sigmoid s=1", "sigmoid", 1.0),
    Estimator("sigmoid s=3", "sigmoid", 3.0),
    Estimator("clipped c=1", bn.ClippedStraightThrough(1.0)),
    Estimator("gumbel tau=0.1", bn.GumbelStraightThrough(0.1)),
    Estimator("gumbel tau=0.5", bn.GumbelStraightThrough(0.5)),
    Estimator("gumbel tau=1", bn.GumbelStraightThrough(1.0)),
    Estimator("reinforce, no baseline", bn.Reinforce(baseline="none")),
    Estimator("reinforce, baseline", bn.Reinforce(baseline="variance")),
)

# (units of layer 1, units of layer 2 or 0)
SHAPES = ((2, 0), (4, 0), (8, 0), (12, 0), (2, 2), (4, 4), (6, 6))


class Network(nn.Module):
    """x -> [Linear -> stochastic binary] x 1 or 2 -> Linear -> scalar."""

    def __init__(self, shape: tuple[int, int], setting: Estimator, seed: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        widths = [FEATURES, *(n for n in shape if n)]
        self.linears = nn.ModuleList(nn.Linear(i, o).double() for i, o in zip(widths, widths[1:]))
        self.neurons = nn.ModuleList(
            bn.StochasticBinary(estimator=setting.estimator, slope=setting.slope)
            for _ in self.linears
        )
        self.out = nn.Linear(widths[-1], 1).double()
        with torch.no_grad():  # the same weights for every estimator at a given seed
            for param in self.parameters():
                param.copy_(torch.randn(param.shape, generator=generator, dtype=torch.float64))
        self.slope = setting.slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for linear, neuron in zip(self.linears, self.neurons):
            x = neuron(linear(x))
        return self.out(x).squeeze(-1)

    def expected_loss(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """E_y[mean_k (o_k - t_k)^2], summed over every outcome of every unit."""
        first = self.linears[0].out_features
        outcomes1 = _outcomes(first)  # (2^n1, n1)
        p1 = torch.sigmoid(self.slope * self.linears[0](x))  # (K, n1)
        weight1 = _probability(p1[:, None, :], outcomes1[None])  # (K, 2^n1)
        if len(self.linears) == 1:
            out = self.out(outcomes1).squeeze(-1)  # (2^n1,)
            losses = (out[None, :] - target[:, None]).square()
            return (weight1 * losses).sum(1).mean()
        second = self.linears[1].out_features
        outcomes2 = _outcomes(second)  # (2^n2, n2)
        p2 = torch.sigmoid(self.slope * self.linears[1](outcomes1))  # (2^n1, n2)
        weight2 = _probability(p2[:, None, :], outcomes2[None])  # (2^n1, 2^n2)
        out = self.out(outcomes2).squeeze(-1)  # (2^n2,)
        losses = (out[None, None, :] - target[:, None, None]).square()  # (K, 1, 2^n2)
        return (weight1[:, :, None] * weight2[None] * losses).sum((1, 2)).mean()


def _outcomes(n: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product((0.0, 1.0), repeat=n)), dtype=torch.float64)


def _probability(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (p * y + (1 - p) * (1 - y)).prod(-1)


def _problem(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(10_000 + seed)
    x = torch.randn(INPUTS, FEATURES, generator=generator, dtype=torch.float64)
    target = torch.randn(INPUTS, generator=generator, dtype=torch.float64) * 2
    return x, target


def _flat_grad(model: nn.Module) -> torch.Tensor:
    return torch.cat([param.grad.reshape(-1) for param in model.parameters()])


def measure(shape: tuple[int, int], setting: Estimator, batches: int, copies: int,
            seed: int = 0) -> dict:
    """One estimator on one network: the exact gradient and ``batches`` estimates, each the mean
    of ``copies`` independent samples per input."""
    x, target = _problem(seed)
    model = Network(shape, setting, seed)
    model.zero_grad()
    model.expected_loss(x, target).backward()
    exact = _flat_grad(model)
    rows, row_targets = x.repeat_interleave(copies, 0), target.repeat_interleave(copies)
    reinforce = isinstance(setting.estimator, bn.Reinforce)
    torch.manual_seed(seed)
    warm_up = batches // 10 if reinforce else 0  # the baseline's moving averages settle
    estimates = []
    for index in range(warm_up + batches):
        model.zero_grad()
        losses = (model(rows) - row_targets).square()
        loss = losses.mean()
        if reinforce:
            loss = loss + bn.reinforce_loss(model, losses)
        loss.backward()
        if index >= warm_up:
            estimates.append(_flat_grad(model))
    draws = torch.stack(estimates)  # (batches, parameters)
    mean = draws.mean(0)
    exact_norm = float(exact.norm())
    # The variance of one sample is `copies` times that of a mean of `copies` of them.
    single_variance = float(draws.var(0).sum()) * copies
    bias_se = math.sqrt(float(draws.var(0).sum()) / batches) / exact_norm
    return {
        "shape": list(shape),
        "units": sum(shape),
        "layers": 1 + (shape[1] > 0),
        "estimator": setting.label,
        "cosine": float(torch.nn.functional.cosine_similarity(mean, exact, dim=0)),
        "rel_bias": float((mean - exact).norm()) / exact_norm,
        "rel_bias_se": bias_se,
        "rel_variance": single_variance / exact_norm**2,
        "samples": batches * copies,
    }


def run(batches: int, copies: int, shapes=SHAPES, estimators=ESTIMATORS, progress=None) -> list:
    """Every estimator on every network shape."""
    results = []
    for shape, setting in itertools.product(shapes, estimators):
        results.append(measure(shape, setting, batches, copies))
        if progress is not None:
            progress(1)
    return results


METRICS = {  # what the report tables, and how each value is printed
    "cosine": ("cosine of the mean estimate to the exact gradient (1: the right direction)",
               "{:.3f}"),
    "rel_bias": ("relative bias |mean - exact| / |exact| (0: unbiased)", "{:.2f}"),
    "rel_variance": ("relative variance of a single sample, summed over weights, / |exact|^2",
                     "{:.3g}"),
}


def table(results: list, metric: str) -> str:
    """Markdown: ``metric`` (a key of :data:`METRICS`) per estimator (rows) and network
    (columns, by their units: ``4`` is one layer of 4, ``4+4`` two)."""
    shapes = sorted({tuple(r["shape"]) for r in results}, key=lambda s: (s[1] > 0, sum(s)))
    labels = list(dict.fromkeys(r["estimator"] for r in results))
    found = {(r["estimator"], tuple(r["shape"])): r for r in results}
    form = METRICS[metric][1]
    lines = ["| estimator | " + " | ".join(_shape_name(s) for s in shapes) + " |",
             "|---|" + "---|" * len(shapes)]
    for label in labels:
        cells = ["" if (label, shape) not in found else form.format(found[label, shape][metric])
                 for shape in shapes]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _shape_name(shape) -> str:
    return f"{shape[0]}" if not shape[1] else f"{shape[0]}+{shape[1]}"
