"""Chooses the implementation of the op: the compiled extension or pure PyTorch.

The choice is made once, at import, from the environment variable ``BINARY_NEURONS_BACKEND``:

* ``auto`` (default): the compiled extension if it loads, else pure PyTorch;
* ``native``: the compiled extension; if it cannot load, a warning and pure PyTorch;
* ``python``: pure PyTorch, without loading the extension.

Importing :mod:`binary_neurons` never fails because of the extension.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import warnings
from types import ModuleType

import torch

__all__ = ["BackendInfo", "backend_info"]

ENV_VAR = "BINARY_NEURONS_BACKEND"
_CHOICES = ("auto", "native", "python")
OP_NAMES = ("binary_neurons::threshold_sample", "binary_neurons::threshold_sample_backward")


@dataclasses.dataclass(frozen=True)
class BackendInfo:
    """Which implementation of the threshold-and-sample op is in use, and why.

    Attributes:
        name: ``"native"`` when the compiled extension is loaded, else ``"python"``.
        reason: a sentence saying why this backend was chosen.
        devices: for ``"cpu"`` and ``"cuda"``, the implementation that runs there:
            ``"native"`` or ``"python"``.
        requested: the value of ``BINARY_NEURONS_BACKEND`` (``"auto"`` when unset).

    Examples:
        >>> import binary_neurons
        >>> info = binary_neurons.backend_info()
        >>> sorted(info.devices)
        ['cpu', 'cuda']
        >>> str(info).startswith("binary_neurons backend: " + info.name)
        True
    """

    name: str
    reason: str
    devices: dict
    requested: str

    def __str__(self) -> str:
        per_device = ", ".join(f"{device}: {impl}" for device, impl in self.devices.items())
        return f"binary_neurons backend: {self.name} ({per_device}); {self.reason}"


def _requested_backend() -> str:
    requested = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if requested not in _CHOICES:
        warnings.warn(
            f"{ENV_VAR}={requested!r} is not one of {', '.join(_CHOICES)}; using 'auto'",
            RuntimeWarning,
            stacklevel=3,
        )
        requested = "auto"
    return requested


def _load_native(requested: str) -> tuple[ModuleType | None, str]:
    """Import the compiled extension; return it (or None) and the reason for the outcome."""
    if requested == "python":
        return None, f"{ENV_VAR}=python selects the pure-PyTorch implementation"
    try:
        module = importlib.import_module("binary_neurons._C")
    except ModuleNotFoundError as error:
        if error.name != "binary_neurons._C":
            reason = f"the compiled extension failed to import: {error}"
        else:
            reason = (
                "the compiled extension is not installed (installed with "
                "BINARY_NEURONS_BUILD_EXT=0 or without a compiler)"
            )
    except Exception as error:  # noqa: BLE001 - any failure to load must not break import
        reason = f"the compiled extension failed to load: {type(error).__name__}: {error}"
    else:
        how = "requested" if requested == "native" else "loaded"
        return module, f"the compiled extension is {how} ({module.__file__})"
    # A missing extension is an ordinary install; only warn when the user asked for it or it
    # is present but broken.
    if requested == "native" or "not installed" not in reason:
        warnings.warn(
            f"binary_neurons: {reason}; using the pure-PyTorch implementation",
            RuntimeWarning,
            stacklevel=3,
        )
    return None, reason + "; using the pure-PyTorch implementation"


REQUESTED = _requested_backend()
NATIVE, _REASON = _load_native(REQUESTED)


def _implementation_on(dispatch_key: str) -> str:
    if NATIVE is None:
        return "python"
    has_kernel = torch._C._dispatch_has_kernel_for_dispatch_key(OP_NAMES[0], dispatch_key)
    return "native" if has_kernel else "python"


def backend_info() -> BackendInfo:
    """Return which implementation of the op is in use, per device, and why.

    Example:
        >>> import binary_neurons
        >>> info = binary_neurons.backend_info()
        >>> info.name in ("native", "python")
        True
    """
    return BackendInfo(
        name="native" if NATIVE is not None else "python",
        reason=_REASON,
        devices={"cpu": _implementation_on("CPU"), "cuda": _implementation_on("CUDA")},
        requested=REQUESTED,
    )
