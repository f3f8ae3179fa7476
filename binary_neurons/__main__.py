"""Command line: ``python -m binary_neurons {info,build}``.

``info`` prints which implementation runs on each device and why. ``build`` compiles the native
kernels now rather than at the first import (for machines that will run offline or without a
compiler, and for container images) and prints where they went and how long they took.
"""

from __future__ import annotations

import argparse
import sys

from . import _build, _cache, backend_info


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m binary_neurons",
        description="The native kernels of binary_neurons: what runs, and building them ahead.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="say which implementation runs on each device, and why")
    build = commands.add_parser(
        "build",
        help="compile the native kernels for this torch into the cache now",
        description=(
            "Compile the native kernels for the installed torch into the cache "
            f"(${_cache.CACHE_ENV}, default ~/.cache/binary_neurons), with the CUDA kernels "
            "when a GPU is visible or --cuda is given. An earlier failed attempt is retried."
        ),
    )
    build.add_argument(
        "--cuda",
        action="store_true",
        help="build the CUDA kernels even where no GPU is visible (a container build), for the "
        "architectures in TORCH_CUDA_ARCH_LIST",
    )
    build.add_argument("--force", action="store_true", help="compile again even if built")
    return parser


def _compile_now(cuda: bool, force: bool) -> None:
    archs = _build.cuda_archs_to_build(cuda)
    # A build counts as done when it runs on every architecture it is asked for.
    capabilities = tuple(_build.parse_arch(arch)[:2] for arch in archs)
    existing = _cache.find(capabilities if archs else None)
    if existing is not None and not force:
        print(
            f"binary_neurons: {existing.contents} are built (in {existing.record['seconds']:.1f} "
            f"s on {existing.record['created']}): {existing.directory}"
        )
        return
    made, _ = _cache.build(archs, force=force, retry_failed=True)
    print(f"binary_neurons: compiled the {made.contents} in {made.record['seconds']:.1f} s: "
          f"{made.directory}")


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "info":
        print(backend_info())
        return 0
    try:
        _compile_now(args.cuda, args.force)
    except _build.BuildError as error:
        print(f"binary_neurons: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
