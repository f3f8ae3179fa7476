"""GPU benchmark of the threshold-and-sample op: native kernels vs eager PyTorch and torch.compile.

For each size and dtype, forward, backward and forward + backward of the stochastic (SBN) and
deterministic (DBN) neuron with the sigmoid-adjusted estimator (slope 1), as

* ``eager``: plain PyTorch in an ``autograd.Function`` (``benchmarks/bench_threshold_sample.py``);
* ``compiled``: the same under ``torch.compile``;
* ``native``: the public API (``binary_neurons.functional``) on the native kernels;
* ``kernel``: the native op alone (no autograd, no seed drawing), for the bandwidth figures.

Times are medians of CUDA-event timings after warm-up (wall clock on the CPU, for rehearsal).
GB/s counts each element's bytes read and written: 2 per element size for the forward (a in,
y out), 3 for the backward (g and a in, the gradient out). The same run measures a
device-to-device ``copy_`` of the same tensor (the bandwidth a kernel can reach) and the peak
extra memory of one forward + backward, against the output plus the input gradient that it must
allocate. The targets (H100): kernels >= 90% of copy bandwidth at >= 64e6 elements; forward +
backward >= 1.2x compiled and >= 5x eager at 64e6; peak memory = output + input gradient.

Run::

    python benchmarks/bench_cuda.py                             # 1e6 .. 256e6, float32 and bfloat16
    python benchmarks/bench_cuda.py --sizes 64e6 --dtypes float32 --json figures.json
    python benchmarks/bench_cuda.py --device cpu --sizes 1e5    # the script itself, on the CPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from bench_threshold_sample import SLOPE, eager_dbn, eager_sbn, parse_size

import binary_neurons
from binary_neurons import _ops
from binary_neurons.functional import deterministic_binary, stochastic_binary

PHASES = ("fwd", "bwd", "fwd+bwd")
BYTES_READ_WRITTEN = {"fwd": 2, "bwd": 3, "fwd+bwd": 5}  # in units of the element size
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Timer:
    """Median time of a function: CUDA events on a GPU, wall clock on the CPU."""

    def __init__(self, device: str, repeats: int):
        self.cuda = device == "cuda"
        self.repeats = repeats

    def __call__(self, run, setup=None) -> float:
        """Seconds for run(setup()); setup is not timed."""
        for _ in range(3):
            run(setup() if setup else None)
        times = []
        for _ in range(self.repeats):
            state = setup() if setup else None
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(
                    enable_timing=True
                )
                start.record()
                run(state)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            else:
                begin = time.perf_counter()
                run(state)
                times.append(time.perf_counter() - begin)
        return statistics.median(times)


def peak_extra_bytes(run, device: str) -> float:
    """Extra allocator peak of one run() on CUDA (NaN on the CPU)."""
    if device != "cuda":
        return float("nan")
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    run(None)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def bench(shape, dtype: torch.dtype, device: str, timer: Timer, compiled: dict) -> dict:
    a = torch.randn(shape, device=device, dtype=dtype).requires_grad_()
    g = torch.randn(shape, device=device, dtype=dtype)
    plain = a.detach()
    dst = torch.empty_like(plain)
    slope = torch.tensor(SLOPE, device=device)
    seed = torch.tensor(12345, device=device)
    n, size = plain.numel(), plain.element_size()
    result = {"n": n, "dtype": str(dtype).replace("torch.", ""), "rows": {}}
    result["copy_gbs"] = 2 * n * size / timer(lambda _: dst.copy_(plain)) / 1e9

    forwards = {
        "SBN": {"eager": eager_sbn, "compiled": compiled["SBN"],
                "native": lambda x: stochastic_binary(x, "sigmoid", slope)},
        "DBN": {"eager": eager_dbn, "compiled": compiled["DBN"],
                "native": lambda x: deterministic_binary(x, "sigmoid", slope)},
    }
    for neuron, impls in forwards.items():
        for impl, forward in impls.items():

            def fwd(_, forward=forward):
                return forward(a)

            def graph(forward=forward):
                a.grad = None
                return forward(a)

            def fwdbwd(_, forward=forward):
                a.grad = None
                forward(a).backward(g)

            times = {
                "fwd": timer(fwd),
                "bwd": timer(lambda y: y.backward(g), graph),
                "fwd+bwd": timer(fwdbwd),
            }
            a.grad = None
            peak = peak_extra_bytes(fwdbwd, device)
            a.grad = None
            result["rows"][f"{neuron} {impl}"] = {"seconds": times, "peak_bytes": peak}
        op_seed = seed if neuron == "SBN" else None
        kernel = {
            "fwd": timer(
                lambda _, s=op_seed: _ops.threshold_sample(plain, slope, s, "sigmoid", 0.0)
            ),
            "bwd": timer(lambda _: _ops.threshold_sample_backward(g, plain, slope, "sigmoid", 0.0)),
        }
        kernel["fwd+bwd"] = kernel["fwd"] + kernel["bwd"]
        result["rows"][f"{neuron} kernel"] = {"seconds": kernel, "peak_bytes": float("nan")}
    for row in result["rows"].values():
        row["gbs"] = {
            phase: BYTES_READ_WRITTEN[phase] * n * size / seconds / 1e9
            for phase, seconds in row["seconds"].items()
        }
    return result


def targets(results: dict) -> list[dict]:
    """The performance targets, as measured ratios, for the results at >= 64e6 elements."""
    checks = []

    def add(label, where, value, needed):
        checks.append({"check": f"{label} ({where})", "value": value, "needed": needed,
                       "pass": value >= needed})

    for key, result in results.items():
        if result["n"] < 64_000_000:
            continue
        rows, where = result["rows"], key
        for neuron, phase in (("DBN", "fwd"), ("SBN", "fwd"), ("SBN", "bwd")):
            rate = rows[f"{neuron} kernel"]["gbs"][phase]
            add(f"{neuron} kernel {phase} / copy bandwidth", where, rate / result["copy_gbs"], 0.9)
        element_size = torch.empty((), dtype=DTYPES[result["dtype"]]).element_size()
        for neuron in ("SBN", "DBN"):
            native = rows[f"{neuron} native"]["seconds"]["fwd+bwd"]
            for baseline, needed in (("compiled", 1.2), ("eager", 5.0)):
                speedup = rows[f"{neuron} {baseline}"]["seconds"]["fwd+bwd"] / native
                add(f"{neuron} fwd+bwd speed-up over {baseline}", where, speedup, needed)
            # The output and the input gradient must be allocated; nothing more should be.
            needed_bytes = 2 * result["n"] * element_size
            peak = rows[f"{neuron} native"]["peak_bytes"]
            add(f"{neuron} fwd+bwd peak memory: (output + input gradient) / peak", where,
                needed_bytes / peak, 0.99)
    return checks


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--sizes", nargs="+", default=["1e6", "16e6", "64e6", "256e6"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=DTYPES)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU machine, or pass --device cpu")

    info = binary_neurons.backend_info()
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(info)
    print(f"torch {torch.__version__}, {device_name}")
    compiled = {"SBN": torch.compile(eager_sbn, dynamic=True),
                "DBN": torch.compile(eager_dbn, dynamic=True)}
    timer = Timer(args.device, args.repeats)
    header = (f"{'size':>6} {'dtype':>8} {'neuron':>6} {'impl':>8} {'fwd ms':>9} {'bwd ms':>9} "
              f"{'f+b ms':>9} {'fwd GB/s':>9} {'bwd GB/s':>9} {'peak MiB':>9}")
    print(header + "\n" + "-" * len(header))
    results = {}
    for text in args.sizes:
        for dtype_name in args.dtypes:
            result = bench(parse_size(text), DTYPES[dtype_name], args.device, timer, compiled)
            results[f"{text}/{dtype_name}"] = result
            for label, row in result["rows"].items():
                neuron, impl = label.split()
                seconds, gbs = row["seconds"], row["gbs"]
                print(f"{text:>6} {dtype_name:>8} {neuron:>6} {impl:>8} "
                      + " ".join(f"{seconds[p] * 1e3:9.3f}" for p in PHASES)
                      + f" {gbs['fwd']:9.1f} {gbs['bwd']:9.1f} {row['peak_bytes'] / 2**20:9.1f}")
            print(f"{text:>6} {dtype_name:>8} copy_ {result['copy_gbs']:.1f} GB/s")
            if args.json:  # after every size, so that a run cut short keeps what it measured
                write_json(args.json, device_name, info, results)
    checks = targets(results)
    if checks:
        print("\ntargets (measured ratio, higher is better):")
        for check in checks:
            verdict = "PASS" if check["pass"] else "MISS"
            print(f"  {verdict} {check['check']}: {check['value']:.2f} (needs {check['needed']})")
    if args.json:
        write_json(args.json, device_name, info, results)


def write_json(path: str, device_name: str, info, results: dict) -> None:
    with open(path, "w") as out:
        json.dump({"device": device_name, "torch": torch.__version__, "backend": str(info),
                   "results": results, "targets": targets(results)}, out, indent=2)


if __name__ == "__main__":
    main()
