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
  density-normalised) with its first and last bin, as the paper annotates them.

The entry point is :func:`evaluate_samples`, which returns a JSON-serialisable ``dict``::

    reference = make_reference(train_images, train_labels, heldout_images, heldout_labels)
    # or, for one dataset split by a seeded permutation:
    reference = reference_from_dataset(images, labels, heldout=0.2)
    metrics = evaluate_samples(samples, reference)
    json.dump(metrics, open("metrics.json", "w"), indent=2)

Images may be given as numpy arrays or torch tensors of shape ``(N, 28, 28)``,
``(N, 1, 28, 28)`` or ``(N, 784)``, of a boolean, integer or floating dtype, with every value 0
or 1 (binarize raw intensities first, e.g. with ``data.binarize``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "DigitClassifier",
    "Reference",
    "check_binary_images",
    "class_coverage",
    "classifier_outputs",
    "default_cache_dir",
    "evaluate_samples",
    "frechet_distance",
    "ink_density",
    "isolated_pixel_rate",
    "load_or_train_classifier",
    "make_reference",
    "nearest_neighbour_hamming",
    "preactivation_histogram",
    "reference_from_dataset",
    "train_classifier",
]

ArrayLike = Union[np.ndarray, Tensor]
PathLike = Union[str, Path]

IMAGE_SHAPE = (28, 28)
NUM_PIXELS = 28 * 28
NUM_CLASSES = 10
#: Bump when the classifier's architecture or training recipe changes: it is part of the cache key.
CLASSIFIER_VERSION = 1


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
            f"(e.g. {bad.flat[0].item()!r}); accepted: values 0 and 1 only (binarize raw intensities "
            "first, e.g. with data.binarize, or threshold probabilities at 0.5)"
        )
    return binary.astype(np.uint8)


def _check_labels(labels: ArrayLike, n: int, name: str) -> np.ndarray:
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


def preactivation_histogram(p: ArrayLike, bins: int = 50) -> dict[str, Any]:
    """Density-normalised histogram of preactivated outputs ``p`` over [0, 1], as in the paper.

    Returns ``{"bins", "edges", "density", "first_bin_density", "last_bin_density",
    "first_bin_fraction", "last_bin_fraction", "count"}``. ``density`` integrates to 1 over
    [0, 1] (each bin's fraction of values times ``bins``); the fractions are the plain shares
    of values in the first and last bin. SPEC section 2 lists the paper's annotated first/last
    values (e.g. SBN 0.688 / 0.00624).
    """
    if isinstance(p, Tensor):
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
            f"p must hold values in [0, 1] (sigmoid outputs), got range [{p.min()}, {p.max()}]"
        )
    counts, edges = np.histogram(p, bins=bins, range=(0.0, 1.0))
    fractions = counts / p.size
    density = fractions * bins
    return {
        "bins": bins,
        "count": int(p.size),
        "edges": edges.tolist(),
        "density": density.tolist(),
        "first_bin_density": float(density[0]),
        "last_bin_density": float(density[-1]),
        "first_bin_fraction": float(fractions[0]),
        "last_bin_fraction": float(fractions[-1]),
    }


# ----------------------------------------------------------------------------------------------
# The digit classifier
# ----------------------------------------------------------------------------------------------


