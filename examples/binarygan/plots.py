"""Figures of a run: sample grids, histograms of p, loss curves (matplotlib, Agg backend)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["tile", "save_grid", "preactivation_histogram", "save_histogram", "save_loss_curves",
           "write_figures"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def tile(images: np.ndarray, ncols: int = 8, pad: int = 2, pad_value: float = 0.5) -> np.ndarray:
    """N x 28 x 28 images in [0, 1] -> one 2-D array, ``ncols`` per row, grey padding."""
    images = np.asarray(images, dtype=np.float32).reshape(len(images), *images.shape[-2:])
    n, h, w = images.shape
    nrows = -(-n // ncols)
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad), pad_value, np.float32)
    for index, image in enumerate(images):
        row, col = divmod(index, ncols)
        top, left = pad + row * (h + pad), pad + col * (w + pad)
        grid[top:top + h, left:left + w] = image
    return grid


def save_grid(path: Path, images: np.ndarray, ncols: int = 8, scale: int = 1) -> None:
    """Save images in [0, 1] as one PNG, ink (1) black on white, ``scale`` pixels per pixel."""
    import matplotlib.image

    grid = tile(images, ncols)
    if scale > 1:
        grid = np.kron(grid, np.ones((scale, scale), np.float32))
    matplotlib.image.imsave(path, 1.0 - grid, cmap="gray", vmin=0.0, vmax=1.0)


def preactivation_histogram(p, bins: int = 50) -> dict[str, Any]:
    """Histogram of preactivated outputs ``p`` over [0, 1], density-normalized, as the paper
    plots it: ``{"bins", "count", "edges", "counts", "density", "first_bin_density",
    "last_bin_density", "first_bin_fraction", "last_bin_fraction"}``. ``density`` integrates to
    1 over [0, 1]; the fractions are the shares of values in the first and last bin."""
    if isinstance(p, torch.Tensor):
        p = p.detach().cpu().double().numpy()
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    if p.size == 0:
        raise ValueError("p is empty; need at least one preactivated output")
    if not np.all(np.isfinite(p)):
        raise ValueError("p must hold finite values in [0, 1] (sigmoid outputs), found NaN or inf")
    if p.min() < 0 or p.max() > 1:
        raise ValueError(
            f"p must hold values in [0, 1] (sigmoid outputs), got range [{p.min()}, {p.max()}]")
    counts, edges = np.histogram(p, bins=bins, range=(0.0, 1.0))
    fractions = counts / p.size
    density = fractions * bins
    return {
        "bins": bins, "count": int(p.size), "edges": edges.tolist(), "counts": counts.tolist(),
        "density": density.tolist(),
        "first_bin_density": float(density[0]), "last_bin_density": float(density[-1]),
        "first_bin_fraction": float(fractions[0]), "last_bin_fraction": float(fractions[-1]),
    }


def save_histogram(path: Path, values: np.ndarray, bins: int, title: str) -> dict:
    """Histogram of the preactivated outputs p (log density, as in the paper); writes the PNG
    and ``<path>.json`` with the bin counts, and returns the counts."""
    plt = _pyplot()
    stats = preactivation_histogram(values, bins)
    fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=100)
    ax.bar(stats["edges"][:-1], stats["density"], width=1.0 / bins, align="edge",
           color="tab:blue", edgecolor="none")
    ax.set_yscale("log")
    ax.set_xlim(0, 1)
    ax.set_xlabel("preactivated output p")
    ax.set_ylabel("density (log)")
    first, last = stats["first_bin_fraction"], stats["last_bin_fraction"]
    ax.set_title(f"{title}\nfirst bin {first:.3g}, last bin {last:.3g} of values", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    Path(path).with_suffix(".json").write_text(json.dumps(stats))
    return stats


def save_loss_curves(path: Path, records: Sequence[dict]) -> None:
    """D and G losses (and the gradient penalty where logged) against generator steps."""
    plt = _pyplot()
    steps = [r["step"] for r in records]
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    for key, label in (("d_loss", "D loss (without penalty)"), ("g_loss", "G loss"),
                       ("gp", "gradient penalty")):
        values = [r.get(key) for r in records]
        if any(v is not None for v in values):
            ax.plot(steps, [np.nan if v is None else v for v in values], label=label, lw=1)
    ax.set_xlabel("generator step")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_figures(out: Path, step: int, netG: torch.nn.Module, fixed_z: torch.Tensor,
                  hist_z: torch.Tensor, seed: int, binarize: str, title: str, bins: int,
                  records: Sequence[dict]) -> None:
    """A run's figures at generator step ``step``: binary samples and p of the fixed noise
    (``samples/`` keeps every step's; ``samples.png``, ``probabilities.png`` the latest), the
    histogram of p over ``hist_z``, and the loss curves."""
    rng = torch.Generator(fixed_z.device).manual_seed(seed)  # the same u in every grid
    samples = netG.binary_samples(fixed_z, rng, binarize).cpu().numpy()
    with torch.no_grad():
        was_training = netG.training
        netG.eval()
        probs = netG.probability(fixed_z).cpu().numpy()
        p = netG.probability(hist_z).cpu().numpy()
        netG.train(was_training)
    grids = Path(out) / "samples"
    grids.mkdir(exist_ok=True)
    save_grid(grids / f"binary_{step:06d}.png", samples)
    save_grid(grids / f"probability_{step:06d}.png", probs)
    save_grid(out / "samples.png", samples, scale=2)
    save_grid(out / "probabilities.png", probs, scale=2)
    save_histogram(out / "histogram.png", p, bins, f"{title}, step {step}: p over {len(p)} samples")
    if records:
        save_loss_curves(out / "losses.png", records)
