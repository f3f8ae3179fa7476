"""Tests of the BinaryGAN example's run directories, through its command line: bad checkpoints,
training over a run (refused, or --overwrite), --resume without a checkpoint, the log of a
resumed run, and running the example from another working directory.

Every error is checked as the command line reports it: exit status 2 and one line
``error: ...`` on stderr, no traceback.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from examples.binarygan.__main__ import main  # noqa: E402
from examples.binarygan.checkpoint import (CHECKPOINT, CONFIG, LOG, RunError,  # noqa: E402
                                           load_checkpoint)
from tests.conftest import synthetic_digits, write_idx  # noqa: E402

pytestmark = [pytest.mark.example, pytest.mark.usefixtures("one_thread")]

PRESET = "mlp-wgan-sbn"  # the cheapest step: one plain D update, no penalty


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """64 synthetic images with labels as MNIST-format test files (8 batches of 8)."""
    directory = tmp_path_factory.mktemp("tiny")
    write_idx(directory / "t10k-images-idx3-ubyte.gz", synthetic_digits(64), compress=True)
    write_idx(directory / "t10k-labels-idx1-ubyte", np.arange(64, dtype=np.uint8) % 10)
    return directory


def train_args(data_dir: Path, out: Optional[Path] = None, steps: int = 2,
               preset: str = PRESET) -> list[str]:
    """``train`` of a tiny run: ``steps`` G steps of batch 8, one D step each, a log record
    per step."""
    args = ["train", "--preset", preset, "--data-dir", str(data_dir), "--max-steps", str(steps),
            "--batch-size", "8", "--n-critic", "1", "--n-critic-warmup", "1", "--log-every",
            "1", "--threads", "1", "--no-progress"]
    return args + (["--out", str(out)] if out is not None else [])


@pytest.fixture(scope="module")
def finished_run(tiny_dir, tmp_path_factory) -> Path:
    """A tiny run of 2 G steps (checkpoint, config, log and figures); copy it to change it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    threads = torch.get_num_threads()
    try:
        assert main(train_args(tiny_dir, out)) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def error_line(capsys) -> str:
    """The one line a failed command printed: ``error: ...`` on stderr, no traceback."""
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


def log_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / LOG).read_text().splitlines()]


# ---- bad checkpoints ---------------------------------------------------------------------------

BAD_CHECKPOINTS = {
    # case: (what to write over checkpoint.pt, None to delete it; what the error says)
    "missing": (None, r"no checkpoint\.pt|checkpoint\.pt not found"),
    "empty": (lambda good, path: path.write_bytes(b""), r"is empty \(0 bytes\)"),
    "truncated": (lambda good, path: path.write_bytes(good[:1000]), "is truncated or corrupt"),
    "foreign": (lambda good, path: torch.save({"a": 1}, path),
                "is not a checkpoint of this example"),
}


def command(name: str, run: Path, tmp_path: Path) -> list[str]:
    return {
        "generate": ["generate", str(run), "--num", "4", "--out", str(tmp_path / "s.npy")],
        "evaluate": ["evaluate", str(run), "--num", "4", "--out", str(tmp_path / "m.json"),
                     "--cache-dir", str(tmp_path / "cache")],
        "train --resume": ["train", "--out", str(run), "--resume", "--max-steps", "4",
                           "--no-progress"],
    }[name]


@pytest.mark.parametrize("case", list(BAD_CHECKPOINTS))
@pytest.mark.parametrize("name", ["generate", "evaluate", "train --resume"])
def test_bad_checkpoint_is_one_line_error(finished_run, tmp_path, capsys, name, case):
    run = copy_run(finished_run, tmp_path / "run")
    write, message = BAD_CHECKPOINTS[case]
    path = run / CHECKPOINT
    good = path.read_bytes()
    if write is None:
        path.unlink()
    else:
        write(good, path)
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert main(command(name, run, tmp_path)) == 2
    line = error_line(capsys)
    assert re.search(message, line) and str(run) in line, line
    # nothing written, nothing changed: no outputs, the run directory as it was
    assert not (tmp_path / "s.npy").exists() and not (tmp_path / "m.json").exists()
    assert not (tmp_path / "cache").exists()  # failed before the classifier was trained
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before
    with pytest.raises(RunError, match=message):
        load_checkpoint(run)


