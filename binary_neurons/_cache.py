"""Where builds of the native kernels are kept, found and made once.

A build is a directory named by :func:`binary_neurons._build.build_name`, holding the library,
its ``build.json`` record and ``build.log``. Builds are looked for

1. in ``binary_neurons/_kernels/``, where an ahead-of-time install puts one, then
2. in the cache: ``$BINARY_NEURONS_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/binary_neurons``
   (``~/.cache/binary_neurons``), else, where that cannot be written, ``binary_neurons-<uid>``
   in the system's temporary directory.

A build is used only when its record equals the running torch's fingerprint, so a build made
for another torch is never loaded. :func:`build` compiles into the cache under a file lock, so
that of several processes starting at once (``torchrun``) one compiles and the others wait and
use its build; a failed attempt is remembered and not repeated at every import.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path

from filelock import FileLock, Timeout

from . import _build
from ._build import LIBRARY_FILE, LOG, RECORD, BuildError

__all__ = ["Build", "build", "cache_dirs", "find"]

CACHE_ENV = "BINARY_NEURONS_CACHE_DIR"
AHEAD_OF_TIME_DIR = Path(__file__).resolve().parent / "_kernels"


@dataclasses.dataclass(frozen=True)
class Build:
    """A finished build: a directory with the library, its ``build.json`` and ``build.log``."""

    directory: Path
    record: dict

    @property
    def library(self) -> Path:
        return self.directory / LIBRARY_FILE

    @property
    def cuda_archs(self) -> tuple[str, ...]:
        return tuple(self.record["cuda_archs"])

    @property
    def ahead_of_time(self) -> bool:
        return self.directory.parent == AHEAD_OF_TIME_DIR

    @property
    def contents(self) -> str:
        """``"CPU kernels for torch 2.13.0+cpu"``, or ``"CPU and CUDA (9.0+PTX) kernels ..."``."""
        torch_version = self.record["fingerprint"]["torch"]
        return f"{_build.kinds(self.cuda_archs)} kernels for torch {torch_version}"


def cache_dirs() -> list[Path]:
    """The cache directories, in order of preference.

    ``$BINARY_NEURONS_CACHE_DIR`` alone when set; otherwise ``$XDG_CACHE_HOME/binary_neurons``
    (default ``~/.cache/binary_neurons``), then a per-user directory under the system's
    temporary directory for machines whose home cannot be written.
    """
    configured = os.environ.get(CACHE_ENV, "").strip()
    if configured:
        return [Path(configured).expanduser()]
    dirs = []
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    if not base:
        try:
            base = str(Path.home() / ".cache")
        except RuntimeError:  # no home directory at all
            base = ""
    if base:
        dirs.append(Path(base) / "binary_neurons")
    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    dirs.append(Path(tempfile.gettempdir()) / f"binary_neurons-{user}")
    return dirs


def writable_cache_dir() -> Path:
    """The first cache directory that can be created and written."""
    tried = []
    for directory in cache_dirs():
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=directory):
                return directory
        except OSError as error:
            tried.append(f"{directory} ({error.strerror or error})")
    raise BuildError(
        f"no cache directory can be written (tried {'; '.join(tried)}); set {CACHE_ENV} to a "
        "writable directory"
    )


def _read(directory: Path, record: dict, notes: list[str]) -> Build | None:
    """The build in ``directory`` if it is a finished build made for ``record``."""
    try:
        found = json.loads((directory / RECORD).read_text())
        built_for = found["fingerprint"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        notes.append(f"ignored {directory}: unreadable {RECORD} ({error})")
        return None
    if built_for != record:
        differences = sorted(key for key in record if built_for.get(key) != record[key])
        notes.append(
            f"ignored {directory}: built for another {', '.join(differences)} "
            f"(torch {built_for.get('torch')}, this is torch {record['torch']})"
        )
        return None
    if not (directory / LIBRARY_FILE).is_file():
        notes.append(f"ignored {directory}: {LIBRARY_FILE} is missing")
        return None
    return Build(directory, found)


def find(
    cuda_capabilities: tuple[tuple[int, int], ...] | None, notes: list[str] | None = None
) -> Build | None:
    """A finished build for this torch: CPU kernels only when ``cuda_capabilities`` is None,
    else CPU and CUDA kernels that run on every one of those compute capabilities. Why a build
    found was not taken is appended to ``notes``."""
    notes = [] if notes is None else notes
    cuda = cuda_capabilities is not None
    record = _build.fingerprint(cuda)
    for root in [AHEAD_OF_TIME_DIR, *cache_dirs()]:
        if not cuda:
            candidates = [root / _build.build_name(record, ())]
        else:
            pattern = _build.cuda_pattern(record)
            candidates = sorted(root.glob(pattern)) if root.is_dir() else []
        for directory in candidates:
            found = _read(directory, record, notes)
            if found is None:
                continue
            if cuda and not all(_build.covers(found.cuda_archs, cc) for cc in cuda_capabilities):
                wanted = ", ".join(f"{major}.{minor}" for major, minor in cuda_capabilities)
                notes.append(f"ignored {directory}: not built for compute capability {wanted}")
                continue
            return found
    return None


def build(
    cuda_archs: tuple[str, ...] = (),
    *,
    force: bool = False,
    retry_failed: bool = False,
    announce: _build.Announce = _build.to_stderr,
) -> tuple[Build, bool]:
    """Compile the kernels (the CUDA ones too if ``cuda_archs``) into the first writable cache
    directory, holding its lock. Returns the build and whether this process compiled it; one
    that another process made meanwhile is returned as it is, unless ``force``.

    Raises :class:`~binary_neurons._build.BuildError` when no compiler is found, when an earlier
    attempt failed (unless ``retry_failed``), and when compiling fails.
    """
    problem = _build.toolchain_problem(cuda_archs)  # before anything is written to disk
    if problem:
        raise BuildError(problem)
    record = _build.fingerprint(bool(cuda_archs))
    root = writable_cache_dir()
    name = _build.build_name(record, cuda_archs)
    lock = FileLock(str(root / f"{name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        announce(
            f"binary_neurons: waiting for another process to finish compiling the native "
            f"kernels ({root / name})"
        )
        lock.acquire()
    try:
        if not force:
            existing = _read(root / name, record, [])
            if existing is not None:
                return existing, False
            failed = root / f"{name}.failed"
            if failed.is_dir() and not retry_failed:
                raise BuildError(
                    f"compiling the native kernels failed before (log: {failed / LOG}); "
                    "`python -m binary_neurons build` tries again",
                    log=failed / LOG,
                )
        directory, record = _build.compile_into(root, cuda_archs, announce)
        return Build(directory, record), True
    finally:
        lock.release()
