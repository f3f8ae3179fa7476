"""ATen's Philox engine, for the tests: the uniforms the kernels must draw.

Compiles ``philox_engine.cpp`` (a few hundred milliseconds, once per source and torch version,
into the temporary directory) and calls it through :mod:`ctypes`; the shipped package holds no
test-only code.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch
from torch.utils.cpp_extension import include_paths

SOURCE = Path(__file__).with_name("philox_engine.cpp")
ELEMENTWISE = Path(__file__).resolve().parents[1] / "binary_neurons" / "csrc" / "elementwise.h"


@functools.lru_cache(maxsize=None)
def _library() -> ctypes.CDLL:
    digest = hashlib.sha256(
        SOURCE.read_bytes() + ELEMENTWISE.read_bytes() + torch.__version__.encode()
    ).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"binary_neurons_test_philox_{digest}.so"
    if not path.is_file():
        compiler = os.environ.get("CXX", "c++")
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        command = [compiler, "-O2", "-std=c++17", "-shared", "-fPIC",
                   *(f"-I{folder}" for folder in include_paths()), str(SOURCE), "-o", str(partial)]
        try:
            subprocess.run(command, check=True, capture_output=True, text=True)
        except FileNotFoundError:
            pytest.skip(f"needs a C++ compiler ({compiler}) for ATen's Philox engine")
        except subprocess.CalledProcessError as error:
            raise RuntimeError(f"compiling {SOURCE.name} failed:\n{error.stderr}") from None
        os.replace(partial, path)
    library = ctypes.CDLL(str(path))
    library.philox_uniform.argtypes = [
        ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_bool, ctypes.c_void_p
    ]
    library.philox_uniform.restype = None
    return library


def philox_uniform(seed: int, offset: int, numel: int, float64: bool) -> torch.Tensor:
    """The uniforms the kernels draw for elements ``[offset, offset + numel)`` under ``seed``
    (float32, or float64 for float64 tensors), from ATen's engine one element at a time."""
    if offset < 0 or numel < 0:
        raise ValueError(f"expected offset >= 0 and numel >= 0, got {offset} and {numel}")
    out = torch.empty(numel, dtype=torch.float64 if float64 else torch.float32)
    _library().philox_uniform(seed, offset, numel, float64, out.data_ptr())
    return out
