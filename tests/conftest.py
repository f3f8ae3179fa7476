"""Shared fixtures and helpers: devices, dtypes and tolerances."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import settings

# `make fuzz` runs tests/op/test_fuzz.py under this profile; the default run does 100 cases.
settings.register_profile("fuzz", max_examples=10_000)


# The real MNIST test set: CI clones the repository with shared/ beside it.
MNIST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"

# Every CUDA test carries the `cuda` mark (`pytest -m cuda` runs them all on a GPU machine) and
# is skipped, saying so, where there is no GPU.
CUDA = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def cuda_test(test):
    """Marks one test as a CUDA test (a module marks all of its tests with ``pytestmark = CUDA``)."""
    for mark in CUDA:
        test = mark(test)
    return test


DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]
FLOAT_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]

# Relative tolerances of a gradient against its float64 closed form, per dtype.
GRAD_RTOL = {
    torch.float16: 2e-3,
    torch.bfloat16: 1.6e-2,
    torch.float32: 1e-6,
    torch.float64: 1e-12,
}


def same_bits(x: torch.Tensor, y: torch.Tensor) -> bool:
    """Whether two tensors hold the same values, NaN where NaN, in the same memory layout."""
    nan = x.isnan()
    return (x.stride() == y.stride() and torch.equal(nan, y.isnan())
            and torch.equal(x[~nan], y[~nan]))


def grad_atol(dtype: torch.dtype, slope: float) -> float:
    """Absolute floor for gradient comparisons.

    Relative precision ends at the smallest normal number of the type the kernel computes in
    (float32 for the half types); below it only absolute precision is left, and the slope then
    multiplies that subnormal intermediate.
    """
    opmath = torch.promote_types(dtype, torch.float32)
    return max(torch.finfo(opmath).tiny, torch.finfo(dtype).tiny) * max(1.0, slope)



def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    """Write ``array`` (uint8 or int32) as an MNIST-format IDX file, gzipped if asked."""
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C}[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    raw = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def synthetic_digits(count: int, seed: int = 0) -> np.ndarray:
    """``count`` 28x28 uint8 images: a bright rectangle of random intensities on black."""
    rng = np.random.default_rng(seed)
    images = np.zeros((count, 28, 28), np.uint8)
    for image in images:  # a bright rectangle on black, 0 elsewhere
        top, left = rng.integers(2, 12, size=2)
        image[top:top + 12, left:left + 6] = rng.integers(1, 256, size=(12, 6))
    return images


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


@pytest.fixture(params=FLOAT_DTYPES, ids=lambda d: str(d).replace("torch.", ""))
def dtype(request) -> torch.dtype:
    return request.param


@pytest.fixture
def one_thread():
    """Run on one CPU thread: the example's small models gain nothing from more, and on a busy
    2-core machine OpenMP threads waiting on each other slow them down about tenfold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