def test_checkpoint_of_an_older_version(finished_run, tmp_path, capsys):
    """A checkpoint of the example before its format was versioned (with numpy and Python RNG
    states, which weights_only loading refuses) is intact: it is reported as not this
    example's checkpoint, not as truncated or corrupt."""
    run = copy_run(finished_run, tmp_path / "run")
    state = torch.load(run / CHECKPOINT, weights_only=True)
    del state["format"]
    state["rng"] = {"processes": state["rng"], "numpy": np.random.get_state(),
                    "python": random.getstate()}
    torch.save(state, run / CHECKPOINT)
    assert main(command("generate", run, tmp_path)) == 2
    line = error_line(capsys)
    assert "is not a checkpoint of this example" in line, line


@pytest.mark.parametrize("content, message", [
    ('{"arch": "mlp", "objective"', "is not a valid run configuration"),  # cut short
    ('{"arch": "rnn"}', r"is not a valid run configuration \(arch must be one of"),
    ("[1, 2]", "is not a valid run configuration"),  # JSON, but not the settings
])
def test_bad_config_is_one_line_error(finished_run, tmp_path, capsys, content, message):
    run = copy_run(finished_run, tmp_path / "run")
    (run / CONFIG).write_text(content)
    for name in ("generate", "train --resume"):
        assert main(command(name, run, tmp_path)) == 2
        line = error_line(capsys)
        assert re.search(message, line) and str(run / CONFIG) in line, line
    assert (run / CONFIG).read_text() == content


