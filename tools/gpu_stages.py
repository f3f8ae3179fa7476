"""What `make gpu-check` and `make gpu-bench` share: stages in child processes within a budget,
the kernel build, and the files they write.

A GPU machine is lent for short windows, so each command runs its stages one after another
under one deadline: a stage gets at most its own cap and never the time kept for the stages
after it, and a stage that runs out is stopped and recorded as timed out, so the command always
ends in time and always writes what it found. Each stage's output goes to
``.gpu-check/logs/<stage>.log``, with a timestamped line on the console as it starts and ends.

Imported by ``tools/gpu_check.py`` and ``tools/gpu_bench.py``; it runs nothing itself.
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

import torch

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".gpu-check"
# The package compiles its kernels into the check's own cache, built once for all stages and
# both commands (the user's cache is left alone). Set before anything imports the package.
os.environ.setdefault("BINARY_NEURONS_CACHE_DIR", str(WORK / "kernel-cache"))

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
    """Runs stages under one deadline and records their status, time and figures."""

    def __init__(self, name: str, out: Path, rehearsal: bool, budget: float):
        self.name = name
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.logs = WORK / "logs" / name
        shutil.rmtree(self.logs, ignore_errors=True)
        self.logs.mkdir(parents=True)
        self.rehearsal = rehearsal
        self.device = "cpu" if rehearsal else "cuda"
        self.started = time.monotonic()
        self.deadline = self.started + budget
        self.figures: dict = {
            "command": name, "rehearsal": rehearsal, "budget_s": budget, "stages": {},
            "device": "CPU rehearsal" if rehearsal else torch.cuda.get_device_name(),
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "python": sys.version.split()[0],
        }
        self.env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            PYTHONUNBUFFERED="1",
        )
        self.say(f"{name}{' rehearsal' if rehearsal else ''}: {self.figures['device']}, torch "
                 f"{torch.__version__}; budget {budget:.0f} s; output in {out}")

    def say(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def timeout(self, cap: float, keep: float) -> float:
        """A stage's time limit: at most `cap`, keeping `keep` seconds for the later stages."""
        return max(20.0, min(cap, self.left() - keep))

    def run(self, stage: str, command: list[str], timeout: float, **env: str) -> tuple[bool, str]:
        """Run one stage's command; record and print its status. Returns (ok, its output)."""
        log = self.logs / f"{stage}.log"
        shown = [word if "\n" not in word else "<script>" for word in command]
        self.say(f"{stage}: {' '.join(shown)} (limit {timeout:.0f} s)")
        start = time.monotonic()
        with open(log, "w") as out:
            try:
                code = subprocess.run(
                    command, cwd=ROOT, env={**self.env, **env}, stdout=out,
                    stderr=subprocess.STDOUT, timeout=timeout, check=False,
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

    def failed_stages(self) -> list[str]:
        return [stage for stage, row in self.figures["stages"].items()
                if not row["status"].startswith(("ok", "skipped"))]

    def finish(self, details: list[str]) -> int:
        """Write figures.json, summary.md (the stage table, then `details`) and logs.txt;
        return the exit status: 1 if a stage failed or timed out."""
        self.figures["seconds"] = round(time.monotonic() - self.started, 1)
        (self.out / "figures.json").write_text(json.dumps(self.figures, indent=2) + "\n")
        (self.out / "summary.md").write_text("\n".join(self._table() + details) + "\n")
        with open(self.out / "logs.txt", "w") as logs:
            for stage in self.figures["stages"]:
                path = self.logs / f"{stage}.log"
                if path.is_file():
                    logs.write(f"===== {stage}\n{path.read_text(errors='replace')}\n")
        failed = self.failed_stages()
        self.say(f"{self.name}: {'all stages ok' if not failed else 'FAILED: ' + ', '.join(failed)}"
                 f" in {self.figures['seconds']:.0f} s; summary in {self.out / 'summary.md'}")
        return 1 if failed else 0

    def _table(self) -> list[str]:
        f = self.figures
        lines = [f"# {self.name}{' (CPU rehearsal)' if self.rehearsal else ''}", "",
                 (f"{f['device']}, torch {f['torch']}, CUDA {f['cuda']}, "
                  f"Python {f['python']}; {f['seconds']:.0f} s of a {f['budget_s']:.0f} s budget"),
                 "",
                 "| stage | status | seconds |", "|---|---|---|"]
        lines += [f"| {stage} | {row['status']} | {row['seconds']} |"
                  for stage, row in f["stages"].items()]
        if "backend" in f:
            lines += ["", "```text", *(f"{d}: {why}" for d, why in f["backend"]["reasons"].items()),
                      "```"]
        return lines


def build(check: Check, cap: float, keep: float) -> bool:
    """Compile (or load) the native kernels for this torch and device, and check that tensors
    on the device run them."""
    ok, output = check.run("build", [sys.executable, "-c", _BUILD_PROBE],
                           timeout=check.timeout(cap, keep), BINARY_NEURONS_BACKEND="native")
    if not ok:
        return False
    found = json.loads(output.strip().splitlines()[-1])
    check.figures["backend"], check.figures["build"] = found["backend"], found["build"]
    if found["backend"]["devices"][check.device] != "native":
        check.say(f"build: {check.device} tensors do not run the native kernels")
        check.figures["stages"]["build"]["status"] = f"failed: {check.device} is not native"
        return False
    record = found["build"]
    check.say(f"build: {check.device} runs the native kernels ({record['seconds']} s to compile "
              f"{', '.join(record['cuda_archs']) or 'CPU only'})")
    return True


def parser(description: str, out: str) -> argparse.ArgumentParser:
    """The options both commands take: where to write, whether to rehearse, the budget."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or out))
    parser.add_argument("--rehearsal", action="store_true",
                        help="run what needs no GPU (the default where there is none)")
    parser.add_argument("--budget", type=float, default=360,
                        help="seconds for all stages (360: it must end within 6 minutes)")
    return parser


def rehearsal_default(asked: bool) -> bool:
    """Rehearse where asked, and wherever there is no GPU."""
    return asked or not torch.cuda.is_available()
