"""Draw the neurons' forward functions and the estimators' pseudo-gradients.

Run by ``conf.py`` at every build (the figures are not committed). The curves come from the
library itself: forward values from the layers, gradients from autograd through them.

    python docs/scripts/estimator_figures.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import binary_neurons as bn  # noqa: E402
from binary_neurons.functional import deterministic_binary, stochastic_binary  # noqa: E402

SLOPES = (1.0, 1.1**9, 1.1**19)  # epochs 1, 10 and 20 of BinaryGAN's annealing


def _gradient(estimator, slope: float, a: torch.Tensor) -> torch.Tensor:
    a = a.clone().requires_grad_()
    deterministic_binary(a, estimator=estimator, slope=slope).sum().backward()
    return a.grad


def forward_figure(path: Path) -> None:
    a = torch.linspace(-4, 4, 801)
    draws = 400
    generator = torch.Generator().manual_seed(0)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3), sharey=True, constrained_layout=True)
    axes[0].plot(a, deterministic_binary(a), color="C0")
    axes[0].set_title("DeterministicBinary: $y = 1[a > 0]$")
    for slope, color in zip(SLOPES, ("C0", "C1", "C2")):
        batch = a.expand(draws, -1)
        mean = stochastic_binary(batch, slope=slope, generator=generator).mean(0)
        axes[1].plot(a, mean, color=color, alpha=0.6, lw=0.8)
        axes[1].plot(a, torch.sigmoid(slope * a), color=color, label=f"$s = {slope:.2f}$")
    axes[1].set_title(r"StochasticBinary: 400-sample mean, $\sigma(s a)$")
    axes[1].legend(frameon=False)
    for ax in axes:
        ax.set_xlabel("pre-activation $a$")
    axes[0].set_ylabel("output")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def estimator_figure(path: Path) -> None:
    a = torch.linspace(-4, 4, 801)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3), sharey=True, constrained_layout=True)
    axes[0].plot(a, _gradient("identity", 1.0, a))
    axes[0].set_title('"identity": $g$')
    for slope in SLOPES:
        axes[1].plot(a, _gradient("sigmoid", slope, a), label=f"$s = {slope:.2f}$")
    axes[1].set_title(r'"sigmoid" / "annealed": $g\,s\,p(1-p)$')
    axes[1].legend(frameon=False)
    for clip in (0.5, 1.0, 2.0):
        axes[2].plot(a, _gradient(bn.ClippedStraightThrough(clip), 1.0, a), label=f"$c = {clip}$")
    axes[2].set_title(r'"clipped": $g\,1[|a| \leq c]$')
    axes[2].legend(frameon=False)
    for ax in axes:
        ax.set_xlabel("pre-activation $a$")
    axes[0].set_ylabel(r"$\partial L / \partial a$ for $g = 1$")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _gumbel_gradients(a: torch.Tensor, tau: float, draws: int) -> torch.Tensor:
    """Single-sample Gumbel pseudo-gradients of y for each a: (draws, len(a))."""
    x = a.expand(draws, -1).clone().requires_grad_()
    generator = torch.Generator().manual_seed(1)
    estimator = bn.GumbelStraightThrough(tau)
    stochastic_binary(x, estimator=estimator, generator=generator).sum().backward()
    return x.grad


def _reinforce_gradients(a: torch.Tensor, draws: int, baseline) -> torch.Tensor:
    """Single-sample REINFORCE estimates of dE[y]/da (the loss is y itself): (draws, len(a))."""
    torch.manual_seed(2)
    layer = bn.StochasticBinary(estimator=bn.Reinforce(baseline="none"))
    found = []
    for value in a:
        x = value.expand(draws, 1).clone().requires_grad_()
        y = layer(x)
        given = None if baseline is None else baseline(torch.sigmoid(value)).expand(draws)
        bn.reinforce_loss(layer, y[:, 0], baseline=given, reduction="sum").backward()
        found.append(x.grad[:, 0])
    return torch.stack(found, dim=1)


def stochastic_estimator_figure(path: Path) -> None:
    a = torch.linspace(-4, 4, 161)
    draws = 4000
    exact = torch.sigmoid(a) * torch.sigmoid(-a)  # dE[y]/da = p (1 - p) at s = 1
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), constrained_layout=True)
    for tau, color in zip((0.25, 0.5, 1.0, 2.0), ("C0", "C1", "C2", "C3")):
        gradients = _gumbel_gradients(a, tau, draws)
        axes[0].plot(a, gradients.mean(0), color=color, label=rf"$\tau = {tau}$")
        if tau in (0.5, 1.0):
            axes[1].plot(a, gradients.std(0), color=color, label=rf'"gumbel", $\tau = {tau}$')
    axes[0].plot(a, exact, "k--", lw=1, label=r"exact $p(1-p)$")
    axes[0].set_title(r'"gumbel": mean of $g\,(s/\tau)\,q(1-q)$ over the noise')
    axes[0].legend(frameon=False, fontsize=8)
    plain = _reinforce_gradients(a, draws, None)
    best = _reinforce_gradients(a, draws, lambda p: 1 - p)
    axes[1].plot(a, plain.std(0), color="C4", label='"reinforce", no baseline')
    axes[1].plot(a, best.std(0), color="C5", label=r'"reinforce", $b = 1 - p$')
    axes[1].set_title(r"spread of one-sample estimates of $d\,\mathbb{E}[y]/da$")
    axes[1].legend(frameon=False, fontsize=8)
    for ax in axes:
        ax.set_xlabel("pre-activation $a$ (slope 1)")
    axes[0].set_ylabel("mean")
    axes[1].set_ylabel("standard deviation")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    forward_figure(out / "forward.png")
    estimator_figure(out / "estimators.png")
    stochastic_estimator_figure(out / "stochastic_estimators.png")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/generated/figures")
