"""Build script: the package, plus the compiled extension ``binary_neurons._C`` when possible.

Environment variables:

* ``BINARY_NEURONS_BUILD_EXT=0``: install pure Python (the op then runs its PyTorch kernels).
* ``FORCE_CUDA=1``: build the CUDA kernels even if no GPU is visible (needs nvcc).
* ``BINARY_NEURONS_NATIVE_ARCH=1``: compile for this machine's CPU (``-march=native``); the
  result is not portable. By default the CPU kernels are compiled for the baseline ISA plus
  AVX2 and AVX-512 versions chosen at run time.
* ``MAX_JOBS``: parallel compile jobs (torch's build helper reads it).

A failed build (no compiler, say) is reported as a warning and the install goes on, pure Python.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

from setuptools import setup

CSRC = Path("binary_neurons") / "csrc"


def _flag(name: str, default: str = "0") -> bool:
    return os.environ.get(name, default).strip().lower() not in ("0", "false", "no", "off", "")


def _extensions_and_commands():
    if not _flag("BINARY_NEURONS_BUILD_EXT", "1"):
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension
    except Exception as error:  # noqa: BLE001 - no torch at build time: install pure Python
        warnings.warn(f"binary_neurons: not building the extension ({error})", stacklevel=1)
        return [], {}

    # -fno-trapping-math lets gcc vectorize the compares and clamps of the kernels; -fopenmp
    # makes at::parallel_for use torch's OpenMP thread pool (libgomp is the one torch loaded).
    cxx_flags = ["-O3", "-fno-trapping-math", "-fopenmp", "-g0"]
    if _flag("BINARY_NEURONS_NATIVE_ARCH"):
        cxx_flags.append("-march=native")
    sources = [str(CSRC / "threshold_sample.cpp")]
    depends = [str(CSRC / "philox_uniform.h"), str(CSRC / "op_arguments.h")]
    def cpu_extension():
        return CppExtension(
            "binary_neurons._C",
            sources,
            depends=depends,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=["-fopenmp"],
        )

    extension = cpu_extension()
    if _flag("FORCE_CUDA") or torch.cuda.is_available():
        try:
            extension = CUDAExtension(
                "binary_neurons._C",
                sources + [str(CSRC / "cuda" / "threshold_sample.cu")],
                depends=depends,
                extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "--expt-relaxed-constexpr"]},
                extra_link_args=["-fopenmp"],
            )
        except Exception as error:  # noqa: BLE001 - no CUDA toolkit: build the CPU kernels
            warnings.warn(
                f"binary_neurons: not building the CUDA kernels ({error})", stacklevel=1
            )

    class OptionalBuildExtension(BuildExtension):
        """Builds the extension if it can; otherwise warns and leaves a pure-Python install."""

        def run(self):
            try:
                super().run()
                return
            except Exception as error:  # noqa: BLE001 - compiler missing or failing
                self._warn(error)
            if any(source.endswith(".cu") for source in self.extensions[0].sources):
                # Keep the CPU kernels when only the CUDA part fails to build.
                self.extensions = [cpu_extension()]
                try:
                    super().run()
                except Exception as error:  # noqa: BLE001
                    self._warn(error)

        @staticmethod
        def _warn(error):
            message = (
                "binary_neurons: building the native extension failed "
                f"({type(error).__name__}: {error}); installing the pure-PyTorch implementation"
            )
            warnings.warn(message, stacklevel=1)
            print(f"WARNING: {message}", file=sys.stderr)

    return [extension], {"build_ext": OptionalBuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions_and_commands()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
