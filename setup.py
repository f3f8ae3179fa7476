"""Build script.

By default the wheel is pure Python: it ships the kernels' C++/CUDA sources, and the package
compiles them on first import for the torch installed then (``binary_neurons/_build.py``).
So ``pip install`` needs no torch, no compiler and no build isolation tricks.

Ahead-of-time build, for images and clusters whose compute nodes have no compiler:
``BINARY_NEURONS_BUILD_EXT=1 pip install --no-build-isolation .`` compiles the kernels at
install time, against the torch installed in the environment, into
``binary_neurons/_kernels/`` (``FORCE_CUDA=1`` adds the CUDA kernels for the visible GPUs and
``TORCH_CUDA_ARCH_LIST``). Such a build records the torch it was made for; under any other torch
it is ignored and the package compiles its own on first import.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


AHEAD_OF_TIME = _flag("BINARY_NEURONS_BUILD_EXT")


def _builder():
    """binary_neurons/_build.py, loaded by path: importing the package would load kernels."""
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.exit(
            "BINARY_NEURONS_BUILD_EXT=1 compiles against the installed torch, but torch cannot "
            "be imported here: install torch first and pass --no-build-isolation to pip"
        )
    path = Path(__file__).resolve().parent / "binary_neurons" / "_build.py"
    spec = importlib.util.spec_from_file_location("_binary_neurons_build", path)
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithKernels(build_py):
    """build_py, then (when asked) the kernels compiled into the package's _kernels/."""

    def run(self):
        super().run()
        if not AHEAD_OF_TIME:
            return
        builder = _builder()
        # An editable install runs from the source tree; a wheel is made from build_lib.
        tree = Path() if self.editable_mode else Path(self.build_lib)
        target = tree / "binary_neurons" / "_kernels"
        try:
            archs = builder.cuda_archs_to_build(_flag("FORCE_CUDA"))
            with tempfile.TemporaryDirectory() as scratch:
                made, record = builder.compile_into(Path(scratch), archs, announce=print)
                # One build per install: none left from earlier builds in this tree.
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(made, target / made.name)
        except builder.BuildError as error:
            sys.exit(f"binary_neurons: BINARY_NEURONS_BUILD_EXT=1, but {error}")
        print(f"binary_neurons: compiled the {builder.kinds(archs)} kernels in "
              f"{record['seconds']:.1f} s into {target / made.name}")


class KernelDistribution(Distribution):
    """A wheel holding compiled kernels is tagged for this platform and Python."""

    def has_ext_modules(self):
        return AHEAD_OF_TIME


setup(cmdclass={"build_py": BuildPyWithKernels}, distclass=KernelDistribution)
