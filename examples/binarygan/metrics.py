r"""Sample-quality metrics for binary 28x28 images.

The BinaryGAN paper shows figures only; these numbers make runs comparable. Every metric is
computed on binary images (values in {0, 1}) against real binarized digits:

- a small CNN digit classifier, trained on real binarized training digits (cached per dataset,
  keyed by a hash of the training data), gives

  - the *Frechet distance* between real and generated samples in its penultimate-layer feature
    space (the FID recipe of Heusel et al. 2017 with a digit classifier in place of Inception),
  - *class coverage*: the histogram of predicted classes, its entropy (nats, at most
    :math:`\ln 10 \approx 2.303`), and :math:`\mathrm{KL}(p_\text{gen} \,\|\, p_\text{real})` to the
    real digits' predicted-class distribution,
  - the *mean confidence* (mean of the top softmax probability);

- memorisation: the *exact-copy rate* (samples identical to a training image) and the
  *nearest-neighbour Hamming distance* to the training set (binary matmul trick, chunked);
- an artifact measure: the *isolated-pixel rate*, the fraction of on-pixels that have no
  on-pixel among their 8 neighbours ("salt" noise; near 0 for real digits, :math:`(1-d)^8` for
  Bernoulli noise of density :math:`d`);
- *ink density*, the fraction of on-pixels;
- for a run, the histogram of the preactivated outputs :math:`p` (50 bins over [0, 1],
  density-normalised) with its first and last bin, as the paper annotates them
  (:func:`.plots.preactivation_histogram`).

This module holds the metrics themselves; the classifier, the real data they are compared with
and the entry point :func:`.reference.evaluate_samples` are in :mod:`.reference`.

Images may be given as numpy arrays or torch tensors of shape ``(N, 28, 28)``,
``(N, 1, 28, 28)`` or ``(N, 784)``, of a boolean, integer or floating dtype, with every value 0
or 1 (binarize raw intensities first, e.g. with ``data.binarize``).
"""

from __future__ import annotations

import math
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor

__all__ = ["check_binary_images", "check_labels", "class_coverage", "frechet_distance",
           "ink_density", "isolated_pixel_rate", "nearest_neighbour_hamming"]

ArrayLike = Union[np.ndarray, Tensor]

IMAGE_SHAPE = (28, 28)
NUM_PIXELS = 28 * 28
NUM_CLASSES = 10


# ----------------------------------------------------------------------------------------------
# Input validation
# ----------------------------------------------------------------------------------------------


def check_binary_images(images: ArrayLike, name: str = "images") -> np.ndarray:
    """Validate binary 28x28 images and return them as a ``uint8`` array ``(N, 28, 28)``.

    Accepted: a numpy array or torch tensor of shape ``(N, 28, 28)``, ``(N, 1, 28, 28)`` or
    ``(N, 784)`` with ``N >= 1``, of a boolean, integer or floating dtype, every value 0 or 1.
    The input is not modified.

    Raises:
        TypeError: if ``images`` is neither a numpy array nor a torch tensor.
        ValueError: for a wrong shape, a non-numeric dtype, or values other than 0 and 1;
            the message names what was received and what is accepted.
    """
    if isinstance(images, Tensor):
        images = images.detach().cpu()
        if images.dtype == torch.bfloat16:
            images = images.float()
        images = images.numpy()
    elif not isinstance(images, np.ndarray):
        raise TypeError(
            f"{name} must be a numpy array or a torch tensor, got {type(images).__name__}"
        )
    if images.dtype.kind not in "biuf":
        raise ValueError(
            f"{name} has dtype {images.dtype}; accepted: a boolean, integer or floating dtype "
            "(uint8 is the usual) with values 0 and 1"
        )
    shape = images.shape
    if len(shape) == 4 and shape[1] == 1:
        images = images.reshape(shape[0], *IMAGE_SHAPE) if shape[2:] == IMAGE_SHAPE else images
    elif len(shape) == 2 and shape[1] == NUM_PIXELS:
        images = images.reshape(shape[0], *IMAGE_SHAPE)
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(
            f"{name} has shape {tuple(shape)}; accepted: (N, 28, 28), (N, 1, 28, 28) or (N, 784)"
        )
    if images.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(shape)}); need at least one image")
    binary = images == 1
    if not np.all(binary | (images == 0)):
        bad = images[~(binary | (images == 0))]
        raise ValueError(
            f"{name} is not binary: found {bad.size} value(s) other than 0 and 1 "
            f"(e.g. {bad.flat[0].item()!r}); accepted: values 0 and 1 only (binarize raw "
            "intensities first, e.g. with data.binarize, or threshold probabilities at 0.5)"
        )
    return binary.astype(np.uint8)


def check_labels(labels: ArrayLike, n: int, name: str) -> np.ndarray:
    if isinstance(labels, Tensor):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    if labels.shape != (n,) or labels.dtype.kind not in "iu":
        raise ValueError(
            f"{name} has shape {labels.shape} and dtype {labels.dtype}; accepted: integer "
            f"labels of shape ({n},), one per image"
        )
    if n and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(
            f"{name} must lie in 0-{NUM_CLASSES - 1}, got {labels.min()}-{labels.max()}"
        )
    return labels.astype(np.int64)


# ----------------------------------------------------------------------------------------------
# Pixel statistics
# ----------------------------------------------------------------------------------------------


def ink_density(images: ArrayLike) -> dict[str, float]:
    """Fraction of on-pixels: ``{"mean": ..., "std": ...}`` over images."""
    images = check_binary_images(images)
    per_image = images.reshape(len(images), -1).mean(axis=1)
    return {"mean": float(per_image.mean()), "std": float(per_image.std())}


