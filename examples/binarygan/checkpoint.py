"""A run directory and what is in it: the config, the log, the checkpoint.

A run directory holds ``config.json`` (the settings), ``log.jsonl`` (one JSON record per
``log_every`` generator steps), ``checkpoint.pt`` (everything needed to continue bit for bit)
and the figures. This module is the only code that reads or writes the first three, so every
command meets a bad file the same way: a :class:`RunError` whose one-line message says what is
wrong and what to do (the command line prints it and exits with status 2).

Checkpoints are written atomically (a temporary file in the same directory, flushed to disk,
then renamed over the old one): a run killed at any moment leaves the previous checkpoint
intact. They hold tensors and plain Python values only and are read with
``torch.load(weights_only=True)``, so loading a file cannot run code.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any, Union

import torch

from .config import RESUMABLE, Config

__all__ = ["RunError", "CHECKPOINT", "CONFIG", "LOG", "atomic_save", "load_checkpoint",
           "read_run_config", "check_resume", "prepare_run_dir", "start_log"]

PathLike = Union[str, Path]

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
LOG = "log.jsonl"
FORMAT = "binarygan-checkpoint/2"
# What a run writes besides the three files above (removed by --overwrite, with them).
FIGURES = ("samples", "samples.png", "probabilities.png", "histogram.png", "histogram.json",
           "losses.png")


class RunError(RuntimeError):
    """A run directory, checkpoint or setting that a command cannot use; one-line message."""


def atomic_save(obj: Any, path: PathLike) -> None:
    """``torch.save`` to a temporary file next to ``path``, flushed to disk, then renamed over
    ``path``: readers see the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_checkpoint(run_dir: PathLike) -> dict:
    """The checkpoint of the run in ``run_dir``, on the CPU; :class:`RunError` if it is missing,
    empty, truncated, corrupt or not a checkpoint of this example."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise RunError(f"{run_dir}: no {CHECKPOINT} (not a run directory, or its run has not "
                       "reached its first checkpoint); check the path")
    if path.stat().st_size == 0:
        raise RunError(f"{path} is empty (0 bytes), so the run cannot be read; train it again "
                       "with --overwrite")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Weights only load failed" not in str(error):
            raise RunError(f"{path} is truncated or corrupt (not a torch checkpoint); train the "
                           "run again with --overwrite, or restore the file from a copy") from None
        raise RunError(f"{path} is not a checkpoint of this example (an older version's or "
                       "another program's file); train the run again with --overwrite") from None
    except Exception as error:  # torch raises RuntimeError, EOFError, ...
        cause = (str(error).strip().splitlines() or [type(error).__name__])[0].split(". ")[0]
        raise RunError(f"{path} is truncated or corrupt ({cause}); train the run again with "
                       "--overwrite, or restore the file from a copy") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise RunError(f"{path} is not a checkpoint of this example (expected format {FORMAT}); "
                       "check the path")
    return state


def read_run_config(run_dir: PathLike) -> Config:
    """The settings of the run in ``run_dir`` (its ``config.json``)."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise RunError(f"{run_dir}: not a run directory (no {CONFIG}); check the path")
    try:
        values = json.loads(path.read_text())
        if not isinstance(values, dict):
            raise ValueError(f"a JSON {type(values).__name__}, not an object")
        return Config.from_dict(values)
    except (ValueError, TypeError) as error:  # JSONDecodeError is a ValueError
        cause = (str(error).splitlines() or [type(error).__name__])[0]
        raise RunError(f"{path} is not a valid run configuration ({cause})") from None


def check_resume(saved: Config, config: Config, run_dir: PathLike) -> None:
    """A resumed run may change only the settings in :data:`~.config.RESUMABLE`."""
    new, old = config.to_dict(), saved.to_dict()
    changed = sorted(key for key in new if key not in RESUMABLE and new[key] != old[key])
    if changed:
        listed = ", ".join(f"{key} ({old[key]!r} -> {new[key]!r})" for key in changed)
        raise RunError(f"cannot resume {run_dir} with changed settings: {listed}; only "
                       f"{', '.join(sorted(RESUMABLE))} may change")


def _flag(flag: str) -> str:
    """How to pass ``flag``: on the command line, or, under a make target that forwards its
    flags in a variable (``make demo`` sets ``BINARYGAN_FLAGS_VARIABLE=DEMO_FLAGS``), as that
    variable."""
    variable = os.environ.get("BINARYGAN_FLAGS_VARIABLE")
    return f"{variable}={flag}" if variable else flag


def prepare_run_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Check that ``out`` may be trained into.

    A directory that holds a run is refused unless ``resume`` (then its checkpoint must exist)
    or ``overwrite`` (then the run's files are deleted first).
    """
    if out.exists() and not out.is_dir():
        raise RunError(f"{out} is a file, not a run directory; check --out")
    if resume and overwrite:
        raise RunError("--resume and --overwrite exclude each other: continue the run, or "
                       "delete it and start again")
    holds_run = any((out / name).exists() for name in (CONFIG, LOG, CHECKPOINT))
    if resume:
        if not (out / CHECKPOINT).is_file():
            what = "a run without a checkpoint yet" if holds_run else "no run"
            raise RunError(f"--resume: {out} holds {what} ({CHECKPOINT} not found); check "
                           "--out, or train without --resume")
        return
    if holds_run and not overwrite:
        raise RunError(f"{out} already holds a run; pass {_flag('--resume')} to continue it, "
                       f"{_flag('--overwrite')} to replace it, or another --out")
    if holds_run:
        for name in (CONFIG, LOG, CHECKPOINT) + FIGURES:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)


def start_log(out: Path, step: int) -> tuple[list[dict], str]:
    """The log records up to generator step ``step`` (the checkpoint's), rewritten without the
    records a killed run logged after its last checkpoint; returns them and a message saying
    what was dropped ("" if nothing)."""
    path = out / LOG
    if step == 0 or not path.is_file():
        path.write_text("")
        return [], ""
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by the kill
            dropped += 1
            continue
        if record.get("step", 0) <= step:
            kept.append(record)
        else:
            dropped += 1
    path.write_text("".join(json.dumps(record) + "\n" for record in kept))
    message = (f"{LOG}: dropped {dropped} record(s) written after the checkpoint at step "
               f"{step} (they will be logged again)" if dropped else "")
    return kept, message
