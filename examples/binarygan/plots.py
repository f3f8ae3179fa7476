"""Figures of a BinaryGAN run: sample grids, histograms of p, loss curves (matplotlib Agg)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["tile", "save_grid", "histogram_counts", "save_histogram", "save_loss_curves"]


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


def histogram_counts(values: np.ndarray, bins: int) -> dict:
    """Bin counts of p over [0, 1] with the density and fraction of each bin."""
    counts, edges = np.histogram(np.asarray(values).ravel(), bins=bins, range=(0.0, 1.0))
    total = max(int(counts.sum()), 1)
    width = 1.0 / bins
    return {
        "edges": edges.tolist(),
        "counts": counts.tolist(),
        "fraction": (counts / total).tolist(),
        "density": (counts / (total * width)).tolist(),
        "num_values": int(counts.sum()),
    }


def save_histogram(path: Path, values: np.ndarray, bins: int, title: str) -> dict:
    """Histogram of the preactivated outputs p (log density, as in the paper); writes the PNG
    and ``<path>.json`` with the bin counts, and returns the counts."""
    plt = _pyplot()
    stats = histogram_counts(values, bins)
    fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=100)
    ax.bar(stats["edges"][:-1], stats["density"], width=1.0 / bins, align="edge",
           color="tab:blue", edgecolor="none")
    ax.set_yscale("log")
    ax.set_xlim(0, 1)
    ax.set_xlabel("preactivated output p")
    ax.set_ylabel("density (log)")
    first, last = stats["fraction"][0], stats["fraction"][-1]
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
