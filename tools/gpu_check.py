"""The whole CUDA path checked in one command on a GPU machine, and rehearsed on a CPU.

Stages, each in a child process whose output goes to ``.gpu-check/logs/<stage>.log``, with a
timestamped line as each starts and ends:

1. ``build``: compile the native kernels for this torch and the present GPU (into
   ``.gpu-check/kernel-cache``) and check that CUDA tensors run them;
2. ``tests-native``, ``tests-python``: the CUDA tests (``pytest -m cuda``) on both backends;
3. ``sanitizer``: compute-sanitizer's memcheck over ``tools/kernel_driver.py``, then racecheck
   and initcheck on its quick version while time allows;
4. ``benchmark``: ``benchmarks/bench_cuda.py``; ``benchmark-backward``: each estimator's
   backward (``benchmarks/bench_backward.py``);
5. ``binarygan``: the main preset (``mlp-wgangp-sbn``) for 1,000 generator steps on the real
   MNIST test digits, projected to the paper's 21,860 steps.

``OUT`` receives four files (the GPU machine returns only a few): ``summary.md``, ``figures.json``
with every figure, ``logs.txt`` with every stage's output, and BinaryGAN's ``samples.png``.
The GPU machine gets only
the repository and has no package registry, so the checkout is imported as it is (no install)
and the digits come from ``.gpu-check/data/mnist`` (``make gpu-check-data`` copies them there).

With ``--rehearsal`` (the default without a GPU) every stage does what needs no GPU: the CPU
build, the CUDA tests' collection (they skip), the kernel driver on the CPU without the
sanitizer, the benchmark on the CPU at one small size and a few training steps on the CPU.

Usage::

    make gpu-check                       # on the GPU machine; OUT=dir sets the output directory
    make gpu-check-rehearsal             # here (CI runs it)
    python tools/gpu_check.py [--rehearsal] [--out DIR] [--data-dir DIR] [--steps N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from xml.etree import ElementTree

import torch

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".gpu-check"
# The imports below load the package: its kernels go to the check's cache, built once for all
# stages (the user's cache is left alone).
os.environ.setdefault("BINARY_NEURONS_CACHE_DIR", str(WORK / "kernel-cache"))
sys.path.insert(0, str(ROOT))
from examples.binarygan.config import PRESETS  # noqa: E402
from examples.binarygan.objectives import make_objective  # noqa: E402

PRESET = "mlp-wgangp-sbn"
PAPER_G_STEPS = 21_860
DATA_DIRS = (WORK / "data" / "mnist", ROOT.parent / "shared" / "data" / "mnist")

# Imports the package (compiling its kernels if needed) and prints what runs where, and the
# record of the build that was loaded.
_BUILD_PROBE = """
import dataclasses, json, pathlib, binary_neurons
info = binary_neurons.backend_info()
record = pathlib.Path(info.library).with_name("build.json") if info.library else None
print(json.dumps({"backend": dataclasses.asdict(info),
                  "build": json.loads(record.read_text()) if record else None}))