def isolated_pixel_rate(images: ArrayLike) -> float:
    """Fraction of on-pixels with no on-pixel among their 8 neighbours (0 if no pixel is on).

    Pixels beyond the border count as off. Real digits are strokes, so this is near 0 for them;
    for independent Bernoulli noise of density ``d`` it is ``(1 - d)**8`` away from the border.
    """
    images = check_binary_images(images)
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1))).astype(np.int16)
    neighbours = np.zeros(images.shape, dtype=np.int16)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if dy != 1 or dx != 1:
                neighbours += padded[:, dy : dy + 28, dx : dx + 28]
    on = images.astype(bool)
    total_on = int(on.sum())
    if total_on == 0:
        return 0.0
    return float((on & (neighbours == 0)).sum() / total_on)


def nearest_neighbour_hamming(
    samples: ArrayLike, training: ArrayLike, chunk_size: int = 512
) -> np.ndarray:
    """Hamming distance from each sample to its nearest training image, ``int64 (N,)``.

    For binary vectors :math:`\\lVert a - b \\rVert_0 = |a| + |b| - 2\\, a \\cdot b`, so all
    distances of a chunk of samples come from one matrix product (exact in float32: every
    entry is an integer <= 784). Memory is about ``chunk_size * len(training) * 4`` bytes.
    A distance of 0 means the sample is an exact copy of a training image.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    samples = check_binary_images(samples, "samples").reshape(-1, NUM_PIXELS)
    training = check_binary_images(training, "training").reshape(-1, NUM_PIXELS)
    train_t = torch.from_numpy(training).to(torch.float32)
    train_norms = train_t.sum(dim=1)
    distances = np.empty(len(samples), dtype=np.int64)
    for start in range(0, len(samples), chunk_size):
        chunk = torch.from_numpy(samples[start : start + chunk_size]).to(torch.float32)
        dots = chunk @ train_t.T
        dist = chunk.sum(dim=1, keepdim=True) + train_norms - 2 * dots
        distances[start : start + len(chunk)] = dist.min(dim=1).values.round().to(torch.int64)
    return distances


# ----------------------------------------------------------------------------------------------
# Distribution statistics
# ----------------------------------------------------------------------------------------------


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    r"""Frechet distance between Gaussians fitted to two feature sets ``(N, d)``, ``(M, d)``.

    .. math::
        \lVert \mu_a - \mu_b \rVert^2 + \operatorname{tr}\Sigma_a + \operatorname{tr}\Sigma_b
        - 2 \operatorname{tr}\bigl(\Sigma_a^{1/2} \Sigma_b \Sigma_a^{1/2}\bigr)^{1/2}

    computed in float64 with symmetric eigendecompositions (no complex ``sqrtm``; exact for the
    rank-deficient covariances that ReLU features give).
    """
    a = np.asarray(features_a, dtype=np.float64)
    b = np.asarray(features_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise ValueError(
            f"features must be two 2-D arrays (N, d) and (M, d) with N, M >= 2, got shapes "
            f"{a.shape} and {b.shape}"
        )
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    return _frechet_from_stats(a.mean(0), cov_a, b.mean(0), cov_b)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    eigvals, eigvecs = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigvecs * np.sqrt(np.clip(eigvals, 0, None))) @ eigvecs.T


def _frechet_from_stats(mu_a, cov_a, mu_b, cov_b) -> float:
    root_a = _psd_sqrt(np.atleast_2d(cov_a))
    middle = root_a @ np.atleast_2d(cov_b) @ root_a
    eigvals = np.linalg.eigvalsh((middle + middle.T) / 2)
    cross = np.sqrt(np.clip(eigvals, 0, None)).sum()
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)
    return max(value, 0.0)


def class_coverage(
    predicted: ArrayLike, real_distribution: Optional[ArrayLike] = None, eps: float = 1e-12
) -> dict[str, Any]:
    r"""Histogram of predicted classes, its entropy and KL divergence to a real distribution.

    Args:
        predicted: predicted class indices ``(N,)`` in 0-9.
        real_distribution: the real data's class frequencies ``(10,)`` (summing to 1), or
            ``None`` to skip the KL term.

    Returns:
        ``{"histogram": [10 fractions], "entropy": H, "entropy_max": ln 10, "kl_to_real": KL}``
        with :math:`H = -\sum_k q_k \ln q_k` and
        :math:`\mathrm{KL}(q \,\|\, p_\text{real}) = \sum_k q_k \ln(q_k / p_{\text{real},k})`
        in nats (finite as long as the real data covers every class). A single-class set has
        entropy 0 and KL :math:`\ln(1/p_{\text{real},k}) \approx 2.3`.
    """
    predicted = np.asarray(predicted).astype(np.int64).reshape(-1)
    if len(predicted) == 0 or predicted.min() < 0 or predicted.max() >= NUM_CLASSES:
        raise ValueError("predicted must hold at least one class index in 0-9")
    hist = np.bincount(predicted, minlength=NUM_CLASSES) / len(predicted)
    nz = hist > 0
    result: dict[str, Any] = {
        "histogram": hist.tolist(),
        "entropy": float(-(hist[nz] * np.log(hist[nz])).sum()),
        "entropy_max": math.log(NUM_CLASSES),
    }
    if real_distribution is not None:
        real = np.asarray(real_distribution, dtype=np.float64).reshape(-1)
        if real.shape != (NUM_CLASSES,) or np.any(real < 0) or not np.isclose(real.sum(), 1.0):
            raise ValueError(
                f"real_distribution must be {NUM_CLASSES} non-negative frequencies summing to 1, "
                f"got {real.tolist()}"
            )
        result["kl_to_real"] = float(
            (hist[nz] * (np.log(hist[nz]) - np.log(np.maximum(real[nz], eps)))).sum()
        )
    return result