class DigitClassifier(nn.Module):
    """A small CNN for binary 28x28 digits; its 64-unit penultimate layer is the feature space.

    conv 16 k3 (28x28) -> ReLU -> maxpool 2 (14x14) -> conv 32 k3 (14x14) -> ReLU -> maxpool 2
    (7x7) -> flatten 1568 -> dense 64 -> ReLU (features) -> dense 10 (logits).
    """

    feature_dim = 64

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),  # 16 x 28 x 28
            nn.ReLU(),
            nn.MaxPool2d(2),  # 16 x 14 x 14
            nn.Conv2d(16, 32, 3, padding=1),  # 32 x 14 x 14
            nn.ReLU(),
            nn.MaxPool2d(2),  # 32 x 7 x 7
            nn.Flatten(),  # 1568
            nn.Linear(32 * 7 * 7, self.feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(self.feature_dim, NUM_CLASSES)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


def _as_input(images_uint8: np.ndarray) -> Tensor:
    return torch.from_numpy(images_uint8).to(torch.float32).unsqueeze(1)


def train_classifier(
    images: ArrayLike,
    labels: ArrayLike,
    *,
    epochs: int = 3,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
) -> DigitClassifier:
    """Train a :class:`DigitClassifier` on binary images; reproducible for a given ``seed``.

    The seed fixes both the initial weights and the minibatch order (the global RNG is left
    untouched). Adam, cross-entropy, the last partial batch kept.
    """
    images = check_binary_images(images)
    labels = _check_labels(labels, len(images), "labels")
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DigitClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    x_all, y_all = _as_input(images), torch.from_numpy(labels)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), batch_size):
            index = order[start : start + batch_size]
            loss = F.cross_entropy(model(x_all[index]), y_all[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


@torch.no_grad()
def classifier_outputs(
    model: DigitClassifier, images: ArrayLike, batch_size: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """``(features (N, 64) float64, probabilities (N, 10) float64)`` for binary images."""
    images = check_binary_images(images)
    was_training = model.training
    model.eval()
    features, probs = [], []
    for start in range(0, len(images), batch_size):
        feats = model.features(_as_input(images[start : start + batch_size]))
        features.append(feats.double().numpy())
        probs.append(torch.softmax(model.head(feats), dim=1).double().numpy())
    model.train(was_training)
    return np.concatenate(features), np.concatenate(probs)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/binary_neurons`` (``~/.cache/binary_neurons`` if unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "binary_neurons"


def _cache_key(images: np.ndarray, labels: np.ndarray, config: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({**config, "version": CLASSIFIER_VERSION}, sort_keys=True).encode())
    digest.update(str(images.shape).encode())
    digest.update(np.ascontiguousarray(images).tobytes())
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return digest.hexdigest()


def _atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def load_or_train_classifier(
    images: ArrayLike,
    labels: ArrayLike,
    *,
    cache_dir: Optional[PathLike] = None,
    use_cache: bool = True,
    epochs: int = 3,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
) -> tuple[DigitClassifier, dict[str, Any]]:
    """Load the classifier for this training set from the cache, or train and cache it.

    The cache file is ``<cache_dir>/digit_classifier-<key>.pt``, where ``key`` hashes the
    images, the labels, the training settings and :data:`CLASSIFIER_VERSION`; it is written
    atomically (temporary file + rename), so concurrent runs never see a partial file. An
    unreadable cache file is retrained over with a warning.

    Returns:
        ``(model, info)``; ``info`` has ``cache_key``, ``cache_file`` (or ``None``),
        ``from_cache`` and ``train_seconds`` (0 when loaded).
    """
    images = check_binary_images(images)
    labels = _check_labels(labels, len(images), "labels")
    config = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed}
    key = _cache_key(images, labels, config)
    path = None
    if use_cache:
        path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        path = path / f"digit_classifier-{key[:24]}.pt"
        if path.is_file():
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                if state.get("key") != key:
                    raise ValueError("cache key mismatch")
                model = DigitClassifier()
                model.load_state_dict(state["state_dict"])
                info = {"cache_key": key, "cache_file": str(path), "from_cache": True,
                        "train_seconds": 0.0}
                return model.eval(), info
            except Exception as error:  # a corrupt or foreign file: retrain over it
                warnings.warn(f"ignoring unreadable classifier cache {path}: {error}")
    start = time.perf_counter()
    model = train_classifier(images, labels, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    seconds = time.perf_counter() - start
    if path is not None:
        _atomic_torch_save({"key": key, "config": config, "state_dict": model.state_dict()}, path)
    info = {"cache_key": key, "cache_file": None if path is None else str(path),
            "from_cache": False, "train_seconds": seconds}
    return model, info


# ----------------------------------------------------------------------------------------------
# Reference data and the evaluation entry point
# ----------------------------------------------------------------------------------------------


@dataclass
class Reference:
    """Everything :func:`evaluate_samples` compares against; build it with :func:`make_reference`.

    Attributes:
        classifier: the trained :class:`DigitClassifier`.
        memorisation_images: ``uint8 (N, 28, 28)``, the images copies are looked for in
            (the generator's training set).
        real_features: penultimate-layer features of the held-out real digits.
        real: the held-out real digits' own metric values (``class_distribution``,
            ``mean_confidence``, ``ink_density``, ``isolated_pixel_rate``, ...).
        info: classifier accuracy, set sizes, cache details (JSON-serialisable).
    """

    classifier: DigitClassifier
    memorisation_images: np.ndarray
    real_features: np.ndarray
    real: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._mu = self.real_features.mean(axis=0)
        self._cov = np.cov(self.real_features, rowvar=False)


def make_reference(
    train_images: ArrayLike,
    train_labels: ArrayLike,
    heldout_images: ArrayLike,
    heldout_labels: ArrayLike,
    *,
    memorisation_images: Optional[ArrayLike] = None,
    cache_dir: Optional[PathLike] = None,
    use_cache: bool = True,
    epochs: int = 3,
    seed: int = 0,
) -> Reference:
    """Train (or load) the classifier on the training digits and summarise the held-out ones.

    Args:
        train_images, train_labels: binary real digits and labels for the classifier.
        heldout_images, heldout_labels: binary real digits the samples are compared with; the
            classifier's accuracy is measured on them.
        memorisation_images: the images the generator was trained on, searched for exact
            copies and nearest neighbours (default: ``train_images``).
        cache_dir: where the classifier is cached (default :func:`default_cache_dir`).
        use_cache: ``False`` trains without reading or writing the cache.
        epochs, seed: classifier training settings (part of the cache key).
    """
    train_images = check_binary_images(train_images, "train_images")
    heldout_images = check_binary_images(heldout_images, "heldout_images")
    heldout_labels = _check_labels(heldout_labels, len(heldout_images), "heldout_labels")
    if len(heldout_images) < 2:
        raise ValueError("heldout_images needs at least 2 images (for a covariance)")
    memorisation = (
        train_images
        if memorisation_images is None
        else check_binary_images(memorisation_images, "memorisation_images")
    )
    model, cache_info = load_or_train_classifier(
        train_images, train_labels, cache_dir=cache_dir, use_cache=use_cache,
        epochs=epochs, seed=seed,
    )
    features, probs = classifier_outputs(model, heldout_images)
    predicted = probs.argmax(axis=1)
    class_distribution = np.bincount(predicted, minlength=NUM_CLASSES) / len(predicted)
    real = {
        "class_distribution": class_distribution.tolist(),
        "class_entropy": class_coverage(predicted)["entropy"],
        "mean_confidence": float(probs.max(axis=1).mean()),
        "ink_density": ink_density(heldout_images),
        "isolated_pixel_rate": isolated_pixel_rate(heldout_images),
    }
    info = {
        "classifier_accuracy": float((predicted == heldout_labels).mean()),
        "num_classifier_train": int(len(train_images)),
        "num_heldout": int(len(heldout_images)),
        "num_memorisation": int(len(memorisation)),
        "classifier_epochs": epochs,
        "classifier_seed": seed,
        **cache_info,
    }
    return Reference(model, memorisation, features, real, info)


def reference_from_dataset(
    images: ArrayLike,
    labels: ArrayLike,
    *,
    heldout: Union[int, float] = 0.2,
    split_seed: int = 0,
    cache_dir: Optional[PathLike] = None,
    use_cache: bool = True,
    epochs: int = 3,
    seed: int = 0,
) -> Reference:
    """:func:`make_reference` for one dataset, split into classifier-training and held-out digits.

    The split is a permutation seeded by ``split_seed``. Copies and nearest neighbours are looked
    for in *all* ``images``: BinaryGAN trains on the whole dataset (SPEC section 2), so the
    held-out digits are held out from the classifier, not from the generator.

    Args:
        images, labels: the binary real digits (e.g. ``data.binarize(load_images(...))``) and
            their labels.
        heldout: the held-out share (a float in (0, 1)) or count (an int >= 2).
        split_seed: seed of the split; ``cache_dir``, ``use_cache``, ``epochs``, ``seed``: as
            in :func:`make_reference`.
    """
    images = check_binary_images(images, "images")
    labels = _check_labels(labels, len(images), "labels")
    n = len(images)
    if isinstance(heldout, float) and 0 < heldout < 1:
        count = int(round(heldout * n))
    elif isinstance(heldout, int) and not isinstance(heldout, bool):
        count = heldout
    else:
        raise ValueError(f"heldout must be a float in (0, 1) or an int, got {heldout!r}")
    if not 2 <= count <= n - 1:
        raise ValueError(
            f"heldout gives {count} held-out digits of {n}; need at least 2 held out and 1 "
            "for training"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed)).numpy()
    train, held = np.sort(order[count:]), np.sort(order[:count])
    return make_reference(
        images[train], labels[train], images[held], labels[held], memorisation_images=images,
        cache_dir=cache_dir, use_cache=use_cache, epochs=epochs, seed=seed,
    )


def evaluate_samples(
    samples: ArrayLike,
    reference: Reference,
    *,
    preactivations: Optional[ArrayLike] = None,
    nearest_neighbours: bool = True,
    chunk_size: int = 512,
) -> dict[str, Any]:
    """All metrics of binary samples against a :class:`Reference`, as a JSON-serialisable dict.

    Args:
        samples: binary 28x28 images (see :func:`check_binary_images`).
        reference: from :func:`make_reference`.
        preactivations: optional preactivated outputs ``p`` of the run (any shape, values in
            [0, 1]); adds ``"preactivation_histogram"``.
        nearest_neighbours: ``False`` skips the copy / nearest-neighbour search (the only
            part whose cost grows with the training set).
        chunk_size: samples per matrix product in the nearest-neighbour search.

    Returns:
        ``{"num_samples", "frechet_distance", "class_coverage": {...}, "mean_confidence",
        "ink_density": {...}, "isolated_pixel_rate", "exact_copy_rate",
        "nearest_neighbour_hamming": {...}, "real": {...}, "reference": {...}}``; ``"real"``
        holds the held-out real digits' own values for comparison (their Frechet distance is 0
        by construction; evaluate a disjoint real set to get a real-vs-real baseline).
    """
    samples = check_binary_images(samples, "samples")
    features, probs = classifier_outputs(reference.classifier, samples)
    predicted = probs.argmax(axis=1)
    if len(samples) >= 2:
        fd = _frechet_from_stats(
            features.mean(axis=0), np.cov(features, rowvar=False), reference._mu, reference._cov
        )
    else:
        fd = None  # a covariance needs two samples
    result: dict[str, Any] = {
        "num_samples": int(len(samples)),
        "frechet_distance": fd,
        "class_coverage": class_coverage(predicted, reference.real["class_distribution"]),
        "mean_confidence": float(probs.max(axis=1).mean()),
        "ink_density": ink_density(samples),
        "isolated_pixel_rate": isolated_pixel_rate(samples),
    }
    if nearest_neighbours:
        distances = nearest_neighbour_hamming(samples, reference.memorisation_images, chunk_size)
        result["exact_copy_rate"] = float((distances == 0).mean())
        result["nearest_neighbour_hamming"] = {
            "mean": float(distances.mean()),
            "median": float(np.median(distances)),
            "min": int(distances.min()),
            "max": int(distances.max()),
        }
    if preactivations is not None:
        result["preactivation_histogram"] = preactivation_histogram(preactivations)
    result["real"] = copy.deepcopy(reference.real)
    result["reference"] = copy.deepcopy(reference.info)
    return result
