"""The ``experiments`` command: the paper's four experiments plus BGAN, trained and evaluated.

The paper (Dong & Yang, arXiv:1810.04714) shows figures only; here every run is evaluated with
:mod:`.evaluation` and each of its four claims gets a number that confirms or refutes it:

(a) DBN vs SBN (``mlp-wgangp-dbn``, ``mlp-wgangp-sbn``): similar quality, different p;
(b) the real-valued model (``mlp-wgangp-real``): p even more U-shaped;
(c) GAN / WGAN / WGAN-GP (``mlp-{gan,wgan,wgangp}-sbn``): WGAN like WGAN-GP, GAN mode collapse;
(d) MLP vs CNN (``cnn-wgangp-sbn`` vs ``mlp-wgangp-sbn``): the CNN has fewer artifacts;

plus discrete BGAN (``mlp-bgan``, ``cnn-bgan``) on the same data pipeline. Runs shared between
experiments are trained once, in ``OUT/runs/PRESET``; a run whose outputs exist is skipped (an
unfinished one is resumed), so the command can be re-run after an interruption. It writes
``results.md``, ``results.json``, ``results.csv`` (every metric of every run), ``samples.png``
(64 samples of every run side by side) and
``histograms.png`` (p of DBN, SBN and the real-valued model, log density).

Budgets: ``quick`` trains every run for the same number of generator steps (:data:`QUICK_STEPS`),
chosen so that the whole matrix fits in about half an hour on two CPU cores (two runs at a time,
one thread each); ``paper`` is the paper's 20 epochs per run.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import multiprocessing
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from .checkpoint import CHECKPOINT, load_checkpoint
from .config import Config, get_preset
from .evaluation import evaluate_run, load_reference
from .report import (EXPERIMENTS, GRID, build_report, csv_text, markdown, real_grid,
                     save_histogram_figure, save_sample_figure)
from .train import train

__all__ = ["BUDGETS", "run_experiments", "main_experiments"]

# Per budget: generator steps per preset (None: the paper's 20 epochs), settings applied to every
# run, and samples drawn for the evaluation. Every run of a budget trains the same number of
# generator steps, so that each comparison is on equal terms.
#
# quick: QUICK_STEPS G steps per run (on the 10,000 MNIST test digits, 156 steps per epoch),
# with the critic warm-up cut from 25 to 5 G steps for every run. The CNN runs set the pace:
# on a 2-core AVX2 machine, two runs side by side at one thread each, a CNN WGAN-GP critic
# step takes about 0.5 s and a cnn-bgan step (20 samples per z) about 4.5 s, against 30-80 ms
# for a whole MLP G step.
QUICK_STEPS = 200
BUDGETS: dict[str, dict[str, Any]] = {
    "quick": {
        "steps": {preset: QUICK_STEPS for _, presets in EXPERIMENTS.values()
                  for preset in presets},
        "settings": {"threads": 1, "warmup_steps": 5},
        "num_samples": 2000,
    },
    "paper": {
        "steps": {preset: None for _, presets in EXPERIMENTS.values() for preset in presets},
        "settings": {"threads": 1},
        "num_samples": 2000,
    },
    # Tests only (hidden from --help): two tiny steps per run.
    "smoke": {
        "steps": {preset: 2 for _, presets in EXPERIMENTS.values() for preset in presets},
        "settings": {"threads": 1, "batch_size": 16, "n_critic": 1, "n_critic_warmup": 1,
                     "warmup_steps": 0, "bgan_samples": 2, "num_samples_hist": 16,
                     "checkpoint_every": 1000},
        "num_samples": 64,
    },
}

DONE = "experiment.json"  # written in a run directory once its training has finished
METRICS = "metrics.json"
INVOCATIONS = "invocations.jsonl"


def run_configs(budget: str, data_dir: Optional[str]) -> dict[str, Config]:
    spec = BUDGETS[budget]
    configs = {}
    for preset, steps in spec["steps"].items():
        configs[preset] = get_preset(preset).replace(data_dir=data_dir, max_steps=steps,
                                                     **spec["settings"])
    return configs


def _train_worker(config: dict, out: str) -> dict:
    """Train one run (resuming it if it has a checkpoint, else starting it afresh); its console
    output goes to ``train.txt`` in the run directory. Runs in a worker process, or in this
    one."""
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    resume = (out_dir / CHECKPOINT).is_file()
    config = Config.from_dict(config)
    if resume and load_checkpoint(out_dir)["g_step"] >= (config.max_steps or float("inf")):
        # trained to the end, killed before this function returned: nothing left to train
        return {"steps": config.max_steps, "seconds": 0.0, "wall_seconds": 0.0}
    with open(out_dir / "train.txt", "a") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        started = time.perf_counter()
        summary = train(config, out_dir, resume=resume, overwrite=not resume,
                        progress=False)
        summary["wall_seconds"] = time.perf_counter() - started
    return summary


def _finished(out: Path, config: Config) -> Optional[dict]:
    """The saved summary of a finished run with these settings, else None."""
    path = out / DONE
    if not path.is_file() or not (out / CHECKPOINT).is_file():
        return None
    record = json.loads(path.read_text())
    if Config.from_dict(record["config"]).to_dict() != config.to_dict():
        return None
    return record


def _log(message: str) -> None:
    print(time.strftime("%H:%M:%S ") + message, flush=True)


def run_experiments(out: Path, budget: str = "quick", data_dir: Optional[str] = None,
                    jobs: int = 2, cache_dir: Optional[str] = None) -> dict[str, Any]:
    """Train (or skip) every run of the budget, evaluate each, write the report."""
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; expected quick or paper")
    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    started = time.perf_counter()
    out = Path(out)
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    configs = run_configs(budget, data_dir)
    for preset, config in configs.items():  # refuse to mix data sets in one --out
        done = runs_dir / preset / "config.json"
        if done.is_file():
            saved = json.loads(done.read_text())
            if saved.get("data_dir") != config.data_dir:
                raise ValueError(f"{runs_dir / preset} was trained on data_dir "
                                 f"{saved.get('data_dir')!r}, not {config.data_dir!r}; use "
                                 "another --out")
    num = BUDGETS[budget]["num_samples"]
    results: dict[str, dict[str, Any]] = {}
    pending = {}
    for preset, config in configs.items():
        record = _finished(runs_dir / preset, config)
        if record is not None:
            _log(f"{preset}: trained already ({record['steps']} G steps), skipped")
            results[preset] = {"train": record}
        else:
            pending[preset] = config

    torch.set_num_threads(1)
    reference = None

    def evaluate(preset: str) -> None:
        nonlocal reference
        run = runs_dir / preset
        metrics_path = run / METRICS
        if metrics_path.is_file() and (run / GRID).is_file():
            metrics = json.loads(metrics_path.read_text())
            if metrics["source"]["g_step"] == results[preset]["train"]["steps"]:
                results[preset]["metrics"] = metrics
                _log(f"{preset}: evaluated already, skipped")
                return
        if reference is None:
            _log("building the evaluation reference (classifier trained once, then cached)")
            reference = load_reference(data_dir, "all", cache_dir)
            _log(f"classifier held-out accuracy {reference.info['classifier_accuracy']:.4f}")
        begun = time.perf_counter()
        metrics, samples = evaluate_run(run, reference, num=num)
        metrics_path.write_text(json.dumps(metrics, indent=1) + "\n")
        np.save(run / GRID, samples[:64])
        results[preset]["metrics"] = metrics
        _log(f"{preset}: evaluated in {time.perf_counter() - begun:.0f} s: FD "
             f"{metrics['frechet_distance']:.2f}")

    def finished(preset: str, summary: dict) -> None:
        record = {"preset": preset, "steps": summary["steps"], "config": configs[preset].to_dict(),
                  "train_seconds": summary["seconds"], "wall_seconds": summary["wall_seconds"]}
        (runs_dir / preset / DONE).write_text(json.dumps(record, indent=1) + "\n")
        results[preset] = {"train": record}
        _log(f"{preset}: trained {summary['steps']} G steps in {summary['wall_seconds']:.0f} s")

    for preset in results:  # finished earlier: evaluate while nothing else runs
        evaluate(preset)
    errors = {}
    # Longest first (CNNs, then BGAN), so that two workers finish close together.
    order = sorted(pending, key=lambda p: (not p.startswith("cnn"), not p.endswith("bgan"), p))
    if jobs == 1:
        for preset in order:
            _log(f"{preset}: training ({configs[preset].max_steps or 'all'} G steps)")
            try:
                finished(preset, _train_worker(configs[preset].to_dict(),
                                               str(runs_dir / preset)))
                evaluate(preset)
            except Exception as error:  # report it and go on with the other runs
                errors[preset] = f"{type(error).__name__}: {error}"
    elif order:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
            futures = {}
            for preset in order:
                _log(f"{preset}: queued ({configs[preset].max_steps or 'all'} G steps)")
                futures[pool.submit(_train_worker, configs[preset].to_dict(),
                                    str(runs_dir / preset))] = preset
            for future in concurrent.futures.as_completed(futures):
                preset = futures[future]
                try:
                    finished(preset, future.result())
                    evaluate(preset)
                except Exception as error:
                    errors[preset] = f"{type(error).__name__}: {error}"
    for preset, error in errors.items():
        _log(f"{preset}: FAILED: {error}")
        results.pop(preset, None)

    wall = time.perf_counter() - started
    with open(out / INVOCATIONS, "a") as file:  # wall time of every invocation, for the report
        file.write(json.dumps({"wall_seconds": wall, "trained": order, "errors": errors}) + "\n")
    report = build_report(results, budget, data_dir, reference_info(results), errors, wall,
                          num)
    report["invocations"] = [json.loads(line)
                             for line in (out / INVOCATIONS).read_text().splitlines()]
    (out / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "results.md").write_text(markdown(report) + "\n")
    (out / "results.csv").write_text(csv_text(report))
    save_sample_figure(out / "samples.png", results, runs_dir, real_grid(data_dir))
    save_histogram_figure(out / "histograms.png", results)
    _log(f"wrote {out / 'results.md'}, results.json, results.csv, samples.png, "
         f"histograms.png ({wall:.0f} s)")
    return report


def reference_info(results: dict) -> dict:
    for result in results.values():
        if "metrics" in result:
            return {"real": result["metrics"]["real"], **result["metrics"]["reference"]}
    return {}


def main_experiments(out: Path, budget: str, data_dir: Optional[str], jobs: int,
                     cache_dir: Optional[str]) -> int:
    report = run_experiments(out, budget, data_dir, jobs, cache_dir)
    print(markdown(report))
    return 1 if report["errors"] else 0