"""


class Check:
    def __init__(self, out: Path, rehearsal: bool, budget: float):
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.logs = WORK / "logs"
        shutil.rmtree(self.logs, ignore_errors=True)
        self.logs.mkdir(parents=True)
        self.rehearsal = rehearsal
        self.deadline = time.monotonic() + budget
        self.figures: dict = {"rehearsal": rehearsal, "stages": {}}
        self.env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            PYTHONUNBUFFERED="1",
        )

    def say(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def timeout(self, cap: float, keep: float) -> float:
        """A stage's time limit: at most `cap`, keeping `keep` seconds for the later stages."""
        return max(30.0, min(cap, self.left() - keep))

    def run(self, stage: str, command: list[str], timeout: float, **env: str) -> tuple[bool, str]:
        """Run one stage's command; record and print its status. Returns (ok, its output)."""
        log = self.logs / f"{stage}.log"
        shown = [word if "\n" not in word else "<script>" for word in command]
        self.say(f"{stage}: {' '.join(shown)}")
        start = time.monotonic()
        with open(log, "w") as out:
            try:
                code = subprocess.run(
                    command, cwd=ROOT, env={**self.env, **env}, stdout=out,
                    stderr=subprocess.STDOUT, timeout=max(10.0, timeout), check=False,
                ).returncode
                status = "ok" if code == 0 else f"failed (exit status {code})"
            except subprocess.TimeoutExpired:
                status = f"timed out after {timeout:.0f} s"
        seconds = time.monotonic() - start
        self.figures["stages"][stage] = {"status": status, "seconds": round(seconds, 1)}
        self.say(f"{stage}: {status} in {seconds:.0f} s (log {log})")
        return status == "ok", log.read_text(errors="replace")

    def skip(self, stage: str, why: str) -> None:
        self.figures["stages"][stage] = {"status": f"skipped: {why}", "seconds": 0.0}
        self.say(f"{stage}: skipped: {why}")


def build(check: Check) -> bool:
    ok, output = check.run("build", [sys.executable, "-c", _BUILD_PROBE],
                           timeout=check.timeout(240, keep=200), BINARY_NEURONS_BACKEND="native")
    if not ok:
        return False
    found = json.loads(output.strip().splitlines()[-1])
    check.figures["backend"], check.figures["build"] = found["backend"], found["build"]
    device = "cpu" if check.rehearsal else "cuda"
    if found["backend"]["devices"][device] != "native":
        check.say(f"build: {device} tensors do not run the native kernels")
        check.figures["stages"]["build"]["status"] = f"failed: {device} is not native"
        return False
    record = found["build"]
    check.say(f"build: {device} runs the native kernels ({record['seconds']} s to compile "
              f"{', '.join(record['cuda_archs']) or 'CPU only'})")
    return True


def tests(check: Check) -> None:
    for backend, cap, keep in (("native", 150, 200), ("python", 90, 170)):
        stage = f"tests-{backend}"
        report = check.logs / f"{stage}.xml"
        check.run(stage, [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests",
                          "-p", "no:cacheprovider", f"--junitxml={report}"],
                  timeout=check.timeout(cap, keep), BINARY_NEURONS_BACKEND=backend)
        if report.is_file():
            suite = ElementTree.parse(report).getroot().find("testsuite")
            counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors",
                                                              "skipped")}
            check.figures["stages"][stage].update(counts, failed=_failures(suite))
            check.say(f"{stage}: {counts}")


def _failures(suite: ElementTree.Element) -> list[str]:
    """Each failed test with the first line of its error, so that summary.md says what broke."""
    found = []
    for case in suite.iter("testcase"):
        for bad in (case.find("failure"), case.find("error")):
            if bad is not None:
                first = (bad.get("message") or "").strip().splitlines()[:1]
                found.append(f"{case.get('classname')}::{case.get('name')}: "
                             f"{first[0][:300] if first else '(no message)'}")
    return found


def sanitizer(check: Check) -> None:
    driver = [sys.executable, "tools/kernel_driver.py"]
    if check.rehearsal:
        check.run("kernel-driver", [*driver, "--device", "cpu"], timeout=check.timeout(120, 120))
        check.skip("sanitizer", "needs a GPU (the kernel driver ran on the CPU)")
        return
    tool = shutil.which("compute-sanitizer") or _in_cuda_home("compute-sanitizer")
    if tool is None:
        check.skip("sanitizer", "compute-sanitizer not found")
        return
    # memcheck always; racecheck and initcheck (on fewer sizes) only with time to spare.
    for name, extra, spare in (("memcheck", [], 0), ("racecheck", ["--quick"], 120),
                               ("initcheck", ["--quick"], 120)):
        if check.left() < spare + 150:
            check.skip(f"sanitizer-{name}", f"only {check.left():.0f} s left")
            continue
        _, output = check.run(
            f"sanitizer-{name}",
            [tool, "--tool", name, "--error-exitcode", "9", "--print-limit", "20", *driver, *extra],
            timeout=check.timeout(120, keep=130),
            PYTORCH_NO_CUDA_MEMORY_CACHING="1", BINARY_NEURONS_BACKEND="native",
        )
        summary = [line for line in output.splitlines()
                   if "ERROR SUMMARY" in line or "RACECHECK SUMMARY" in line]
        check.figures["stages"][f"sanitizer-{name}"]["summary"] = summary[-1] if summary else None


