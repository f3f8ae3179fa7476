"""The evaluation's reference: a digit classifier, the real digits samples are compared with,
and :func:`evaluate_samples`, which returns every metric of :mod:`.metrics` as one
JSON-serialisable ``dict``::

    reference = make_reference(train_images, train_labels, heldout_images, heldout_labels)
    # or, for one dataset split by a seeded permutation:
    reference = reference_from_dataset(images, labels, heldout=0.2)
    metrics = evaluate_samples(samples, reference)

The classifier is trained once per training set and cached (keyed by a hash of the data and
the recipe) under ``$XDG_CACHE_HOME/binary_neurons``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .checkpoint import atomic_save
from .metrics import (NUM_CLASSES, ArrayLike, _frechet_from_stats, check_binary_images,
                      check_labels, class_coverage, ink_density, isolated_pixel_rate,
                      nearest_neighbour_hamming)
from .plots import preactivation_histogram

__all__ = ["DigitClassifier", "Reference", "classifier_outputs", "default_cache_dir",
           "evaluate_samples", "load_or_train_classifier", "make_reference",
           "reference_from_dataset", "train_classifier"]

PathLike = Union[str, Path]

#: Bump when the classifier's architecture or training recipe changes: it is part of the cache key.
CLASSIFIER_VERSION = 1


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
    labels = check_labels(labels, len(images), "labels")
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
    labels = check_labels(labels, len(images), "labels")
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
        atomic_save({"key": key, "config": config, "state_dict": model.state_dict()}, path)
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
    heldout_labels = check_labels(heldout_labels, len(heldout_images), "heldout_labels")
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
    for in *all* ``images``: BinaryGAN trains on the whole dataset, so the
    held-out digits are held out from the classifier, not from the generator.

    Args:
        images, labels: the binary real digits (e.g. ``data.binarize(load_images(...))``) and
            their labels.
        heldout: the held-out share (a float in (0, 1)) or count (an int >= 2).
        split_seed: seed of the split; ``cache_dir``, ``use_cache``, ``epochs``, ``seed``: as
            in :func:`make_reference`.
    """
    images = check_binary_images(images, "images")
    labels = check_labels(labels, len(images), "labels")
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
