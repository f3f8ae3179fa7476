"""Tests of the BinaryGAN example's ``evaluate`` and ``experiments`` commands."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from examples.binarygan import experiments  # noqa: E402
from examples.binarygan.__main__ import main  # noqa: E402
from examples.binarygan.config import get_preset  # noqa: E402
from examples.binarygan.report import EXPERIMENTS, claims, p_shape  # noqa: E402
from examples.binarygan.train import train  # noqa: E402
from tests.conftest import synthetic_digits, write_idx  # noqa: E402


pytestmark = [pytest.mark.example, pytest.mark.usefixtures("one_thread")]


@pytest.fixture
def tiny_dir(tmp_path) -> Path:
    """80 synthetic images with labels as MNIST-format test files."""
    directory = tmp_path / "tiny"
    directory.mkdir()
    write_idx(directory / "t10k-images-idx3-ubyte.gz", synthetic_digits(80), compress=True)
    write_idx(directory / "t10k-labels-idx1-ubyte", np.arange(80, dtype=np.uint8) % 10)
    return directory


@pytest.fixture
def cache(tmp_path) -> str:
    return str(tmp_path / "cache")


@pytest.fixture
def tiny_run(tiny_dir, tmp_path) -> Path:
    out = tmp_path / "run"
    config = get_preset("mlp-wgangp-sbn").replace(
        data_dir=str(tiny_dir), batch_size=16, n_critic=1, n_critic_warmup=1, warmup_steps=0,
        max_steps=2, num_samples_hist=16, threads=1)
    train(config, out, progress=False)
    return out


def one_line_errors(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()


# ---- evaluate --------------------------------------------------------------------------------


def test_evaluate_run_dir(tiny_run, tmp_path, cache, capsys):
    out = tmp_path / "metrics.json"
    assert main(["evaluate", str(tiny_run), "--num", "50", "--out", str(out),
                 "--cache-dir", cache]) == 0
    result = json.loads(out.read_text())
    assert result["num_samples"] == 50 and result["source"]["g_step"] == 2
    assert result["source"]["preset"] == "mlp-wgangp-sbn"
    hist = result["preactivation_histogram"]
    assert hist["count"] == 50 * 784 and len(hist["density"]) == 50
    assert {"first_bin_density", "last_bin_density"} <= hist.keys()
    # the run's data: 80 images, a fifth held out from the classifier
    assert result["reference"]["num_heldout"] == 16
    assert result["reference"]["num_memorisation"] == 80
    assert 0 <= result["classifier_accuracy"] <= 1
    assert result["classifier_accuracy"] == result["reference"]["classifier_accuracy"]
    printed = capsys.readouterr().out
    assert "classifier held-out accuracy" in printed and "p first/last bin density" in printed
    # the same samples as generate's (seed 0)
    assert main(["generate", str(tiny_run), "--num", "50", "--out",
                 str(tmp_path / "s.npy")]) == 0
    assert main(["evaluate", "--samples", str(tmp_path / "s.npy"), "--data-dir",
                 str(json.loads((tiny_run / "config.json").read_text())["data_dir"]),
                 "--out", str(tmp_path / "file.json"), "--cache-dir", cache]) == 0
    from_file = json.loads((tmp_path / "file.json").read_text())
    assert from_file["frechet_distance"] == pytest.approx(result["frechet_distance"])
    assert "preactivation_histogram" not in from_file
    assert from_file["reference"]["from_cache"]  # the classifier was trained once


def test_evaluate_samples_file(tiny_dir, tmp_path, cache):
    real = (synthetic_digits(40, seed=3) > 0).astype(np.uint8)
    np.save(tmp_path / "real.npy", real)
    noise = (np.random.default_rng(0).random((40, 28, 28)) < 0.2).astype(np.uint8)
    np.save(tmp_path / "noise.npy", noise)
    scores = {}
    for name in ("real", "noise"):
        out = tmp_path / f"{name}.json"
        assert main(["evaluate", "--samples", str(tmp_path / f"{name}.npy"), "--data-dir",
                     str(tiny_dir), "--out", str(out), "--cache-dir", cache]) == 0
        scores[name] = json.loads(out.read_text())
    assert scores["real"]["isolated_pixel_rate"] == 0
    assert scores["noise"]["isolated_pixel_rate"] > 0.1
    assert scores["real"]["ink_density"]["mean"] == pytest.approx(real.mean())
    assert scores["real"]["source"] == {"samples": str(tmp_path / "real.npy")}


def test_evaluate_errors(tiny_run, tmp_path, capsys):
    bad = tmp_path / "bad.npy"
    bad.write_text("not numpy")
    grey = tmp_path / "grey.npy"
    np.save(grey, np.full((3, 28, 28), 0.5))
    shape = tmp_path / "shape.npy"
    np.save(shape, np.zeros((3, 5, 5), np.uint8))
    out = ["--out", str(tmp_path / "m.json")]
    assert main(["evaluate", "--samples", str(tmp_path / "missing.npy"), *out]) == 2
    assert main(["evaluate", "--samples", str(bad), *out]) == 2
    assert main(["evaluate", "--samples", str(grey), *out]) == 2
    assert main(["evaluate", "--samples", str(shape), *out]) == 2
    assert main(["evaluate", str(tmp_path / "no-run"), *out]) == 2
    assert main(["evaluate", str(tiny_run), "--data-dir", str(tmp_path / "no-data"), *out]) == 2
    (tiny_run / "checkpoint.pt").unlink()
    assert main(["evaluate", str(tiny_run), *out]) == 2
    lines = one_line_errors(capsys)
    assert len(lines) == 7 and all(line.startswith("error: ") for line in lines)
    assert "no such samples file" in lines[0] and "not a .npy file" in lines[1]
    assert "not binary" in lines[2] and "(N, 28, 28)" in lines[3]
    assert "not a run directory" in lines[4] and "no such data directory" in lines[5]
    assert "no checkpoint" in lines[6]
    assert not (tmp_path / "m.json").exists()


# ---- experiments -----------------------------------------------------------------------------


def test_experiments_smoke(tiny_dir, tmp_path, cache, capsys):
    out = tmp_path / "exp"
    args = ["experiments", "--budget", "smoke", "--data-dir", str(tiny_dir), "--out", str(out),
            "--jobs", "1", "--cache-dir", cache]
    assert main(args) == 0
    for name in ("results.md", "results.json", "results.csv", "samples.png", "histograms.png"):
        assert (out / name).is_file(), name
    report = json.loads((out / "results.json").read_text())
    presets = {p for _, runs in EXPERIMENTS.values() for p in runs}
    assert {row["run"] for row in report["rows"]} == presets  # each run trained once
    assert [c["id"] for c in report["claims"]] == ["1", "2", "3", "4"]
    assert all(c["verdict"] and c["numbers"] for c in report["claims"])
    markdown = (out / "results.md").read_text()
    for claim in range(1, 5):
        assert f"**Claim {claim}:" in markdown
    assert "| `mlp-bgan` | 2 |" in markdown and "smoke budget" in markdown
    # Two tables of at most 7 columns; the CSV has all 13, a row per run and the real digits.
    assert "### Sample quality" in markdown and "### Pixels and the preactivated" in markdown
    assert max(line.count("|") for line in markdown.splitlines()) == 8
    table = list(csv.reader((out / "results.csv").open()))
    assert table[0][:4] == ["run", "G steps", "train s", "FD"]
    assert table[0][-1] == "p in [0.1, 0.9)"
    assert len(table) == 1 + len(presets) + 1 and all(len(row) == 13 for row in table)
    assert {row[0] for row in table[1:]} == presets | {"real (held out)"}
    assert "evaluated on 64 samples" in markdown and report["num_samples"] == 64
    assert report["errors"] == {} and report["bgan"] is not None
    for preset in presets:
        metrics = json.loads((out / "runs" / preset / "metrics.json").read_text())
        assert metrics["preactivation_histogram"]["count"] == 64 * 784
    # A second call trains and evaluates nothing again.
    capsys.readouterr()
    stamp = (out / "runs" / "mlp-gan-sbn" / "checkpoint.pt").stat().st_mtime_ns
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert printed.count("trained already") == len(presets)
    assert printed.count("evaluated already") == len(presets)
    assert (out / "runs" / "mlp-gan-sbn" / "checkpoint.pt").stat().st_mtime_ns == stamp
    again = json.loads((out / "results.json").read_text())
    assert again["rows"] == report["rows"] and len(again["invocations"]) == 2
    assert again["invocations"][1]["trained"] == []
    assert "over 2 invocation(s)" in (out / "results.md").read_text()


def test_experiments_in_worker_processes(tiny_dir, tmp_path, cache, monkeypatch):
    """--jobs 2 trains in spawned worker processes; claims without their runs say so."""
    smoke = experiments.BUDGETS["smoke"]
    monkeypatch.setitem(experiments.BUDGETS, "smoke", {
        **smoke, "steps": {"mlp-wgangp-sbn": 2, "mlp-bgan": 2}})
    report = experiments.run_experiments(tmp_path / "exp", "smoke", str(tiny_dir), jobs=2,
                                         cache_dir=cache)
    assert [row["run"] for row in report["rows"]] == ["mlp-wgangp-sbn", "mlp-bgan"]
    assert all(c["verdict"] == "inconclusive" and c["reason"].startswith("no results for")
               for c in report["claims"])
    assert (tmp_path / "exp" / "runs" / "mlp-bgan" / "train.txt").read_text().count("done:") == 1


def _metrics(density: list[float], fd: float = 10.0, kl: float = 0.02, entropy: float = 2.2,
             isolated: float = 0.05) -> dict:
    density = np.asarray(density, float)
    density = density * 50 / density.sum()  # integrates to 1 over 50 bins
    return {"frechet_distance": fd, "isolated_pixel_rate": isolated,
            "class_coverage": {"kl_to_real": kl, "entropy": entropy},
            "preactivation_histogram": {"density": density.tolist()},
            "real": {"isolated_pixel_rate": 0.001}}


def test_claims_follow_the_numbers():
    u_shape = [30] + [1] * 48 + [20]
    flat_notched = [2] + [5] * 22 + [3, 1, 1, 3] + [5] * 22 + [1]
    results = {
        "mlp-wgangp-dbn": _metrics(flat_notched, fd=10.0),
        "mlp-wgangp-sbn": _metrics([10] + [2] * 48 + [8], fd=11.0),
        "mlp-wgangp-real": _metrics(u_shape, fd=12.0),
        "mlp-gan-sbn": _metrics(u_shape, fd=30.0, kl=0.9, entropy=1.0),
        "mlp-wgan-sbn": _metrics(u_shape, fd=12.0),
        "cnn-wgangp-sbn": _metrics(u_shape, isolated=0.01),
    }
    lines = claims({p: {"metrics": m} for p, m in results.items()}, "test")
    assert [line["verdict"] for line in lines] == ["confirmed"] * 4
    # the other way round
    results["mlp-wgangp-dbn"], results["mlp-wgangp-real"] = (
        _metrics(u_shape, fd=40.0), _metrics(flat_notched))
    results["mlp-gan-sbn"] = _metrics(u_shape, fd=11.0)
    results["cnn-wgangp-sbn"] = _metrics(u_shape, isolated=0.2)
    lines = claims({p: {"metrics": m} for p, m in results.items()}, "test")
    assert [line["verdict"] for line in lines[:2]] + [lines[3]["verdict"]] == ["refuted"] * 3
    assert lines[2]["verdict"] == "partly confirmed"  # WGAN similar, no collapse
    shape = p_shape(_metrics(flat_notched))
    assert shape["notch"] < 1 and shape["middle"] > 0.8
    u = p_shape(_metrics(u_shape))
    assert u["first"] == pytest.approx(30 / 98) and u["last"] == pytest.approx(20 / 98)
    assert u["edges"] == pytest.approx(50 / 98) and u["middle"] == pytest.approx(40 / 98)


def test_claim_4_compares_artifacts_at_equal_steps():
    """The CNN's artifacts are judged whatever its FD; runs of unequal length get no verdict."""
    results = {"mlp-wgangp-sbn": _metrics([1] * 50, fd=10.0, isolated=0.05),
               "cnn-wgangp-sbn": _metrics([1] * 50, fd=200.0, isolated=0.01)}
    runs = {p: {"metrics": m, "train": {"steps": 1000}} for p, m in results.items()}
    assert claims(runs, "test")[3]["verdict"] == "confirmed"
    runs["cnn-wgangp-sbn"]["metrics"] = _metrics([1] * 50, fd=200.0, isolated=0.1)
    assert claims(runs, "test")[3]["verdict"] == "refuted"
    runs["cnn-wgangp-sbn"]["train"]["steps"] = 400
    line = claims(runs, "test")[3]
    assert line["verdict"] == "inconclusive" and "different numbers of steps" in line["reason"]


def test_budgets():
    """Every run of a budget trains the same number of generator steps: quick caps each at
    QUICK_STEPS, paper trains 20 epochs; both cover every run of the experiments."""
    presets = {p for _, runs in EXPERIMENTS.values() for p in runs}
    quick, paper = experiments.BUDGETS["quick"], experiments.BUDGETS["paper"]
    assert set(quick["steps"]) == set(paper["steps"]) == presets
    assert set(quick["steps"].values()) == {experiments.QUICK_STEPS}
    assert set(paper["steps"].values()) == {None}
    configs = experiments.run_configs("quick", "/data")
    assert {c.max_steps for c in configs.values()} == {experiments.QUICK_STEPS}
    assert all(c.data_dir == "/data" and c.threads == 1 for c in configs.values())
    with pytest.raises(ValueError, match="unknown budget"):
        experiments.run_experiments(Path("unused"), "fast")
