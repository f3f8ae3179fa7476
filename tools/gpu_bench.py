"""What performance work needs from a GPU machine, in one short window; rehearsed on a CPU.

Stages, under one budget (6 minutes by default; see ``tools/gpu_stages.py``):

1. ``build``: as in ``make gpu-check`` (reused from its cache when that ran first);
2. ``benchmark``: ``benchmarks/bench_cuda.py``, every size and dtype, with its targets;
3. ``benchmark-backward``: each estimator's backward (``benchmarks/bench_backward.py``);
4. ``binarygan``: the main preset (``mlp-wgangp-sbn``) for 1,000 generator steps on the real
   MNIST digits, timed as a user runs it, and projected to the paper's 21,860 steps.

``summary.md`` has the stage table, the benchmark's targets and the BinaryGAN timing;
``figures.json`` the benchmark's full table; ``samples.png`` the BinaryGAN run's samples.

The digits come from ``.gpu-check/data/mnist`` (``make gpu-check-data`` copies them there, to
be carried to the GPU machine) or ``../shared/data/mnist``. With ``--rehearsal`` (the default
without a GPU) every stage runs on the CPU at a tiny size: one benchmark size, three steps.

Usage::

    make gpu-bench                       # on the GPU machine; OUT=dir sets the output directory
    make gpu-bench-rehearsal             # here (CI runs it)
    python tools/gpu_bench.py [--rehearsal] [--out DIR] [--data-dir DIR] [--steps N]
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from gpu_stages import ROOT, WORK, Check, build, parser, rehearsal_default

sys.path.insert(0, str(ROOT))
from examples.binarygan.config import PRESETS  # noqa: E402
from examples.binarygan.objectives import make_objective  # noqa: E402

PRESET = "mlp-wgangp-sbn"
PAPER_G_STEPS = 21_860
DATA_DIRS = (WORK / "data" / "mnist", ROOT.parent / "shared" / "data" / "mnist")


def benchmark(check: Check) -> None:
    figures = WORK / "benchmark.json"
    figures.unlink(missing_ok=True)
    command = [sys.executable, "benchmarks/bench_cuda.py", "--json", str(figures)]
    if check.rehearsal:
        command += ["--device", "cpu", "--sizes", "1e5", "--dtypes", "float32", "--repeats", "3"]
    else:
        command += ["--repeats", "10"]
    check.run("benchmark", command, timeout=check.timeout(150, keep=150))
    if figures.is_file():
        check.figures["benchmark"] = json.loads(figures.read_text())
    # Each estimator's backward (the Gumbel one regenerates its uniforms): a table in the log.
    sizes = ["1e5"] if check.rehearsal else ["16e6", "64e6"]
    check.run("benchmark-backward",
              [sys.executable, "benchmarks/bench_backward.py", "--device", check.device,
               "--sizes", *sizes],
              timeout=check.timeout(40, keep=120))


def binarygan(check: Check, data_dir: Path | None, steps: int) -> None:
    if data_dir is None:
        where = " or ".join(map(str, DATA_DIRS))
        check.skip("binarygan", f"no MNIST digits in {where} (make gpu-check-data)")
        return
    run_dir = WORK / "binarygan-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    ok, _ = check.run(
        "binarygan",
        [sys.executable, "-m", "examples.binarygan", "train", "--preset", PRESET,
         "--device", check.device, "--data-dir", str(data_dir), "--max-steps", str(steps),
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
        "device": check.device, "g_steps": steps, "seconds": round(seconds, 1),
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


def details(figures: dict) -> list[str]:
    """summary.md after the stage table: the benchmark's targets, the BinaryGAN timing."""
    lines: list[str] = []
    targets = figures.get("benchmark", {}).get("targets")
    if targets:
        lines += ["", "| target | measured | needed | |", "|---|---|---|---|"]
        lines += [f"| {t['check']} | {t['value']:.2f} | {t['needed']} | "
                  f"{'PASS' if t['pass'] else 'MISS'} |" for t in targets]
    if "binarygan" in figures:
        b = figures["binarygan"]
        lines += ["", (f"BinaryGAN `{PRESET}` on {b['device']}: {b['g_steps']} G steps "
                       f"({b['d_steps']} D steps) in {b['seconds']:.1f} s; projected for the "
                       f"paper's {b['paper_g_steps']} G steps ({b['paper_d_steps']} D steps): "
                       f"{b['projected_paper_seconds'] / 60:.1f} min.")]
    return lines


def main(argv=None) -> int:
    options = parser(__doc__.split("\n")[0], out="gpu-bench-out")
    options.add_argument("--data-dir", type=Path, help="MNIST IDX files (default: "
                         + " or ".join(map(str, DATA_DIRS)) + ")")
    options.add_argument("--steps", type=int, help="BinaryGAN G steps (1000; rehearsal 3)")
    args = options.parse_args(argv)
    rehearsal = rehearsal_default(args.rehearsal)
    check = Check("gpu-bench", args.out.resolve(), rehearsal, args.budget)
    data_dir = args.data_dir or next((d for d in DATA_DIRS if d.is_dir()), None)
    if build(check, cap=150, keep=150):
        benchmark(check)
        binarygan(check, data_dir, args.steps or (3 if rehearsal else 1000))
    return check.finish(details(check.figures))


if __name__ == "__main__":
    raise SystemExit(main())