def test_out_that_is_a_file_is_one_line_error(tiny_dir, tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    assert main(train_args(tiny_dir, path, steps=1)) == 2
    assert str(path) in error_line(capsys)
    assert path.read_text() == "mine"


# ---- training into a directory that holds a run ------------------------------------------------


def test_train_refuses_a_run_directory_and_overwrite_replaces_it(tiny_dir, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")  # a directory without a run may be trained into
    assert main(train_args(tiny_dir, out, steps=2)) == 0
    assert log_steps(out) == [1, 2] and (out / "samples" / "binary_000002.png").is_file()
    capsys.readouterr()
    before = {name: (out / name).read_bytes() for name in (CONFIG, LOG, CHECKPOINT)}

    new = train_args(tiny_dir, out, steps=1, preset="mlp-gan-dbn")
    assert main(new) == 2
    line = error_line(capsys)
    assert f"{out} already holds a run" in line
    assert "--resume" in line and "--overwrite" in line
    assert {name: (out / name).read_bytes() for name in before} == before  # untouched

    assert main(new + ["--overwrite"]) == 0
    config = json.loads((out / CONFIG).read_text())
    assert (config["preset"], config["objective"], config["max_steps"]) == ("mlp-gan-dbn",
                                                                             "gan", 1)
    assert log_steps(out) == [1]  # the old log is gone, not appended to
    checkpoint = load_checkpoint(out)
    assert checkpoint["g_step"] == 1 and checkpoint["config"]["preset"] == "mlp-gan-dbn"
    assert not (out / "samples" / "binary_000002.png").exists()  # the old run's figures too
    assert (out / "samples" / "binary_000001.png").is_file()
    assert (out / "notes.txt").read_text() == "mine"  # what is not the run's is kept


def test_a_run_without_a_checkpoint_is_still_a_run(tiny_dir, tmp_path, capsys):
    """A run killed before its first checkpoint (a config and a log) is refused too, and
    --resume cannot continue it."""
    out = tmp_path / "run"
    out.mkdir()
    (out / LOG).write_text('{"step": 1}\n')
    assert main(train_args(tiny_dir, out)) == 2
    assert "already holds a run" in error_line(capsys)
    assert main(train_args(tiny_dir, out) + ["--resume"]) == 2
    line = error_line(capsys)
    assert "--resume" in line and "without a checkpoint" in line
    assert (out / LOG).read_text() == '{"step": 1}\n' and not (out / CHECKPOINT).exists()


# ---- --resume --------------------------------------------------------------------------------


def test_resume_without_a_run_is_an_error(tiny_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default run directory would be runs/PRESET here
    assert main(train_args(tiny_dir) + ["--resume"]) == 2
    assert "--resume needs --out" in error_line(capsys)
    typo = tmp_path / "rnu"
    assert main(train_args(tiny_dir, typo) + ["--resume"]) == 2
    line = error_line(capsys)
    assert f"--resume: {typo} holds no run" in line and "check --out" in line
    assert not typo.exists() and not (tmp_path / "runs").exists()


def test_resuming_a_finished_run_is_an_error(finished_run, tiny_dir, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    before = {name: (run / name).read_bytes() for name in (CONFIG, LOG, CHECKPOINT)}
    for steps in (2, 1):  # as many steps as it trained, or fewer
        assert main(train_args(tiny_dir, run, steps=steps) + ["--resume"]) == 2
        line = error_line(capsys)
        assert f"has trained 2 generator steps and would stop at {steps}" in line
        assert "raise --epochs or --max-steps" in line
    assert {name: (run / name).read_bytes() for name in before} == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_one_line_error(finished_run, tiny_dir, tmp_path, capsys):
    for name in ("generate", "evaluate"):
        args = command(name, finished_run, tmp_path)
        assert main(args + ["--device", "cuda"]) == 2
        assert "no CUDA device is available" in error_line(capsys)
    out = tmp_path / "sync"
    assert main(train_args(tiny_dir, out) + ["--sync-bn"]) == 2
    assert "--sync-bn needs --device cuda" in error_line(capsys)
    assert not out.exists()  # refused before the run directory was touched


def test_bgan_trains_with_fresh_batches_and_the_d_penalty(tiny_dir, tmp_path):
    # The authors' PyTorch set-up: a fresh batch and draw for the G step, D's penalty.
    out = tmp_path / "b"
    args = train_args(tiny_dir, out, preset="mlp-bgan")
    assert main(args + ["--batches", "fresh", "--d-penalty", "5", "--bgan-samples", "3"]) == 0
    record = json.loads((out / LOG).read_text().splitlines()[-1])
    assert record["d_penalty"] > 0 and 1 <= record["effective_samples"] <= 3


def test_experiments_worker_counts_a_fully_trained_checkpoint_as_done(finished_run, tmp_path):
    """A run killed after its last checkpoint but before it was recorded as finished."""
    from examples.binarygan.experiments import _train_worker

    run = copy_run(finished_run, tmp_path / "run")
    config = json.loads((run / CONFIG).read_text())
    before = (run / LOG).read_text()
    summary = _train_worker(config, str(run))
    assert summary["steps"] == 2 and (run / LOG).read_text() == before


def test_resume_and_overwrite_exclude_each_other(finished_run, tiny_dir, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    before = {name: (run / name).read_bytes() for name in (CONFIG, LOG, CHECKPOINT)}
    for out in (run, tmp_path / "new"):
        assert main(train_args(tiny_dir, out, steps=4) + ["--resume", "--overwrite"]) == 2
        assert "--resume and --overwrite exclude each other" in error_line(capsys)
    assert {name: (run / name).read_bytes() for name in before} == before
    assert not (tmp_path / "new").exists()


def test_resumed_run_keeps_the_log_up_to_its_checkpoint(tiny_dir, tmp_path, capsys):
    """A run killed after logging past its last checkpoint (the checkpoint is written after
    the log, atomically): the resumed run drops those records and any line cut short, then
    logs those steps again, with the values they had."""
    out = tmp_path / "run"
    assert main(train_args(tiny_dir, out, steps=2)) == 0
    at_two = (out / CHECKPOINT).read_bytes()
    assert main(train_args(tiny_dir, out, steps=4) + ["--resume"]) == 0
    whole = [json.loads(line) for line in (out / LOG).read_text().splitlines()]
    assert [r["step"] for r in whole] == [1, 2, 3, 4]
    # "killed" after logging steps 3 and 4 and half of 5, before checkpoint 4 replaced 2's
    (out / CHECKPOINT).write_bytes(at_two)
    with open(out / LOG, "a") as log:
        log.write('{"step": 5, "d_lo')
    capsys.readouterr()
    assert main(train_args(tiny_dir, out, steps=4) + ["--resume"]) == 0
    printed = capsys.readouterr().out
    assert "resuming" in printed and "at generator step 2" in printed
    assert "dropped 3 record(s) written after the checkpoint at step 2" in printed
    resumed = [json.loads(line) for line in (out / LOG).read_text().splitlines()]
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    for key in ("d_loss", "g_loss", "slope", "d_steps"):  # bit for bit on the CPU
        assert [r[key] for r in resumed] == [r[key] for r in whole], key
    assert load_checkpoint(out)["g_step"] == 4


# ---- from another working directory -----------------------------------------------------------


def run_path_form(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python /abs/path/examples/binarygan ARGS`` in ``cwd``, without PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, str(REPO / "examples" / "binarygan"), *args],
                          cwd=cwd, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=300, check=False)


def test_runs_as_a_path_from_another_directory(tmp_path):
    result = run_path_form("train", "--preset", "mlp-gan-dbn", "--dry-run", "--threads", "1",
                           cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "dry run: " in result.stdout and "mlp-gan-dbn: G " in result.stdout
    assert list(tmp_path.iterdir()) == []  # a dry run writes nothing


def test_default_run_directory_is_under_the_cwd(tiny_dir, tmp_path, capsys, monkeypatch):
    existed = (REPO / "runs" / PRESET).exists()
    result = run_path_form(*train_args(tiny_dir, steps=2), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run = tmp_path / "runs" / PRESET
    assert load_checkpoint(run)["g_step"] == 2 and log_steps(run) == [1, 2]
    assert f"outputs in runs/{PRESET}/" in result.stdout
    assert (REPO / "runs" / PRESET).exists() == existed  # not in the repository
    # the relative path works for the other commands too
    monkeypatch.chdir(tmp_path)
    assert main(["generate", f"runs/{PRESET}", "--num", "4", "--out", "s.npy"]) == 0
    assert np.load(tmp_path / "s.npy").shape == (4, 28, 28)
    # and a second train into the default directory is refused
    assert main(train_args(tiny_dir, steps=2)) == 2
    assert f"runs/{PRESET} already holds a run" in error_line(capsys)


def test_under_make_demo_the_message_names_demo_flags(tiny_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert main(train_args(tiny_dir, out, steps=1)) == 0
    capsys.readouterr()
    monkeypatch.setenv("BINARYGAN_FLAGS_VARIABLE", "DEMO_FLAGS")  # what `make demo` sets
    assert main(train_args(tiny_dir, out, steps=1)) == 2
    line = error_line(capsys)
    assert "DEMO_FLAGS=--resume" in line and "DEMO_FLAGS=--overwrite" in line


def test_a_preset_typo_is_one_line_with_the_closest_names(capsys):
    assert main(["train", "--preset", "mlp-wgan-sb", "--dry-run"]) == 2
    line = error_line(capsys)
    assert "unknown preset 'mlp-wgan-sb'; did you mean mlp-wgan-sbn" in line
