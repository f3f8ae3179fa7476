"""Benchmark of the threshold-and-sample op: native kernels vs pure PyTorch (eager and compiled).

For each size (float32) and each neuron (SBN: stochastic, DBN: deterministic; both with the
sigmoid-adjusted estimator, slope 1.0), times forward, backward and forward+backward of:

* ``eager``: a natural pure-PyTorch version (torch.rand_like / torch.sigmoid / compare; backward
  ``g * s * p * (1 - p)``) in a torch.autograd.Function;
* ``compiled``: the same function under ``torch.compile(dynamic=True)``;
* ``native``: the public API (``binary_neurons.functional``), which calls the compiled op;
* ``raw op``: the compiled op alone (``threshold_sample`` / ``threshold_sample_backward``),
  without autograd or argument handling;
* ``raw warm`` (CPU, tensors of 32 MB or more): the same with glibc told to reuse resident
  pages for new tensors, which leaves the kernel's own time (see ``glibc_keeps_pages``).

Times are medians over ``--repeats`` runs (more for fast cases) after warm-up; the cases of
one size run interleaved, round by round, so that the varying load of a shared machine hits them
alike. GB/s counts 8 bytes per element for the forward (read a, write y), 12 for the backward
(read g and a, write the gradient), 20 for both.
Next to them: a same-run ``copy_`` into a preallocated tensor (memory bandwidth) and a same-size
``clone`` (the floor of any op that returns a new tensor: allocations of 32 MB or more get fresh
pages from glibc, and faulting them in is slow on some VMs). "peak MiB" is the extra peak memory
of one forward+backward (resident set on the CPU, allocator peak on CUDA).

The machine this was written on shares 2 cores between several users; with OpenMP's default
(spinning) wait policy, a parallel region then waits a whole scheduler time slice (~6 ms) for a
descheduled worker, so the script sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets
it (it must be set before torch is imported, and applies to every implementation alike).

Run::

    python benchmarks/bench_threshold_sample.py                  # the full table (a few minutes)
    python benchmarks/bench_threshold_sample.py --sizes 64x784 1e6 --repeats 5
    python benchmarks/bench_threshold_sample.py --device cuda
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import math
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402 - after setting the OpenMP wait policy

import binary_neurons  # noqa: E402
from binary_neurons import _ops  # noqa: E402
from binary_neurons.functional import deterministic_binary, stochastic_binary  # noqa: E402

SLOPE = 1.0
BYTES_PER_ELEMENT = {"fwd": 8, "bwd": 12, "fwd+bwd": 20}


# ---------------------------------------------------------------------------------------------
# The pure-PyTorch baselines.


class EagerSBN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, slope: float):
        p = torch.sigmoid(a * slope)
        ctx.save_for_backward(p)
        ctx.slope = slope
        return (torch.rand_like(a) < p).to(a.dtype)

    @staticmethod
    def backward(ctx, g):
        (p,) = ctx.saved_tensors
        return g * ctx.slope * p * (1 - p), None


class EagerDBN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, slope: float):
        ctx.save_for_backward(a)
        ctx.slope = slope
        return (a > 0).to(a.dtype)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        p = torch.sigmoid(a * ctx.slope)
        return g * ctx.slope * p * (1 - p), None


def eager_sbn(a):
    return EagerSBN.apply(a, SLOPE)


def eager_dbn(a):
    return EagerDBN.apply(a, SLOPE)


# ---------------------------------------------------------------------------------------------
# Measurement.


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def interleaved_medians(
    cases: dict, device: str, repeats: int, warmup: int = 2, min_seconds: float = 1.0
) -> dict:
    """Median wall time in seconds of each case, a (run, setup) pair: run(setup()) is timed,
    setup (untimed, may be None) makes run's argument.

    The cases run in rounds, each case once per round, so that changes in the load of a shared
    machine hit every case alike. At least `repeats` rounds; more, up to 500, while the rounds
    so far took under `min_seconds` (which steadies the medians of fast cases).
    """
    for _ in range(warmup):
        for run, setup in cases.values():
            run(setup() if setup is not None else None)
    times: dict = {label: [] for label in cases}
    started = time.perf_counter()
    rounds = 0
    while rounds < repeats or (time.perf_counter() - started < min_seconds and rounds < 500):
        for label, (run, setup) in cases.items():
            state = setup() if setup is not None else None
            _sync(device)
            start = time.perf_counter()
            run(state)
            _sync(device)
            times[label].append(time.perf_counter() - start)
        rounds += 1
    return {label: statistics.median(values) for label, values in times.items()}


def _resident_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_extra_mib(run, device: str) -> float:
    """Extra peak memory of one run(): allocator peak on CUDA, resident set peak on the CPU."""
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        run(None)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # resets VmHWM (the peak resident set) to the current RSS
    except OSError:
        return math.nan
    base = _resident_kib("VmRSS")
    run(None)
    return max(0, _resident_kib("VmHWM") - base) / 1024


@contextlib.contextmanager
def glibc_keeps_pages():
    """Serve every allocation from glibc's heap and keep freed memory mapped, so that a new
    tensor reuses resident pages instead of faulting in fresh ones: what is left is the
    kernel's own time. Does nothing where glibc's mallopt is not available."""
    libc_name = ctypes.util.find_library("c")
    mallopt = getattr(ctypes.CDLL(libc_name), "mallopt", None) if libc_name else None
    m_trim_threshold, m_mmap_max = -1, -4
    if mallopt is None:
        yield False
        return
    mallopt(m_mmap_max, 0)
    mallopt(m_trim_threshold, 2**30)
    try:
        yield True
    finally:
        mallopt(m_mmap_max, 65536)  # glibc's defaults
        mallopt(m_trim_threshold, 128 * 1024)


def parse_size(text: str) -> tuple[int, ...]:
    if "x" in text:
        return tuple(int(part) for part in text.split("x"))
    return (int(float(text)),)


PHASES = ("fwd", "bwd", "fwd+bwd")


def bench_size(shape, device: str, repeats: int, compiled: dict) -> dict:
    n = math.prod(shape)
    a = torch.randn(shape, device=device).requires_grad_()
    a_plain = a.detach()
    g = torch.randn(shape, device=device)
    dst = torch.empty_like(a_plain)
    slope_tensor = torch.tensor(SLOPE, dtype=torch.float64)
    seed = torch.tensor(12345, device=device)

    def sigmoid_fwdbwd(_):
        a.grad = None
        torch.sigmoid(a).backward(g)

    cases = {
        "copy_": (lambda _: dst.copy_(a_plain), None),
        "clone": (lambda _: a_plain.clone(), None),
        "sigmoid": (sigmoid_fwdbwd, None),
    }
    impls = {
        "SBN": {
            "eager": eager_sbn,
            "compiled": compiled["SBN"],
            "native": lambda x: stochastic_binary(x, "sigmoid", SLOPE),
        },
        "DBN": {
            "eager": eager_dbn,
            "compiled": compiled["DBN"],
            "native": lambda x: deterministic_binary(x, "sigmoid", SLOPE),
        },
    }
    peaks = {}
    raw_cases = {}
    for neuron, by_impl in impls.items():
        for impl, forward in by_impl.items():

            def fwd(_, forward=forward):
                return forward(a)

            def make_graph(forward=forward):
                a.grad = None
                return forward(a)

            def bwd(y):
                y.backward(g)

            def fwdbwd(_, forward=forward):
                a.grad = None
                forward(a).backward(g)

            cases[(neuron, impl, "fwd")] = (fwd, None)
            cases[(neuron, impl, "bwd")] = (bwd, make_graph)
            cases[(neuron, impl, "fwd+bwd")] = (fwdbwd, None)
            peaks[(neuron, impl)] = fwdbwd

        # The op alone: no autograd, no seed drawing, no argument checks in Python.
        op_seed = seed if neuron == "SBN" else None

        def raw_fwd(_, op_seed=op_seed):
            return _ops.threshold_sample(a_plain, slope_tensor, op_seed, "sigmoid", 0.0)

        def raw_bwd(_):
            return _ops.threshold_sample_backward(g, a_plain, slope_tensor, "sigmoid", 0.0)

        def raw_both(_, raw_fwd=raw_fwd):
            raw_fwd(None)
            raw_bwd(None)

        for phase, run in zip(PHASES, (raw_fwd, raw_bwd, raw_both)):
            raw_cases[(neuron, "raw op", phase)] = (run, None)
        peaks[(neuron, "raw op")] = raw_both

    cases.update(raw_cases)
    medians = interleaved_medians(cases, device, repeats)
    # Before the warm-page runs, which leave freed memory resident and would hide the peaks.
    peak_mib = {}
    for label, run in peaks.items():
        a.grad = None  # the memory of the previous run's gradient is not part of the peak
        peak_mib[label] = peak_extra_mib(run, device)
    a.grad = None
    if device == "cpu" and n * 4 >= 32 * 2**20:
        warm_cases = {
            (neuron, "raw warm", phase): case for (neuron, _, phase), case in raw_cases.items()
        }
        warm_cases["copy_ warm"] = cases["copy_"]
        with glibc_keeps_pages():
            medians.update(interleaved_medians(warm_cases, device, repeats))

    result = {
        "n": n,
        "copy_gbs": 8 * n / medians["copy_"] / 1e9,
        "clone_gbs": 8 * n / medians["clone"] / 1e9,
        "sigmoid_fwdbwd_ms": medians["sigmoid"] * 1e3,
        "rows": [],
    }
    if "copy_ warm" in medians:
        result["copy_warm_gbs"] = 8 * n / medians["copy_ warm"] / 1e9
    labels = [(neuron, impl) for neuron in impls for impl in (*impls[neuron], "raw op", "raw warm")]
    for neuron, impl in labels:
        if (neuron, impl, "fwd") not in medians:
            continue
        times = {phase: medians[(neuron, impl, phase)] for phase in PHASES}
        result["rows"].append((neuron, impl, times, peak_mib.get((neuron, impl), math.nan)))
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--sizes", nargs="+", default=["64x784", "1e6", "16e6", "64e6"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    info = binary_neurons.backend_info()
    print(info)
    print(
        f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
        f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    compiled = {
        "SBN": torch.compile(eager_sbn, dynamic=True),
        "DBN": torch.compile(eager_dbn, dynamic=True),
    }
    results = {}
    header = (
        f"{'size':>8} {'neuron':>6} {'impl':>8} {'fwd ms':>9} {'bwd ms':>9} {'f+b ms':>9} "
        f"{'fwd GB/s':>9} {'bwd GB/s':>9} {'f+b GB/s':>9} {'peak MiB':>9}"
    )
    print(header)
    print("-" * len(header))
    for text in args.sizes:
        shape = parse_size(text)
        result = bench_size(shape, args.device, args.repeats, compiled)
        results[text] = result
        n = result["n"]
        for neuron, impl, times, peak in result["rows"]:
            rates = [BYTES_PER_ELEMENT[k] * n / times[k] / 1e9 for k in ("fwd", "bwd", "fwd+bwd")]
            print(
                f"{text:>8} {neuron:>6} {impl:>8} "
                + " ".join(f"{times[k] * 1e3:9.3f}" for k in ("fwd", "bwd", "fwd+bwd"))
                + " "
                + " ".join(f"{r:9.2f}" for r in rates)
                + f" {peak:9.1f}"
            )
        warm = (
            f" (with resident pages {result['copy_warm_gbs']:.2f} GB/s)"
            if "copy_warm_gbs" in result
            else ""
        )
        print(
            f"{text:>8} copy_ {result['copy_gbs']:.2f} GB/s{warm}, clone"
            f" {result['clone_gbs']:.2f} GB/s, torch.sigmoid fwd+bwd"
            f" {result['sigmoid_fwdbwd_ms']:.3f} ms"
        )
    print(
        f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    report_targets(results)


def _row(result, neuron, impl):
    for row_neuron, row_impl, times, _ in result["rows"]:
        if (row_neuron, row_impl) == (neuron, impl):
            return times
    raise KeyError((neuron, impl))


def report_targets(results: dict) -> None:
    """Print PASS/MISS for the project's CPU performance targets (sizes that were run)."""
    checks = []

    def ratio(result, neuron, baseline, phase="fwd+bwd"):
        return _row(result, neuron, baseline)[phase] / _row(result, neuron, "native")[phase]

    for key, eager_factor in (("1e6", 10), ("16e6", 4)):
        if key in results:
            r = results[key]
            for neuron, baseline, factor in (
                ("SBN", "eager", eager_factor),
                ("SBN", "compiled", 2),
                ("DBN", "compiled", 1),
            ):
                label = f"{neuron} f+b native >= {factor}x {baseline} at {key}"
                checks.append((label, ratio(r, neuron, baseline), factor))
    if "64x784" in results:
        r = results["64x784"]
        for neuron in ("SBN", "DBN"):
            speed = r["sigmoid_fwdbwd_ms"] / (_row(r, neuron, "native")["fwd+bwd"] * 1e3)
            label = f"{neuron} f+b native within 1.2x of torch.sigmoid at 64x784"
            checks.append((label, speed, 1 / 1.2))
    for key, result in results.items():
        if result["n"] < 16_000_000:
            continue
        n = result["n"]
        for neuron in ("SBN", "DBN"):
            for phase in ("fwd", "bwd"):
                # The kernel alone (outputs on resident pages) against copy_; the op as users
                # call it (fresh pages for its output) against clone, which allocates the same.
                for impl, reference, reference_name in (
                    ("raw warm", "copy_warm_gbs", "copy_ bandwidth"),
                    ("raw op", "clone_gbs", "clone (allocating) bandwidth"),
                ):
                    if not any(row[:2] == (neuron, impl) for row in result["rows"]):
                        continue
                    rate = BYTES_PER_ELEMENT[phase] * n / _row(result, neuron, impl)[phase] / 1e9
                    label = f"{neuron} {impl} {phase} at {key}: >= 70% of {reference_name}"
                    checks.append((label, rate / result[reference], 0.7))
    print("\ntargets (value = measured ratio, higher is better):")
    for label, value, threshold in checks:
        verdict = "PASS" if value >= threshold else "MISS"
        print(f"  {verdict} {label}: {value:.2f} (needs {threshold:.2f})")


if __name__ == "__main__":
    main()
