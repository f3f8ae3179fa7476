"""Chooses the implementation of the op on each device: native kernels or pure PyTorch.

The choice is made once, at import, from the environment variable ``BINARY_NEURONS_BACKEND``:

* ``auto`` (default): the native kernels where they can be had (found in the cache or compiled
  now, see :mod:`binary_neurons._cache`), else pure PyTorch with one warning that says why;
* ``native``: the native kernels on the CPU and, when CUDA is available, on CUDA; otherwise
  ``import binary_neurons`` raises an error that says why;
* ``python``: pure PyTorch; nothing is compiled or loaded.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from pathlib import Path

import torch

from . import _build, _cache

__all__ = ["BackendInfo", "backend_info"]

ENV_VAR = "BINARY_NEURONS_BACKEND"
_CHOICES = ("auto", "native", "python")
OP_NAMES = ("binary_neurons::threshold_sample", "binary_neurons::threshold_sample_backward")
_DISPATCH_KEYS = {"cpu": "CPU", "cuda": "CUDA"}


@dataclasses.dataclass(frozen=True)
class BackendInfo:
    """Which implementation of the threshold-and-sample op runs on each device, and why.

    Attributes:
        name: ``"native"`` when the native kernels are loaded, else ``"python"``.
        devices: for ``"cpu"`` and ``"cuda"``, the implementation that runs there:
            ``"native"`` or ``"python"``.
        reasons: for each device, a sentence saying why: where the native kernels were
            compiled or loaded from, or what kept them away (no compiler, a failed build with
            its log, no CUDA toolkit, disabled).
        requested: the value of ``BINARY_NEURONS_BACKEND`` (``"auto"`` when unset).
        library: the path of the loaded native library, or None.
        log: the path of the compiler's log when a build was made or failed in this process,
            else None.

    Example:
        Printed, it says the same in a few lines. On a machine whose CPU kernels compiled and
        which has no GPU (the path varies):

        >>> import binary_neurons
        >>> info = binary_neurons.backend_info()
        >>> print(info)  # doctest: +SKIP
        binary_neurons backend: native (cpu: native, cuda: python)
          cpu: native kernels loaded from the cache (/home/you/.cache/binary_neurons/...)
          cuda: pure PyTorch: no CUDA device is available
        >>> info.devices  # doctest: +SKIP
        {'cpu': 'native', 'cuda': 'python'}
        >>> print(str(info).splitlines()[0].split(" (")[0])  # doctest: +ELLIPSIS
        binary_neurons backend: ...
        >>> sorted(info.devices), sorted(set(info.devices.values()) - {"native", "python"})
        (['cpu', 'cuda'], [])
    """

    name: str
    devices: dict
    reasons: dict
    requested: str
    library: str | None = None
    log: str | None = None

    def __str__(self) -> str:
        per_device = ", ".join(f"{device}: {impl}" for device, impl in self.devices.items())
        lines = [f"binary_neurons backend: {self.name} ({per_device})"]
        lines += [f"  {device}: {reason}" for device, reason in self.reasons.items()]
        return "\n".join(lines)


def _stacklevel_outside_package() -> int:
    """The ``stacklevel`` that points a warning at the code importing the package, counted
    the way :mod:`warnings` counts (import machinery frames skipped)."""
    package = str(Path(__file__).resolve().parent)
    frame, level = sys._getframe(1), 1
    while frame is not None and (
        frame.f_code.co_filename.startswith(package) or "importlib" in frame.f_code.co_filename
    ):
        if "importlib" not in frame.f_code.co_filename:
            level += 1
        frame = frame.f_back
    return level


def _requested_backend() -> str:
    requested = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if requested not in _CHOICES:
        warnings.warn(
            f"{ENV_VAR}={requested!r} is not one of {', '.join(_CHOICES)}; using 'auto'",
            RuntimeWarning,
            stacklevel=_stacklevel_outside_package(),
        )
        requested = "auto"
    return requested


@dataclasses.dataclass(frozen=True)
class _Obtained:
    """A build to load, or why there is none."""

    build: _cache.Build | None
    compiled: bool = False  # by this process, now
    problem: str | None = None  # why there is no build at all
    cuda_problem: str | None = None  # why the build has no CUDA kernels though CUDA is here
    log: Path | None = None
    notes: tuple[str, ...] = ()  # why builds that were found were not taken


def _obtain(cuda: bool) -> _Obtained:
    """Find or compile a build: with CUDA kernels when ``cuda`` (CUDA is available) and they
    can be had, else with CPU kernels only."""
    notes: list[str] = []
    cuda_problem = log = None
    if cuda:
        capabilities = _build.device_capabilities()
        found = _cache.find(capabilities, notes)
        if found is not None:
            return _Obtained(found, notes=tuple(notes))
        cuda_problem = _build.cuda_toolkit_problem()
        if cuda_problem is None:
            try:
                made, compiled = _cache.build(_build.cuda_archs_for(capabilities))
                return _Obtained(made, compiled, notes=tuple(notes))
            except _build.BuildError as error:
                cuda_problem, log = str(error), error.log
    try:
        found = _cache.find(None, notes)
        if found is not None:
            return _Obtained(found, cuda_problem=cuda_problem, log=log, notes=tuple(notes))
        made, compiled = _cache.build(())
        return _Obtained(made, compiled, cuda_problem=cuda_problem, log=log, notes=tuple(notes))
    except _build.BuildError as error:
        return _Obtained(None, problem=str(error), cuda_problem=cuda_problem,
                         log=error.log or log, notes=tuple(notes))


def _load() -> tuple[Path | None, dict, Path | None]:
    """Obtain and load the native library; return its path, the reason per device and the log
    path. Raises in ``native`` mode when a device that needs native kernels cannot have them."""
    if REQUESTED == "python":
        reason = f"pure PyTorch: disabled by {ENV_VAR}=python"
        return None, {"cpu": reason, "cuda": reason}, None
    cuda = torch.cuda.is_available()
    try:
        outcome = _obtain(cuda)
    except Exception as error:  # noqa: BLE001 - nothing here may break the import
        outcome = _Obtained(
            None, problem=f"preparing them failed ({type(error).__name__}: {error})"
        )
    built, library, problem = outcome.build, None, outcome.problem
    if built is not None:
        try:
            torch.ops.load_library(str(built.library))
            library = built.library
        except Exception as error:  # noqa: BLE001 - a bad library must not break import
            problem = f"loading {built.library} failed ({type(error).__name__}: {error})"
    if library is not None:
        if outcome.compiled:
            how = f"compiled now, in {built.record['seconds']:.1f} s"
        elif built.ahead_of_time:
            how = "loaded from the ahead-of-time build"
        else:
            how = "loaded from the cache"
        native = f"native kernels {how} ({library})"
        if outcome.compiled and outcome.notes:  # say why no earlier build would do
            native += "; " + "; ".join(outcome.notes)
        unavailable = {"cuda": outcome.cuda_problem} if cuda and outcome.cuda_problem else {}
    else:
        native = None
        why = "; ".join([problem, *outcome.notes])
        unavailable = {"cpu": why, **({"cuda": why} if cuda else {})}
    reasons = {}
    for device in ("cpu", "cuda"):
        if device in unavailable:
            reasons[device] = f"pure PyTorch: {unavailable[device]}"
        elif device == "cuda" and not cuda:
            reasons[device] = "pure PyTorch: no CUDA device is available"
        else:
            reasons[device] = native
    if unavailable:
        details = "; ".join(f"{device}: {why}" for device, why in unavailable.items())
        if REQUESTED == "native":
            raise RuntimeError(
                f"binary_neurons: {ENV_VAR}=native, but the native kernels are not available "
                f"({details}). Unset {ENV_VAR} to use the pure-PyTorch kernels instead."
            )
        warnings.warn(
            f"binary_neurons: native kernels unavailable ({details}); "
            f"{' and '.join(unavailable)} tensors use the pure-PyTorch kernels (set "
            f"{ENV_VAR}=python to choose them without this warning)",
            RuntimeWarning,
            stacklevel=_stacklevel_outside_package(),
        )
    log = built.directory / _build.LOG if outcome.compiled else outcome.log
    return library, reasons, log


REQUESTED = _requested_backend()
LIBRARY, _REASONS, _LOG = _load()


def _implementation_on(device: str) -> str:
    if LIBRARY is None:
        return "python"
    has_kernel = torch._C._dispatch_has_kernel_for_dispatch_key(
        OP_NAMES[0], _DISPATCH_KEYS[device]
    )
    return "native" if has_kernel else "python"


def backend_info() -> BackendInfo:
    """Return which implementation of the op runs on each device, and why.

    Example:
        On a machine whose CPU kernels compiled and which has no GPU:

        >>> import binary_neurons
        >>> info = binary_neurons.backend_info()
        >>> info.name, info.devices  # doctest: +SKIP
        ('native', {'cpu': 'native', 'cuda': 'python'})
        >>> info.reasons["cuda"]  # doctest: +SKIP
        'pure PyTorch: no CUDA device is available'

        ``python -m binary_neurons info`` prints it (see :class:`BackendInfo`). Under
        ``BINARY_NEURONS_BACKEND=python`` every device says ``'python'``, with the reason
        ``'pure PyTorch: disabled by BINARY_NEURONS_BACKEND=python'``.
    """
    return BackendInfo(
        name="native" if LIBRARY is not None else "python",
        devices={device: _implementation_on(device) for device in _DISPATCH_KEYS},
        reasons=dict(_REASONS),
        requested=REQUESTED,
        library=str(LIBRARY) if LIBRARY is not None else None,
        log=str(_LOG) if _LOG is not None else None,
    )