def _in_cuda_home(name: str) -> str | None:
    """A tool of the CUDA toolkit torch's extension builder uses (CUDA_HOME, nvcc's folder)."""
    from torch.utils.cpp_extension import CUDA_HOME

    path = Path(CUDA_HOME or "", "bin", name)
    return str(path) if CUDA_HOME and path.is_file() else None


def benchmark(check: Check) -> None:
    figures = WORK / "benchmark.json"
    command = [sys.executable, "benchmarks/bench_cuda.py", "--json", str(figures)]
    if check.rehearsal:
        command += ["--device", "cpu", "--sizes", "1e5", "--dtypes", "float32", "--repeats", "3"]
    else:
        command += ["--repeats", "10"]
    check.run("benchmark", command, timeout=check.timeout(150, keep=60))
    if figures.is_file():
        check.figures["benchmark"] = json.loads(figures.read_text())
    # Each estimator's backward (the Gumbel one regenerates its uniforms): a table in the log.
    sizes = ["1e5"] if check.rehearsal else ["16e6", "64e6"]
    check.run("benchmark-backward",
              [sys.executable, "benchmarks/bench_backward.py", "--device",
               "cpu" if check.rehearsal else "cuda", "--sizes", *sizes],
              timeout=check.timeout(40, keep=50))


def binarygan(check: Check, data_dir: Path | None, steps: int) -> None:
    if data_dir is None:
        where = " or ".join(map(str, DATA_DIRS))
        check.skip("binarygan", f"no MNIST digits in {where} (make gpu-check-data)")
        return
    run_dir = WORK / "binarygan-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    device = "cpu" if check.rehearsal else "cuda"
    ok, _ = check.run(
        "binarygan",
        [sys.executable, "-m", "examples.binarygan", "train", "--preset", PRESET,
         "--device", device, "--data-dir", str(data_dir), "--max-steps", str(steps),
         "--out", str(run_dir), "--no-progress"],
        timeout=check.timeout(240, keep=5),
    )
    log = run_dir / "log.jsonl"
    if not ok or not log.is_file():
        return
    # The whole run as a user sees it (figures and checkpoints included), from the run's log.
    seconds = json.loads(log.read_text().splitlines()[-1])["elapsed"]
    schedule = make_objective(PRESETS[PRESET])
    work = sum(1 + schedule.critic_steps(step) for step in range(steps))
    paper_work = sum(1 + schedule.critic_steps(step) for step in range(PAPER_G_STEPS))
    timing = {
        "device": device, "g_steps": steps, "seconds": round(seconds, 1),
        "d_steps": work - steps, "paper_g_steps": PAPER_G_STEPS,
        "paper_d_steps": paper_work - PAPER_G_STEPS,
        # Time per update (G or D) taken as constant: the schedule's D steps dominate.
        "projected_paper_seconds": round(seconds * paper_work / work),
    }
    check.figures["binarygan"] = timing
    if (run_dir / "samples.png").is_file():
        shutil.copy(run_dir / "samples.png", check.out / "samples.png")
    check.say(f"binarygan: {steps} G steps ({timing['d_steps']} D steps) in {seconds:.1f} s; "
              f"the paper's {PAPER_G_STEPS} G steps: about "
              f"{timing['projected_paper_seconds'] / 60:.0f} min")


