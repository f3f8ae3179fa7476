"""The op's backward for each fused estimator: one table of medians, CPU or CUDA.

The Gumbel estimator's backward draws the forward's uniforms again (Philox) and takes two logs;
this shows what that costs next to the sigmoid-adjusted backward, at the same sizes.

    python benchmarks/bench_backward.py [--device cuda] [--sizes 1e6 16e6] [--repeats 11]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import binary_neurons

BACKWARD = torch.ops.binary_neurons.threshold_sample_backward.default
ESTIMATORS = ("identity", "sigmoid", "clipped", "gumbel")


def _median_ms(fn, repeats: int, device: str) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            begin = time.perf_counter()
            fn()
            times.append((time.perf_counter() - begin) * 1e3)
    return statistics.median(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--sizes", nargs="+", default=["1e6", "16e6"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=11)
    args = parser.parse_args(argv)
    print(binary_neurons.backend_info())
    print(f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} CPU threads")
    print(f"{'size':>6} {'dtype':>9} " + " ".join(f"{name:>10}" for name in ESTIMATORS)
          + "   (backward, median ms)")
    for size_text in args.sizes:
        size = int(float(size_text))
        for dtype_name in args.dtypes:
            dtype = getattr(torch, dtype_name)
            generator = torch.Generator().manual_seed(0)
            a = torch.randn(size, generator=generator).to(dtype).to(args.device)
            g = torch.randn(size, generator=generator).to(dtype).to(args.device)
            slope = torch.tensor(1.0, device=args.device)
            seed = torch.tensor(7, device=args.device)
            tau = torch.tensor(0.5, device=args.device)
            row = []
            for name in ESTIMATORS:
                extra = (seed, tau) if name == "gumbel" else ()
                row.append(_median_ms(lambda: BACKWARD(g, a, slope, name, 1.0, *extra),
                                      args.repeats, args.device))
            print(f"{size_text:>6} {dtype_name:>9} " + " ".join(f"{ms:10.3f}" for ms in row))


if __name__ == "__main__":
    main()
