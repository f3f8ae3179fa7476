"""Compiling the native kernels for the torch that is running.

The recipe (sources, flags), the record of what a build is made for (:func:`fingerprint`), the
CUDA architectures to build for, and :func:`compile_into`, which compiles in a child process
with :func:`torch.utils.cpp_extension.load` and ninja and renames the finished directory into
place. Where builds are kept and found is :mod:`binary_neurons._cache`.

This module imports nothing from the package: ``setup.py`` and the compiling child load it by
path, because importing the package would load the kernels being compiled.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

import torch

__all__ = ["BuildError", "build_name", "compile_into", "covers", "cuda_archs_for", "fingerprint"]

CSRC = Path(__file__).resolve().parent / "csrc"
LIBRARY = "binary_neurons_kernels"
LIBRARY_FILE = LIBRARY + (".pyd" if sys.platform == "win32" else ".so")
RECORD = "build.json"
LOG = "build.log"
# Bump when a build changes in a way that neither the sources nor the flags show.
RECIPE = 2

CPU_SOURCES = ("threshold_sample.cpp",)
CUDA_SOURCES = ("cuda/threshold_sample.cu",)
HEADERS = ("cpu_philox.h", "elementwise.h", "op_arguments.h")
# Generated into each build from the kernel list (binary_neurons/_kernel_list.py), on its
# include path.
GENERATED = "kernel_list.h"
# -fno-trapping-math lets gcc vectorize the kernels' compares and clamps; -fopenmp makes
# at::parallel_for use torch's OpenMP thread pool (Linux wheels of torch use libgomp). No FMA
# contraction on either device (-ffp-contract=off, -fmad=false), so that the CPU and CUDA kernels
# round every operation of csrc/elementwise.h alike and give the same bits.
_OPENMP = ["-fopenmp"] if sys.platform.startswith("linux") else []
CXX_FLAGS = ["-O3", "-fno-trapping-math", "-ffp-contract=off", "-g0", "-Wall", *_OPENMP]
# Where the toolchain links libstdc++ statically (seen on a CUDA 13 GPU machine), its copy must
# stay private to the library: exported, its symbols mix with the process's libstdc++ and
# formatting a number into an error message crashed.
_PRIVATE_STATIC_LIBS = ["-Wl,--exclude-libs,ALL"] if sys.platform.startswith("linux") else []
LD_FLAGS = [*_OPENMP, *_PRIVATE_STATIC_LIBS]
NVCC_FLAGS = ["-O3", "--expt-relaxed-constexpr", "-fmad=false"]

Announce = Callable[[str], None]


def to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class BuildError(RuntimeError):
    """The kernels cannot be compiled here, or compiling them failed.

    ``log`` is the path of the compiler's log when there is one.
    """

    def __init__(self, message: str, log: Path | None = None):
        super().__init__(message)
        self.log = log


def kinds(cuda_archs: tuple[str, ...]) -> str:
    """``"CPU"`` or ``"CPU and CUDA (8.0 9.0+PTX)"``."""
    return "CPU" if not cuda_archs else f"CPU and CUDA ({' '.join(cuda_archs)})"


# ---------------------------------------------------------------------------------------------
# What a build is made for, and its name.


def kernel_list() -> str:
    """The text of the generated header: the C++ form of the kernel list. The list's module is
    loaded by path, as this file is by setup.py and the compiling child: importing the package
    would load kernels."""
    path = Path(__file__).resolve().with_name("_kernel_list.py")
    spec = importlib.util.spec_from_file_location("_binary_neurons_kernel_list", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (dataclasses look their module up there)
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module.header()


def fingerprint(cuda: bool) -> dict:
    """Everything a build depends on; two builds are interchangeable iff these are equal."""
    sources = CPU_SOURCES + HEADERS + (CUDA_SOURCES if cuda else ())
    digest = hashlib.sha256()
    for name in sources:
        try:
            text = (CSRC / name).read_bytes()
        except OSError as error:
            raise BuildError(f"the kernel sources are incomplete: {error}") from None
        digest.update(name.encode() + b"\0" + text + b"\0")
    digest.update(GENERATED.encode() + b"\0" + kernel_list().encode() + b"\0")
    return {
        "recipe": RECIPE,
        "torch": torch.__version__,
        "torch_git": torch.version.git_version,
        "cuda": torch.version.cuda if cuda else None,
        "python": sys.implementation.cache_tag,
        "platform": sysconfig.get_platform(),
        "sources": digest.hexdigest(),
        "cxx_flags": CXX_FLAGS,
        "nvcc_flags": NVCC_FLAGS if cuda else [],
    }


def build_name(record: dict, cuda_archs: tuple[str, ...]) -> str:
    """``torch2.13.0+cpu-cpu-<digest>`` or ``torch2.11.0+cu130-cu13.0-sm90ptx-<digest>``."""
    if not cuda_archs:
        return f"torch{record['torch']}-cpu-{_digest(record)}"
    archs = "_".join(arch.replace(".", "").replace("+PTX", "ptx") for arch in cuda_archs)
    return f"torch{record['torch']}-cu{record['cuda']}-sm{archs}-{_digest(record)}"


def cuda_pattern(record: dict) -> str:
    """A glob matching the names of CUDA builds of ``record`` for any architectures."""
    return f"torch{record['torch']}-cu{record['cuda']}-sm*-{_digest(record)}"


def _digest(record: dict) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# CUDA architectures.


def parse_arch(arch: str) -> tuple[int, int, bool]:
    text = arch.strip()
    ptx = text.upper().endswith("+PTX")
    text = text[: -len("+PTX")] if ptx else text
    major, _, minor = text.partition(".")
    # 9.0a and 10.0f (architecture- and family-specific code) are built as plain 9.0 and 10.0:
    # these kernels use no instructions that need them, and plain code runs on more GPUs.
    minor = minor[:-1] if minor[-1:].lower() in ("a", "f") else minor
    if not (major.isdigit() and minor.isdigit()):
        raise BuildError(
            f"cannot read the CUDA architecture {arch!r}: expected the form 8.6, 9.0a or 9.0+PTX "
            "(TORCH_CUDA_ARCH_LIST is a list of these, separated by ';' or spaces)"
        )
    return int(major), int(minor), ptx


def covers(archs: tuple[str, ...], capability: tuple[int, int]) -> bool:
    """Whether code built for ``archs`` runs on a GPU of compute ``capability``.

    Machine code for X.Y runs on X.Z with Z >= Y; PTX for X.Y is compiled by the driver for
    any later GPU.
    """
    for arch in archs:
        major, minor, ptx = parse_arch(arch)
        if (major, minor) <= tuple(capability) and (ptx or major == capability[0]):
            return True
    return False


def device_capabilities() -> tuple[tuple[int, int], ...]:
    """The compute capabilities of the visible CUDA devices, sorted, without repeats."""
    capabilities = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
    return tuple(sorted(capabilities))


def cuda_archs_for(capabilities: tuple[tuple[int, int], ...]) -> tuple[str, ...]:
    """What to compile for: ``TORCH_CUDA_ARCH_LIST`` plus the visible devices, with PTX for the
    newest so that later GPUs can run it too."""
    wanted = {(major, minor): False for major, minor in capabilities}
    for arch in os.environ.get("TORCH_CUDA_ARCH_LIST", "").replace(";", " ").split():
        major, minor, ptx = parse_arch(arch)
        wanted[(major, minor)] = wanted.get((major, minor), False) or ptx
    if not wanted:
        raise BuildError(
            "no CUDA device is visible: set TORCH_CUDA_ARCH_LIST to the architectures to build "
            "for (for example '8.0;9.0')"
        )
    newest = max(wanted)
    wanted[newest] = True
    return tuple(f"{m}.{n}" + ("+PTX" if wanted[(m, n)] else "") for m, n in sorted(wanted))


def cuda_archs_to_build(cuda: bool) -> tuple[str, ...]:
    """The CUDA architectures a build made on this machine should hold: those of the visible
    GPUs (and ``TORCH_CUDA_ARCH_LIST``); with ``cuda`` and no GPU, those of the list alone;
    ``()`` (CPU kernels only) without ``cuda`` and without a GPU."""
    capabilities = device_capabilities() if torch.cuda.is_available() else ()
    return cuda_archs_for(capabilities) if cuda or capabilities else ()


def cuda_toolkit_problem() -> str | None:
    """Why the CUDA kernels cannot be compiled with this torch, or None if they can."""
    if torch.version.hip:
        return "this torch is a ROCm build; the kernels are written for CUDA only"
    if not torch.version.cuda:
        return "this torch was built without CUDA"
    from torch.utils.cpp_extension import CUDA_HOME  # a slow import: off the warm path

    nvcc = Path(CUDA_HOME or "", "bin", "nvcc.exe" if sys.platform == "win32" else "nvcc")
    if not CUDA_HOME or not nvcc.is_file():
        return (
            f"nvcc was not found (looked for {nvcc if CUDA_HOME else 'nvcc on PATH'}); install "
            f"a CUDA {torch.version.cuda} toolkit and set CUDA_HOME to it"
        )
    return None


# ---------------------------------------------------------------------------------------------
# Compiling.


def compiler_problem() -> str | None:
    compiler = os.environ.get("CXX", "").strip()
    command = shlex.split(compiler)[-1] if compiler else "c++"
    if shutil.which(command) is None:
        where = f"CXX={compiler!r}" if compiler else "'c++' on PATH"
        return f"no C++ compiler was found ({where}); install g++ or clang++, or set CXX"
    if shutil.which("ninja", path=_tool_path()) is None:
        return "ninja was not found; `pip install ninja`"
    return None


def toolchain_problem(cuda_archs: tuple[str, ...]) -> str | None:
    """Why the kernels (the CUDA ones too if ``cuda_archs``) cannot be compiled here, or None."""
    return compiler_problem() or (cuda_toolkit_problem() if cuda_archs else None)


def _tool_path() -> str:
    """PATH for the compiling child: the ninja of the ``ninja`` package first, which pip puts
    in the environment's bin directory even when that is not on PATH."""
    path = os.environ.get("PATH", "")
    try:
        import ninja  # the ninja package, if installed

        return os.pathsep.join([ninja.BIN_DIR, path])
    except (ImportError, AttributeError):
        return path