def summary(check: Check) -> str:
    f = check.figures
    lines = [f"# GPU check{' (CPU rehearsal)' if check.rehearsal else ''}", "",
             f"{f['device']}, torch {f['torch']}, CUDA {f['cuda']}, Python {f['python']}", "",
             "| stage | status | seconds |", "|---|---|---|"]
    lines += [f"| {stage} | {row['status']} | {row['seconds']} |"
              for stage, row in f["stages"].items()]
    if "backend" in f:
        lines += ["", "```text", *(f"{d}: {why}" for d, why in f["backend"]["reasons"].items()),
                  "```"]
    for stage, row in f["stages"].items():
        if "tests" in row:
            lines.append(f"- {stage}: {row['tests']} tests, {row['failures']} failures, "
                         f"{row['errors']} errors, {row['skipped']} skipped")
            lines += [f"  - {failure}" for failure in row.get("failed", [])]
        if row.get("summary"):
            lines.append(f"- {stage}: {row['summary']}")
    if f.get("benchmark", {}).get("targets"):
        lines += ["", "| target | measured | needed | |", "|---|---|---|---|"]
        lines += [f"| {t['check']} | {t['value']:.2f} | {t['needed']} | "
                  f"{'PASS' if t['pass'] else 'MISS'} |" for t in f["benchmark"]["targets"]]
    if "binarygan" in f:
        b = f["binarygan"]
        lines += ["", (f"BinaryGAN `{PRESET}` on {b['device']}: {b['g_steps']} G steps "
                       f"({b['d_steps']} D steps) in {b['seconds']:.1f} s; projected for the "
                       f"paper's {b['paper_g_steps']} G steps ({b['paper_d_steps']} D steps): "
                       f"{b['projected_paper_seconds'] / 60:.1f} min.")]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu-check-out"))
    parser.add_argument("--rehearsal", action="store_true",
                        help="run what needs no GPU (the default where there is none)")
    parser.add_argument("--data-dir", type=Path, help="MNIST IDX files (default: "
                        + " or ".join(map(str, DATA_DIRS)) + ")")
    parser.add_argument("--steps", type=int, help="BinaryGAN G steps (1000; rehearsal 3)")
    parser.add_argument("--budget", type=float, default=460,
                        help="seconds for all stages (460: the check must end within 8 minutes)")
    args = parser.parse_args(argv)
    rehearsal = args.rehearsal or not torch.cuda.is_available()
    check = Check(args.out.resolve(), rehearsal, args.budget)
    check.figures.update(
        device=torch.cuda.get_device_name() if not rehearsal else "CPU rehearsal",
        torch=torch.__version__, cuda=torch.version.cuda, python=sys.version.split()[0],
    )
    check.say(f"gpu-check{' rehearsal' if rehearsal else ''}: {check.figures['device']}, torch "
              f"{torch.__version__}; output in {check.out}")
    data_dir = args.data_dir or next((d for d in DATA_DIRS if d.is_dir()), None)
    if build(check):
        tests(check)
        sanitizer(check)
        benchmark(check)
        binarygan(check, data_dir, args.steps or (3 if rehearsal else 1000))
    (check.out / "figures.json").write_text(json.dumps(check.figures, indent=2) + "\n")
    (check.out / "summary.md").write_text(summary(check))
    with open(check.out / "logs.txt", "w") as logs:
        for stage in check.figures["stages"]:
            if (check.logs / f"{stage}.log").is_file():
                logs.write(f"===== {stage}\n{(check.logs / f'{stage}.log').read_text()}\n")
    failed = [s for s, row in check.figures["stages"].items() if not row["status"].startswith(
        ("ok", "skipped"))]
    check.say(f"gpu-check: {'all stages ok' if not failed else 'FAILED: ' + ', '.join(failed)}; "
              f"summary in {check.out / 'summary.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
