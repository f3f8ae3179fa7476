"""The CUDA path checked on a GPU machine within a short window, and rehearsed on a CPU.

Stages, in this order, under one budget (6 minutes by default; see ``tools/gpu_stages.py``):

1. ``build``: compile the native kernels for this torch and the present GPU (into
   ``.gpu-check/kernel-cache``) and check that CUDA tensors run them;
2. the CUDA tests (``pytest -m cuda``) of both backends, in three phases so that the fastest
   and most fundamental run first and a slow phase cannot starve them:
   ``core`` (bit-identity with the CPU, gradients, errors, streams, generators),
   ``compile`` (``torch.compile``), ``graphs`` (CUDA graphs and ``mode="reduce-overhead"``),
   each as ``tests-<phase>-native`` then ``tests-<phase>-python``;
3. ``sanitizer-memcheck``: compute-sanitizer's memcheck over ``tools/kernel_driver.py --quick``.

``summary.md`` has the stage table, the test counts per stage, every failing test's error in
full (its type and message, then the last frames of its traceback) and the 20 slowest tests,
so that the next window knows what broke and what to cut. ``figures.json`` holds the same as
data, ``logs.txt`` every stage's output. The benchmarks and the BinaryGAN timing are
``make gpu-bench`` (``tools/gpu_bench.py``).

The GPU machine has its own torch and no package registry, so the checkout is imported as it
is (no install). With ``--rehearsal`` (the default without a GPU) every stage does what needs no
GPU: the CPU build, the CUDA tests' collection (they skip, saying why) and the kernel driver on
the CPU without the sanitizer.

Usage::

    make gpu-check                       # on the GPU machine; OUT=dir sets the output directory
    make gpu-check-rehearsal             # here (CI runs it)
    python tools/gpu_check.py [--rehearsal] [--out DIR] [--budget SECONDS]
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from xml.etree import ElementTree

from gpu_stages import Check, build, parser, rehearsal_default

# The test phases, each a marker expression, with the seconds it may take at most on an H200
# and the files to run first within it (the rest of tests/ follows in pytest's order).
PHASES = (
    ("core", "cuda and not compile and not cudagraphs", 90,
     ["tests/cuda/test_cuda.py", "tests/op/test_native.py", "tests/library/test_functional.py"]),
    ("compile", "cuda and compile and not cudagraphs", 45, []),
    # About ten Inductor compilations with the native kernels (the pure-PyTorch ones skip most).
    ("graphs", "cuda and cudagraphs", 120, ["tests/cuda/test_cuda_graphs.py"]),
)
BACKENDS = ("native", "python")
SANITIZER_CAP = 60
# What a failure's entry in summary.md keeps of its traceback.
TRACEBACK_LINES = 40
SLOWEST = 20


def tests(check: Check) -> None:
    later = [(phase, backend) for phase in PHASES for backend in BACKENDS]
    for index, (phase, backend) in enumerate(later):
        name, marks, cap, first = phase
        # Keep for each later stage a third of its cap, and for the sanitizer its cap.
        keep = sum(p[2] / 3 for p, _ in later[index + 1:]) + SANITIZER_CAP
        stage = f"tests-{name}-{backend}"
        report = check.logs / f"{stage}.xml"
        check.run(stage, [sys.executable, "-m", "pytest", "-q", "-m", marks, *first, "tests",
                          "--tb=short", "-p", "no:cacheprovider", f"--junitxml={report}"],
                  timeout=check.timeout(cap, keep), BINARY_NEURONS_BACKEND=backend)
        if report.is_file():
            check.figures["stages"][stage].update(read_junit(report))
            row = check.figures["stages"][stage]
            check.say(f"{stage}: {row['tests']} tests, {len(row['failed'])} failed, "
                      f"{row['skipped']} skipped")


def read_junit(path: Path) -> dict:
    """Counts, every failed test with its error, and every test's duration, from pytest's
    JUnit XML report."""
    suite = ElementTree.parse(path).getroot()
    suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
    failed, durations = [], []
    for case in suite.iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        durations.append((name, float(case.get("time") or 0.0)))
        for bad in (case.find("failure"), case.find("error")):
            if bad is not None:
                failed.append({"test": name, "kind": bad.tag,
                               "message": (bad.get("message") or "").strip(),
                               "traceback": (bad.text or "").rstrip()})
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    return {**counts, "failed": failed, "durations": durations}


def sanitizer(check: Check) -> None:
    driver = [sys.executable, "tools/kernel_driver.py", "--quick"]
    if check.rehearsal:
        check.run("kernel-driver", [*driver, "--device", "cpu"], timeout=check.timeout(120, 0))
        check.skip("sanitizer-memcheck", "needs a GPU (the kernel driver ran on the CPU)")
        return
    tool = shutil.which("compute-sanitizer") or _in_cuda_home("compute-sanitizer")
    if tool is None:
        check.skip("sanitizer-memcheck", "compute-sanitizer not found")
        return
    _, output = check.run(
        "sanitizer-memcheck",
        [tool, "--tool", "memcheck", "--error-exitcode", "9", "--print-limit", "20", *driver],
        timeout=check.timeout(SANITIZER_CAP, keep=0),
        PYTORCH_NO_CUDA_MEMORY_CACHING="1", BINARY_NEURONS_BACKEND="native",
    )
    summary = [line for line in output.splitlines() if "ERROR SUMMARY" in line]
    check.figures["stages"]["sanitizer-memcheck"]["summary"] = summary[-1] if summary else None


def _in_cuda_home(name: str) -> str | None:
    """A tool of the CUDA toolkit torch's extension builder uses (CUDA_HOME, nvcc's folder)."""
    from torch.utils.cpp_extension import CUDA_HOME

    path = Path(CUDA_HOME or "", "bin", name)
    return str(path) if CUDA_HOME and path.is_file() else None


def details(figures: dict) -> list[str]:
    """summary.md after the stage table: test counts, failures in full, the slowest tests."""
    lines: list[str] = []
    stages = figures["stages"]
    rows = [(stage, row) for stage, row in stages.items() if "tests" in row]
    if rows:
        lines += ["", "| tests | run | failed | skipped |", "|---|---|---|---|"]
        lines += [f"| {stage} | {row['tests']} | {len(row['failed'])} | {row['skipped']} |"
                  for stage, row in rows]
    for stage, row in stages.items():
        if row.get("summary"):
            lines += ["", f"{stage}: {row['summary']}"]
    failures = [(stage, failure) for stage, row in rows for failure in row["failed"]]
    if failures:
        lines += ["", f"## Failures ({len(failures)})"]
    for stage, failure in failures:
        frames = failure["traceback"].splitlines()
        shown = frames[-TRACEBACK_LINES:]
        cut = f"(the last {len(shown)} of {len(frames)} lines)" if len(frames) > len(shown) else ""
        lines += ["", f"### {failure['test']} ({stage}, {failure['kind']})", "",
                  "```text", failure["message"] or "(no message)", "```", "",
                  f"Traceback {cut}".rstrip() + ":", "", "```text", *shown, "```"]
    durations = sorted(((seconds, test, stage) for stage, row in rows
                        for test, seconds in row["durations"]), reverse=True)[:SLOWEST]
    if durations:
        lines += ["", f"## The {len(durations)} slowest tests", "",
                  "| seconds | test | stage |", "|---|---|---|"]
        lines += [f"| {seconds:.2f} | {test} | {stage} |" for seconds, test, stage in durations]
    return lines


def main(argv=None) -> int:
    args = parser(__doc__.split("\n")[0], out="gpu-check-out").parse_args(argv)
    check = Check("gpu-check", args.out.resolve(), rehearsal_default(args.rehearsal),
                  args.budget)
    if build(check, cap=150, keep=sum(p[2] for p in PHASES) + SANITIZER_CAP):
        tests(check)
        sanitizer(check)
    return check.finish(details(check.figures))


if __name__ == "__main__":
    raise SystemExit(main())