def compile_into(
    root: Path, cuda_archs: tuple[str, ...] = (), announce: Announce = to_stderr
) -> tuple[Path, dict]:
    """Compile the kernels (the CUDA ones too if ``cuda_archs``) into ``root / build_name(...)``.

    Works in a private directory and renames it into place when done, replacing a build of the
    same name; a failed attempt is kept as ``<name>.failed/`` with its log. Returns the build's
    directory and its record. Raises :class:`BuildError` when no compiler (or ``nvcc``) is
    found or compiling fails. Concurrent callers on one ``root`` must hold a lock: any
    ``<name>.tmp-*`` directory found is taken to be left by a dead process and removed.
    """
    problem = toolchain_problem(cuda_archs)
    if problem:
        raise BuildError(problem)
    record = fingerprint(bool(cuda_archs))
    name = build_name(record, cuda_archs)
    root.mkdir(parents=True, exist_ok=True)
    for leftover in root.glob(f"{name}.tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    work = root / f"{name}.tmp-{os.getpid()}"
    work.mkdir()
    (work / "include").mkdir()
    (work / "include" / GENERATED).write_text(kernel_list())
    how_long = "a few minutes" if cuda_archs else "about a minute"
    announce(
        f"binary_neurons: compiling the native {kinds(cuda_archs)} kernels for torch "
        f"{torch.__version__}, once per torch version ({how_long}): {root / name}"
    )
    env = dict(os.environ, PATH=_tool_path())
    env.pop("TORCH_CUDA_ARCH_LIST", None)
    if cuda_archs:
        env["TORCH_CUDA_ARCH_LIST"] = ";".join(cuda_archs)
    job = {"module": __file__, "directory": str(work), "cuda": bool(cuda_archs)}
    start = time.monotonic()
    with open(work / LOG, "w", encoding="utf-8") as log:
        log.write(f"binary_neurons native build {name}\n{json.dumps(record, indent=2)}\n\n")
        log.write(f"include/{GENERATED}:\n{kernel_list()}\n")
        log.flush()
        try:
            returncode = subprocess.run(
                [sys.executable, "-c", _CHILD, json.dumps(job)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                cwd=work, check=False,
            ).returncode
        except OSError as error:  # no usable sys.executable (an embedded interpreter)
            log.write(f"could not start {sys.executable!r}: {error}\n")
            returncode = -1
    seconds = time.monotonic() - start
    if returncode != 0 or not (work / LIBRARY_FILE).is_file():
        failed = root / f"{name}.failed"
        shutil.rmtree(failed, ignore_errors=True)
        os.rename(work, failed)
        raise BuildError(
            f"compiling the native kernels failed (exit status {returncode}; log: "
            f"{failed / LOG})",
            log=failed / LOG,
        )
    for path in work.iterdir():  # keep the library and the log (objects, ninja files go)
        if path.name in (LIBRARY_FILE, LOG):  # the generated header goes: the log holds it
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()
    created = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    kept = {"fingerprint": record, "cuda_archs": list(cuda_archs), "seconds": round(seconds, 1),
            "created": created}
    (work / RECORD).write_text(json.dumps(kept, indent=2) + "\n")
    final = root / name
    if final.exists():  # an unusable or superseded build: move it out of the way first
        stale = root / f"{name}.stale-{os.getpid()}"
        os.rename(final, stale)
        shutil.rmtree(stale, ignore_errors=True)
    os.rename(work, final)
    shutil.rmtree(root / f"{name}.failed", ignore_errors=True)
    return final, kept


# The compiling child loads this file by path and runs compile_here.
_CHILD = """
import importlib.util, json, sys
job = json.loads(sys.argv[1])
spec = importlib.util.spec_from_file_location("_binary_neurons_build", job["module"])
module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
module.compile_here(job)
"""


def compile_here(job: dict) -> None:
    """Compile (and, as a check, load) the library in this process: the child's work."""
    from torch.utils.cpp_extension import load

    sources = CPU_SOURCES + (CUDA_SOURCES if job["cuda"] else ())
    load(
        name=LIBRARY,
        sources=[str(CSRC / source) for source in sources],
        extra_cflags=CXX_FLAGS,
        extra_cuda_cflags=NVCC_FLAGS,
        extra_ldflags=LD_FLAGS,
        extra_include_paths=[str(Path(job["directory"]) / "include")],
        build_directory=job["directory"],
        with_cuda=job["cuda"],
        is_python_module=False,
        verbose=True,
    )
